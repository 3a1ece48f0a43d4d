"""PostgreSQL storage, for many server instances sharing one database.

The cursor invariant holds as on SQLite: every write to a session first locks the session's
row (the operations' ``SELECT ... FOR UPDATE``), so writes to one session are serialised and
take their change sequence numbers in commit order. Each such transaction also sends
``NOTIFY pollchat, <session> <head>`` (the operations' ``HeadMoved``), which PostgreSQL delivers
on commit to every instance's listening connection; those wake their parked long polls. A
notification is only a hint: pollers then read the table.

Token changes go out the same way on their own channel, ``NOTIFY pollchat_tokens, <user id>``,
so every instance drops that user's remembered tokens as soon as the change commits. After the
listening connection reconnects, notifications may have been lost: every listener hears ``"*"``
(sessions) and ``None`` (tokens) and forgets what it cached.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from pollchat.domain.errors import Unavailable
from pollchat.storage.command import (
    Command,
    Fetch,
    HeadMoved,
    Lock,
    Operation,
    Statement,
    TokenChanged,
    drive_async,
)
from pollchat.storage.failure import closed, outages_unavailable
from pollchat.storage.schema import MIGRATIONS
from pollchat.storage.sql import SQLStorage

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHANNEL = "pollchat"
TOKEN_CHANNEL = "pollchat_tokens"
_NOTIFY = "SELECT pg_notify($1, $2)"

# What a lost or refused database connection raises (PostgreSQL restarting or down, the link
# cut, a connection killed under a query): ``failure.outages_unavailable`` answers them 503.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, backend terminated
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    asyncpg.InterfaceError,  # the connection or the pool is closed
    asyncpg.InternalClientError,  # the protocol state of a connection the server just dropped
)
_PLACEHOLDER = re.compile(r"\?")


def is_connection_loss(exc: BaseException) -> bool:
    """Whether a failure means the database cannot answer now (``failure.outages_unavailable``)."""
    return isinstance(exc, _CONNECTION_ERRORS)


@functools.lru_cache(maxsize=512)
def postgres_sql(sql: str) -> str:
    """An operation's SQL for asyncpg: its ``?`` placeholders numbered ``$1, $2, ...``.

    The operations' SQL has no ``?`` inside a string literal, so every one is a placeholder.
    """
    numbers = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _match: f"${next(numbers)}", sql)


def _set_event(event: asyncio.Event, *_args: object) -> None:
    event.set()


class PostgresStorage(SQLStorage):
    """The scale-out backend: a connection pool plus one listening connection.

    ``on_change`` hears every change committed by any instance, this one's included;
    ``on_token_change`` hears this instance's own changes right after their commit, other
    instances' as their notification arrives, and ``None`` after the listener (re)connected.
    """

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10) -> None:
        super().__init__()
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    # lifecycle

    async def open(self) -> None:
        """Connect the pool, bring the schema up to date, start listening."""
        try:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=self._min_size, max_size=self._max_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise Unavailable(f"cannot connect to PostgreSQL: {exc}", code="storage_unavailable") from exc
        with outages_unavailable(is_connection_loss):
            await self._migrate()
        self._listen_task = asyncio.create_task(self._listen(), name="pollchat-pg-listen")

    async def close(self) -> None:
        """Stop listening and close the pool."""
        if self._listen_task is not None:
            self._listen_task.cancel()
            try:
                await self._listen_task
            except asyncio.CancelledError:
                pass
            self._listen_task = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _listen(self) -> None:
        # The listening connection reconnects by itself. After a reconnect every listener is
        # told "*": notifications may have been lost meanwhile, so every parked poll re-reads.
        delay = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(functools.partial(_set_event, lost))
                await conn.add_listener(CHANNEL, self._notified)
                await conn.add_listener(TOKEN_CHANNEL, self._token_notified)
                self._listening.set()
                self._fan_out("*")
                self._tokens_changed([None])
                delay = 0.2
                while not lost.is_set():
                    try:
                        async with asyncio.timeout(5):
                            await lost.wait()
                    except TimeoutError:
                        await conn.execute("SELECT 1")  # notices a dead connection
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("PostgreSQL listener lost (%s); reconnecting in %.1f s", exc, delay)
            finally:
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        session_id, _, head = payload.partition(" ")
        self._fan_out(session_id, int(head) if head.isascii() and head.isdigit() else None)

    def _token_notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._tokens_changed([payload])

    @property
    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise closed()
        return self._pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._p.acquire() as conn, conn.transaction():
            yield conn

    async def _migrate(self) -> None:
        async with self._transaction() as conn:
            # One migrator at a time across instances starting together.
            await conn.execute("SELECT pg_advisory_xact_lock(7355608)")
            await conn.execute("CREATE TABLE IF NOT EXISTS pollchat_schema (version INTEGER NOT NULL)")
            version = await conn.fetchval("SELECT version FROM pollchat_schema")
            if version is None:
                await conn.execute("INSERT INTO pollchat_schema (version) VALUES (0)")
                version = 0
            for step, script in enumerate(MIGRATIONS[version:], start=version):
                await conn.execute(script)
                await conn.execute("UPDATE pollchat_schema SET version = $1", step + 1)

    # the driver

    def _is_outage(self, exc: BaseException) -> bool:
        return is_connection_loss(exc)

    async def _run_read(self, operation: Operation[T]) -> T:
        async with self._p.acquire() as conn:
            return await drive_async(operation, functools.partial(_run, conn, tokens=None))

    async def _run_write(self, operation: Operation[T], *, weight: int) -> tuple[T, list[TokenChanged]]:
        tokens: list[TokenChanged] = []
        async with self._transaction() as conn:
            value = await drive_async(operation, functools.partial(_run, conn, tokens=tokens))
        return value, tokens


async def _run(conn: asyncpg.Connection, command: Command, *, tokens: list[TokenChanged] | None) -> Any:
    """Carry out one command of an operation on ``conn`` (in its transaction, for a write)."""
    if type(command) is Statement:
        sql = postgres_sql(command.sql)
        if command.fetch is Fetch.ONE:
            return await conn.fetchrow(sql, *command.params)
        if command.fetch is Fetch.ALL:
            return await conn.fetch(sql, *command.params)
        status: str = await conn.execute(sql, *command.params)
        # The command tag ends with the number of rows: "INSERT 0 1", "UPDATE 3".
        return int(status.rpartition(" ")[2]) if command.fetch is Fetch.COUNT else None
    if tokens is None:
        raise TypeError(f"a read yielded {command!r}")
    # Notifications are delivered on commit, to every instance (this one included: for a token
    # change a second, harmless forget). Session ids hold no spaces, so "<session> <head>" parses back.
    if type(command) is HeadMoved:
        await conn.execute(_NOTIFY, CHANNEL, f"{command.session_id} {command.head}")
    elif type(command) is TokenChanged:
        await conn.execute(_NOTIFY, TOKEN_CHANNEL, command.user_id)
        tokens.append(command)
    elif type(command) is Lock:
        # Share row exclusive: conflicts with itself and every write, not with reads.
        await conn.execute(f"LOCK TABLE {command.table} IN SHARE ROW EXCLUSIVE MODE")
    return None
