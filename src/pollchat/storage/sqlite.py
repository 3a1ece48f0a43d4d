"""SQLite storage: one file, WAL, one writer connection and one reader connection.

Every write is an operation (``command.py``) run on the ``GroupWriter`` (``sqlite_writer.py``):
the writes waiting at the same moment share one ``BEGIN IMMEDIATE`` transaction, each in its own
savepoint, and one ``COMMIT`` with ``synchronous=FULL``. A write is answered only after that
commit returned, so a message is on disk before its send is acknowledged and survives
``kill -9`` (and a power cut). Operations run one after another on the writer's thread, so
writes to a session are serialised and take their change sequence numbers in commit order:
SQLite needs no row or table locks, and drops the operations' ``FOR UPDATE``. Readers use their
own connection and, through WAL, never wait for the writer.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from pollchat.storage.command import Command, Fetch, Operation, Statement, TokenChanged, drive, drive_async
from pollchat.storage.failure import closed, outages_unavailable
from pollchat.storage.schema import MIGRATIONS
from pollchat.storage.sql import SQLStorage
from pollchat.storage.sqlite_writer import GroupWriter

T = TypeVar("T")


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    path = url.removeprefix("sqlite://")
    if not path.startswith("/") or len(path) < 2:
        raise ValueError(f"not a sqlite URL with a path: {url!r}")
    return path[1:]


def _pragmas(busy_timeout: float) -> tuple[str, ...]:
    return (
        "PRAGMA journal_mode=WAL",
        # FULL, not NORMAL: in WAL mode NORMAL skips the fsync at commit, and an acknowledged
        # message could then be lost to a power cut.
        "PRAGMA synchronous=FULL",
        "PRAGMA foreign_keys=ON",
        # How long a statement waits for another process's lock (``pollchat users`` writing the
        # file) before it fails, and the caller is told to retry.
        f"PRAGMA busy_timeout={int(busy_timeout * 1000)}",
    )


# Primary result codes (the low byte of an extended one) saying the file cannot be read or
# written now: locked, busy, read-only, full, an I/O error, gone. SQLITE_ERROR (1), a statement
# the code got wrong, is not among them.
_OUTAGE_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})
# What Python and aiosqlite say about a connection closed under a statement; they give no code.
_CLOSED_MESSAGES = ("Cannot operate on a closed database.", "Connection closed", "no active connection")


def is_outage(exc: BaseException) -> bool:
    """Whether a failure means the database cannot answer now (``failure.outages_unavailable``)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _OUTAGE_CODES
        return isinstance(exc, sqlite3.OperationalError) or str(exc) in _CLOSED_MESSAGES
    return isinstance(exc, ValueError) and str(exc) in _CLOSED_MESSAGES


@functools.lru_cache(maxsize=512)
def sqlite_sql(sql: str) -> str:
    """An operation's SQL for SQLite: without row locks, which the single writer makes needless."""
    return sql.removesuffix(" FOR UPDATE")


def _set_up_writer(conn: sqlite3.Connection, pragmas: Sequence[str]) -> None:
    for pragma in pragmas:
        conn.execute(pragma)
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("PRAGMA user_version").fetchone()
        version = int(row[0]) if row else 0
        for step, script in enumerate(MIGRATIONS[version:], start=version):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _run_on_writer(conn: sqlite3.Connection, operation: Operation[T]) -> tuple[T, list[TokenChanged]]:
    """Run on the writer thread, inside the caller's savepoint: every statement of the operation."""
    tokens: list[TokenChanged] = []

    def run(command: Command) -> Any:
        if type(command) is Statement:
            cursor = conn.execute(sqlite_sql(command.sql), command.params)
            fetch = command.fetch
            if fetch is Fetch.ONE:
                return cursor.fetchone()
            if fetch is Fetch.COUNT:
                return cursor.rowcount
            return cursor.fetchall() if fetch is Fetch.ALL else None
        if type(command) is TokenChanged:
            tokens.append(command)
        # Lock and HeadMoved: nothing to do. The writer runs one operation at a time, and this
        # process's callers announce their own heads (nobody else writes this file's sessions).
        return None

    return drive(operation, run), tokens


class SQLiteStorage(SQLStorage):
    """The embedded default backend.

    One process owns the file and its callers announce their own commits, with one exception:
    a caller cancelled while its group commits never learns of its write, so it cannot announce
    it; then ``on_change`` listeners hear ``"*"`` (re-read everything), as after lost
    notifications. ``on_token_change`` hears the changes made through this object: another
    process writing the file (``pollchat users`` while a server runs) is not heard, and a
    server's remembered tokens then stay valid until their time to live runs out.
    """

    def __init__(self, path: str, *, busy_timeout: float = 10.0) -> None:
        """``busy_timeout``: seconds a statement waits for another process's lock on the file."""
        super().__init__()
        self._path = path
        self._pragmas = _pragmas(busy_timeout)
        self._writer = GroupWriter(path, on_orphan=self._orphaned)
        self._reader: aiosqlite.Connection | None = None

    @property
    def writer(self) -> GroupWriter:
        """The group-commit writer (its counters tell how many writes shared each commit)."""
        return self._writer

    async def open(self) -> None:
        """Create the file if need be, bring its schema up to date, connect the reader."""
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        with outages_unavailable(is_outage):
            await self._writer.open(functools.partial(_set_up_writer, pragmas=self._pragmas))
            try:
                self._reader = await self._connect()
            except BaseException:
                await self._writer.close()
                raise

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        for pragma in self._pragmas:
            await conn.execute(pragma)
        return conn

    async def close(self) -> None:
        """Commit what is queued, then close both connections."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
        await self._writer.close()

    def _orphaned(self) -> None:
        self._fan_out("*")
        # The orphaned write may have changed a token that nobody will announce.
        self._tokens_changed([None])

    # the driver

    def _is_outage(self, exc: BaseException) -> bool:
        return is_outage(exc)

    async def _run_write(self, operation: Operation[T], *, weight: int) -> tuple[T, list[TokenChanged]]:
        return await self._writer.run(functools.partial(_run_on_writer, operation=operation), weight=weight)

    async def _run_read(self, operation: Operation[T]) -> T:
        return await drive_async(operation, self._fetch)

    async def _fetch(self, command: Command) -> Any:
        if self._reader is None:
            raise closed()
        if type(command) is not Statement:
            raise TypeError(f"a read yielded {command!r}")
        # Each read runs its statement and fetches every row in one call on the reader's thread.
        # A statement left half-fetched (execute, then fetch as a second call) keeps the shared
        # connection's read snapshot open, and every read queued behind it would see the data as
        # of then: a woken long poll would re-read a stale, empty page and park again.
        if command.fetch is Fetch.COUNT:
            raise TypeError(f"a read yielded a write: {command.sql}")
        rows = await self._reader.execute_fetchall(sqlite_sql(command.sql), command.params)
        if command.fetch is Fetch.ONE:
            return next(iter(rows), None)
        return list(rows) if command.fetch is Fetch.ALL else None
