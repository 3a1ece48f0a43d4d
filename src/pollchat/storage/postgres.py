"""PostgreSQL storage, for many server instances sharing one database.

The cursor invariant holds as on SQLite: every write to a session first locks the session's
row (``SELECT ... FOR UPDATE``), so writes to one session are serialised and take their change
sequence numbers in commit order. Each such transaction also sends ``NOTIFY pollchat, <session>``,
which PostgreSQL delivers on commit to every instance's listening connection; those wake their
parked long polls. A notification is only a hint: pollers then read the table.

Token changes go out the same way on their own channel, ``NOTIFY pollchat_tokens, <user id>``,
so every instance drops that user's remembered tokens as soon as the change commits. After the
listening connection reconnects, notifications may have been lost: every listener hears ``"*"``
(sessions) and ``None`` (tokens) and forgets what it cached.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from pollchat.clock import isoformat, parse_iso
from pollchat.domain.errors import Conflict, NotFound, Unavailable
from pollchat.domain.records import Appended, Message, MessageType, NewMessage, Page, Role, Session, User
from pollchat.domain.rules import is_replay, may_see_session
from pollchat.ids import new_message_id, new_user_id
from pollchat.storage.failure import closed, unavailable_on
from pollchat.storage.rows import MESSAGE_COLUMNS, SESSION_COLUMNS, USER_COLUMNS, message_of, session_of, user_of
from pollchat.storage.schema import MIGRATIONS

logger = logging.getLogger(__name__)

CHANNEL = "pollchat"
TOKEN_CHANNEL = "pollchat_tokens"
ChangeListener = Callable[[str, "int | None"], None]
TokenListener = Callable[["str | None"], None]

# What a lost or refused database connection raises (PostgreSQL restarting or down, the link
# cut, a connection killed under a query): ``failure.unavailable_on`` answers them 503.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, backend terminated
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    asyncpg.InterfaceError,  # the connection or the pool is closed
    asyncpg.InternalClientError,  # the protocol state of a connection the server just dropped
)


def _is_connection_loss(exc: BaseException) -> bool:
    return isinstance(exc, _CONNECTION_ERRORS)


_unavailable_on_connection_loss = unavailable_on(_is_connection_loss)


def _set_event(event: asyncio.Event, *_args: object) -> None:
    event.set()


class PostgresStorage:
    """The scale-out backend: a connection pool plus one listening connection."""

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._listeners: list[ChangeListener] = []
        self._token_listeners: list[TokenListener] = []
        self._listen_task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._secret: bytes | None = None

    # lifecycle

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=self._min_size, max_size=self._max_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise Unavailable(f"cannot connect to PostgreSQL: {exc}", code="storage_unavailable") from exc
        await self._migrate()
        self._listen_task = asyncio.create_task(self._listen(), name="pollchat-pg-listen")

    async def close(self) -> None:
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

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(session_id)`` for every change committed by any instance."""
        self._listeners.append(listener)

    def on_token_change(self, listener: TokenListener) -> None:
        """Call ``listener(user_id)`` for every token change committed by any instance.

        This instance's own changes are announced right after their commit, other instances'
        as their notification arrives, and ``None`` after the listener (re)connected.
        """
        self._token_listeners.append(listener)

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

    @staticmethod
    async def _notify(conn: asyncpg.Connection, session_id: str, head: int) -> None:
        # Delivered on commit. Session ids hold no spaces, so "<session> <head>" parses back.
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{session_id} {head}")

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        session_id, _, head = payload.partition(" ")
        self._fan_out(session_id, int(head) if head.isascii() and head.isdigit() else None)

    def _fan_out(self, session_id: str, head: int | None = None) -> None:
        for listener in self._listeners:
            listener(session_id, head)

    @staticmethod
    async def _notify_tokens(conn: asyncpg.Connection, user_ids: Sequence[str]) -> None:
        # Delivered on commit, to every instance (this one included: a second, harmless forget).
        for user_id in user_ids:
            await conn.execute("SELECT pg_notify($1, $2)", TOKEN_CHANNEL, user_id)

    def _token_notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._tokens_changed([payload])

    def _tokens_changed(self, user_ids: Sequence[str | None]) -> None:
        for user_id in user_ids:
            for listener in self._token_listeners:
                listener(user_id)

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

    @_unavailable_on_connection_loss
    async def ping(self) -> None:
        await self._p.fetchval("SELECT 1")

    @_unavailable_on_connection_loss
    async def server_secret(self) -> bytes:
        if self._secret is None:
            async with self._transaction() as conn:
                # Insert if absent, then read: a racing instance's insert waits for ours to
                # commit (or ours for its), and the read then sees the one that won.
                await conn.execute(
                    "INSERT INTO server_secrets (name, value) VALUES ('server', $1) ON CONFLICT (name) DO NOTHING",
                    secrets.token_hex(32),
                )
                value = await conn.fetchval("SELECT value FROM server_secrets WHERE name = 'server'")
            self._secret = bytes.fromhex(value)
        return self._secret

    # users

    @_unavailable_on_connection_loss
    async def create_user(self, *, name: str, role: Role, token_hash: str, now: datetime) -> User:
        user = User(id=new_user_id(), name=name, role=role, created_at=now)
        try:
            await self._p.execute(
                "INSERT INTO users (id, name, role, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
                user.id,
                name,
                role,
                token_hash,
                isoformat(now),
            )
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"a user named {name!r} exists", code="user_exists") from exc
        return user

    @_unavailable_on_connection_loss
    async def put_user(self, *, name: str, role: Role, token_hash: str, now: datetime) -> User:
        async with self._transaction() as conn:
            await conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
            row = await conn.fetchrow("SELECT id, name, role, created_at, token_hash FROM users WHERE name = $1", name)
            # A token given to another user by hand wins: the old holder loses it.
            taken = await conn.fetch(
                "UPDATE users SET token_hash = 'revoked:' || id WHERE token_hash = $1 AND name != $2 RETURNING id",
                token_hash,
                name,
            )
            changed: list[str] = [r["id"] for r in taken]
            if row is None:
                user = User(id=new_user_id(), name=name, role=role, created_at=now)
                await conn.execute(
                    "INSERT INTO users (id, name, role, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
                    user.id,
                    name,
                    role,
                    token_hash,
                    isoformat(now),
                )
            else:
                user = User(id=row["id"], name=row["name"], role=role, created_at=parse_iso(row["created_at"]))
                if (row["role"], row["token_hash"]) != (role, token_hash):
                    await conn.execute(
                        "UPDATE users SET role = $1, token_hash = $2 WHERE id = $3", role, token_hash, user.id
                    )
                    changed.append(user.id)
            await self._notify_tokens(conn, changed)
        self._tokens_changed(changed)
        return user

    @_unavailable_on_connection_loss
    async def rotate_token(self, user_id: str, *, token_hash: str) -> User:
        return await self._set_token(user_id, token_hash)

    @_unavailable_on_connection_loss
    async def revoke_token(self, user_id: str) -> User:
        return await self._set_token(user_id, None)

    async def _set_token(self, user_id: str, token_hash: str | None) -> User:
        """The new hash, or the revoked marker for None."""
        async with self._transaction() as conn:
            try:
                row = await conn.fetchrow(
                    f"UPDATE users SET token_hash = COALESCE($2::text, 'revoked:' || id) WHERE id = $1"
                    f" RETURNING {USER_COLUMNS}",
                    user_id,
                    token_hash,
                )
            except asyncpg.UniqueViolationError as exc:
                raise Conflict("another user holds this token", code="token_in_use") from exc
            if row is None:
                raise NotFound("no such user", code="user_not_found")
            await self._notify_tokens(conn, [user_id])
        self._tokens_changed([user_id])
        return user_of(row)

    @_unavailable_on_connection_loss
    async def user_by_token_hash(self, token_hash: str) -> User | None:
        row = await self._p.fetchrow("SELECT id, name, role, created_at FROM users WHERE token_hash = $1", token_hash)
        return user_of(row) if row else None

    @_unavailable_on_connection_loss
    async def list_users(self) -> list[User]:
        rows = await self._p.fetch("SELECT id, name, role, created_at FROM users ORDER BY created_at, id")
        return [user_of(r) for r in rows]

    @_unavailable_on_connection_loss
    async def has_admin(self) -> bool:
        return bool(await self._p.fetchval("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1"))

    # sessions

    @_unavailable_on_connection_loss
    async def create_session(
        self, *, session_id: str, owner_id: str, client_name: str | None, now: datetime
    ) -> Session:
        stamp = isoformat(now)
        row = await self._p.fetchrow(
            f"INSERT INTO sessions (id, owner_id, client_name, created_at, last_activity) VALUES ($1, $2, $3, $4, $4)"
            f" ON CONFLICT (id) DO NOTHING RETURNING {SESSION_COLUMNS}",
            session_id,
            owner_id,
            client_name,
            stamp,
        )
        if row is None:
            raise Conflict(f"session {session_id!r} exists", code="session_exists")
        return session_of(row)

    @_unavailable_on_connection_loss
    async def get_session(self, session_id: str) -> Session | None:
        row = await self._p.fetchrow(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1", session_id)
        return session_of(row) if row else None

    @_unavailable_on_connection_loss
    async def list_sessions(
        self, *, owner_id: str | None, status: str | None, inactive_before: datetime, limit: int
    ) -> list[Session]:
        where: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if owner_id is not None:
            where.append(f"owner_id = {param(owner_id)}")
        if status == "closed":
            where.append("closed = 1")
        elif status == "active":
            where.append(f"closed = 0 AND last_activity >= {param(isoformat(inactive_before))}")
        elif status == "inactive":
            where.append(f"closed = 0 AND last_activity < {param(isoformat(inactive_before))}")
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = await self._p.fetch(
            f"SELECT {SESSION_COLUMNS} FROM sessions {clause} ORDER BY last_activity DESC, id LIMIT {param(limit)}",
            *params,
        )
        return [session_of(r) for r in rows]

    @_unavailable_on_connection_loss
    async def update_session(
        self, session_id: str, *, closed: bool | None, client_name: str | None, now: datetime
    ) -> Session:
        row = await self._p.fetchrow(
            f"UPDATE sessions SET closed = COALESCE($2, closed), client_name = COALESCE($3, client_name),"
            f" last_activity = $4 WHERE id = $1 RETURNING {SESSION_COLUMNS}",
            session_id,
            None if closed is None else int(closed),
            client_name,
            isoformat(now),
        )
        if row is None:
            raise NotFound("no such session", code="session_not_found")
        return session_of(row)

    # messages

    @_unavailable_on_connection_loss
    async def append(self, items: Sequence[NewMessage], *, author: User, now: datetime) -> list[Appended]:
        stamp = isoformat(now)
        results: list[Appended] = []
        async with self._transaction() as conn:
            # A batch spanning sessions locks them all first, in one global order (sorted ids):
            # two batches naming the same sessions in different orders would otherwise deadlock.
            first: dict[str, NewMessage] = {}
            for item in items:
                first.setdefault(item.session_id, item)
            if len(first) > 1:
                for session_id in sorted(first):
                    await self._lock_session(conn, first[session_id], author, stamp)
            heads: dict[str, int] = {}
            for item in items:
                result = await self._append_one(conn, item, author, stamp)
                results.append(result)
                if result.created and result.message is not None:
                    heads[item.session_id] = max(heads.get(item.session_id, 0), result.message.change_seq)
            for session_id, head in heads.items():
                await self._notify(conn, session_id, head)
        return results

    async def _lock_session(
        self, conn: asyncpg.Connection, item: NewMessage, author: User, stamp: str
    ) -> asyncpg.Record:
        """Create the item's session if it is new, and lock its row until commit."""
        await conn.execute(
            "INSERT INTO sessions (id, owner_id, client_name, created_at, last_activity) VALUES ($1, $2, $3, $4, $4)"
            " ON CONFLICT (id) DO NOTHING",
            item.session_id,
            author.id,
            item.client_name,
            stamp,
        )
        # The row lock serialises writers of this session until commit.
        return await conn.fetchrow("SELECT owner_id, closed FROM sessions WHERE id = $1 FOR UPDATE", item.session_id)

    async def _append_one(self, conn: asyncpg.Connection, item: NewMessage, author: User, stamp: str) -> Appended:
        row = await self._lock_session(conn, item, author, stamp)
        if not may_see_session(author, row["owner_id"]):
            return Appended(None, error=NotFound("no such session", code="session_not_found"))
        # A replay is answered before the closed check: the same key always answers with the
        # first message, also when the session closed after it was stored (a lost acknowledgement).
        if item.client_message_id is not None:
            existing = await conn.fetchrow(
                f"SELECT {MESSAGE_COLUMNS} FROM messages"
                " WHERE user_id = $1 AND session_id = $2 AND client_message_id = $3",
                author.id,
                item.session_id,
                item.client_message_id,
            )
            if existing:
                stored = message_of(existing)
                if not is_replay(item, stored):
                    return Appended(
                        None,
                        error=Conflict(
                            "this client_message_id was already sent with another content or type",
                            code="idempotency_conflict",
                        ),
                    )
                return Appended(stored, created=False)
        if row["closed"]:
            return Appended(None, error=Conflict("the session is closed", code="session_closed"))
        message_id = new_message_id()
        seq = await conn.fetchval(
            "UPDATE sessions SET head = head + 1, message_count = message_count + 1, last_message_id = $2,"
            " last_activity = $3 WHERE id = $1 RETURNING head",
            item.session_id,
            message_id,
            stamp,
        )
        metadata = json.dumps(item.metadata, separators=(",", ":")) if item.metadata is not None else None
        row = await conn.fetchrow(
            f"INSERT INTO messages ({MESSAGE_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, $9, $9, NULL)"
            f" RETURNING {MESSAGE_COLUMNS}",
            message_id,
            item.session_id,
            author.id,
            item.type,
            item.content,
            stamp,
            item.client_message_id,
            metadata,
            seq,
        )
        return Appended(message_of(row), created=True)

    @_unavailable_on_connection_loss
    async def changes(self, session_id: str, *, after: int, limit: int) -> Page:
        # Head first: every row with change_seq <= head committed with it (see SQLite).
        async with self._p.acquire() as conn:
            head = await conn.fetchval("SELECT head FROM sessions WHERE id = $1", session_id) or 0
            rows = await conn.fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND change_seq > $2"
                " AND change_seq <= $3 ORDER BY change_seq LIMIT $4",
                session_id,
                after,
                head,
                limit + 1,
            )
        messages = [message_of(r) for r in rows[:limit]]
        has_more = len(rows) > limit
        return Page(messages=messages, head=head, has_more=has_more, upto=messages[-1].change_seq if has_more else head)

    @_unavailable_on_connection_loss
    async def get_message(self, message_id: str) -> Message | None:
        row = await self._p.fetchrow(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1", message_id)
        return message_of(row) if row else None

    async def _bump_each(self, conn: asyncpg.Connection, session_id: str, ids: Sequence[str], sets: str) -> int:
        head: int = await conn.fetchval("SELECT head FROM sessions WHERE id = $1 FOR UPDATE", session_id) or 0
        for message_id in ids:
            head += 1
            await conn.execute(f"UPDATE messages SET {sets}, change_seq = $2 WHERE id = $1", message_id, head)
        if ids:
            await conn.execute("UPDATE sessions SET head = $2 WHERE id = $1", session_id, head)
            await self._notify(conn, session_id, head)
        return head

    @_unavailable_on_connection_loss
    async def mark_delivered(self, session_id: str, message_ids: Sequence[str], *, now: datetime) -> int:
        async with self._transaction() as conn:
            await conn.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
            rows = await conn.fetch(
                "SELECT id FROM messages WHERE session_id = $1 AND id = ANY($2::text[]) AND delivered = 0",
                session_id,
                list(message_ids),
            )
            pending = {r["id"] for r in rows}
            return await self._bump_each(conn, session_id, [m for m in message_ids if m in pending], "delivered = 1")

    @_unavailable_on_connection_loss
    async def mark_read(self, session_id: str, *, message_type: MessageType, up_to_seq: int, now: datetime) -> int:
        async with self._transaction() as conn:
            await conn.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
            rows = await conn.fetch(
                "SELECT id FROM messages WHERE session_id = $1 AND type = $2 AND created_seq <= $3 AND read = 0"
                " ORDER BY created_seq",
                session_id,
                message_type,
                up_to_seq,
            )
            return await self._bump_each(conn, session_id, [r["id"] for r in rows], "read = 1, delivered = 1")

    @_unavailable_on_connection_loss
    async def edit(self, message_id: str, *, content: str, now: datetime) -> Message:
        async with self._transaction() as conn:
            session_id = await conn.fetchval("SELECT session_id FROM messages WHERE id = $1", message_id)
            if session_id is None:
                raise NotFound("no such message", code="message_not_found")
            head = await conn.fetchval("UPDATE sessions SET head = head + 1 WHERE id = $1 RETURNING head", session_id)
            row = await conn.fetchrow(
                f"UPDATE messages SET content = $2, edited_at = $3, change_seq = $4 WHERE id = $1"
                f" RETURNING {MESSAGE_COLUMNS}",
                message_id,
                content,
                isoformat(now),
                head,
            )
            await self._notify(conn, session_id, head)
        return message_of(row)

    @_unavailable_on_connection_loss
    async def pending_user_messages(self, *, since: datetime, limit: int) -> list[Message]:
        columns = ", ".join("m." + c.strip() for c in MESSAGE_COLUMNS.split(","))
        rows = await self._p.fetch(
            f"SELECT {columns} FROM messages m JOIN sessions s ON s.id = m.session_id"
            " WHERE m.delivered = 0 AND m.type = 'user' AND m.created_at >= $1 AND s.closed = 0"
            " ORDER BY m.created_at LIMIT $2",
            isoformat(since),
            limit,
        )
        return [message_of(r) for r in rows]
