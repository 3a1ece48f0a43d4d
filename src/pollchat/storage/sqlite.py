"""SQLite storage: one file, WAL, one writer connection and one reader connection.

Every write is an operation on the ``GroupWriter`` (``sqlite_writer.py``): the writes waiting at
the same moment share one ``BEGIN IMMEDIATE`` transaction, each in its own savepoint, and one
``COMMIT`` with ``synchronous=FULL``. A write is answered only after that commit returned, so a
message is on disk before its send is acknowledged and survives ``kill -9`` (and a power cut).
Operations run one after another on the writer's thread, so writes to a session are serialised
and take their change sequence numbers in commit order. Readers use their own connection and,
through WAL, never wait for the writer.
"""

from __future__ import annotations

import functools
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from pollchat.clock import isoformat, parse_iso
from pollchat.domain.errors import Conflict, NotFound
from pollchat.domain.records import Appended, Message, MessageType, NewMessage, Page, Role, Session, User
from pollchat.domain.rules import is_replay, may_see_session
from pollchat.ids import new_message_id, new_user_id
from pollchat.storage.failure import closed, unavailable_on
from pollchat.storage.rows import MESSAGE_COLUMNS, SESSION_COLUMNS, USER_COLUMNS, message_of, session_of, user_of
from pollchat.storage.schema import MIGRATIONS
from pollchat.storage.sqlite_writer import GroupWriter


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
    """Whether a failure means the database cannot answer now (``failure.unavailable_on``)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _OUTAGE_CODES
        return isinstance(exc, sqlite3.OperationalError) or str(exc) in _CLOSED_MESSAGES
    return isinstance(exc, ValueError) and str(exc) in _CLOSED_MESSAGES


_unavailable_on_outage = unavailable_on(is_outage)


def _one(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> Any:
    return conn.execute(sql, tuple(params)).fetchone()


def _all(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> list[Any]:
    return conn.execute(sql, tuple(params)).fetchall()


def _set_up_writer(conn: sqlite3.Connection, pragmas: Sequence[str]) -> None:
    for pragma in pragmas:
        conn.execute(pragma)
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = _one(conn, "PRAGMA user_version")
        version = int(row[0]) if row else 0
        for step, script in enumerate(MIGRATIONS[version:], start=version):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _insert_session(
    conn: sqlite3.Connection, session_id: str, owner_id: str, client_name: str | None, now: datetime
) -> None:
    stamp = isoformat(now)
    conn.execute(
        "INSERT INTO sessions (id, owner_id, client_name, created_at, last_activity) VALUES (?, ?, ?, ?, ?)",
        (session_id, owner_id, client_name, stamp, stamp),
    )


def _bump(conn: sqlite3.Connection, session_id: str) -> int:
    # Inside the group's transaction, after every earlier operation of the group: sequence
    # numbers are handed out in the order they commit.
    row = _one(conn, "UPDATE sessions SET head = head + 1 WHERE id = ? RETURNING head", (session_id,))
    return int(row[0])


def _head(conn: sqlite3.Connection, session_id: str) -> int:
    row = _one(conn, "SELECT head FROM sessions WHERE id = ?", (session_id,))
    return int(row[0]) if row else 0


def _append_one(conn: sqlite3.Connection, item: NewMessage, author: User, stamp: str, now: datetime) -> Appended:
    row = _one(conn, "SELECT owner_id, closed FROM sessions WHERE id = ?", (item.session_id,))
    if row is None:
        _insert_session(conn, item.session_id, author.id, item.client_name, now)
    elif not may_see_session(author, row[0]):
        return Appended(None, error=NotFound("no such session", code="session_not_found"))
    # A replay is answered before the closed check: the same key always answers with the
    # first message, also when the session closed after it was stored (a lost acknowledgement).
    if item.client_message_id is not None:
        existing = _one(
            conn,
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE user_id = ? AND session_id = ? AND client_message_id = ?",
            (author.id, item.session_id, item.client_message_id),
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
    if row is not None and row[1]:
        return Appended(None, error=Conflict("the session is closed", code="session_closed"))
    message_id = new_message_id()
    # The head bump and the session's counters in one statement: a group holds the write lock
    # for the sum of its statements, so each one saved is saved for every waiting caller.
    row = _one(
        conn,
        "UPDATE sessions SET head = head + 1, message_count = message_count + 1, last_message_id = ?,"
        " last_activity = ? WHERE id = ? RETURNING head",
        (message_id, stamp, item.session_id),
    )
    seq = int(row[0])
    metadata = json.dumps(item.metadata, separators=(",", ":")) if item.metadata is not None else None
    conn.execute(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, NULL)",
        (
            message_id,
            item.session_id,
            author.id,
            item.type,
            item.content,
            stamp,
            item.client_message_id,
            metadata,
            seq,
            seq,
        ),
    )
    message = Message(
        id=message_id,
        session_id=item.session_id,
        user_id=author.id,
        type=item.type,
        content=item.content,
        timestamp=parse_iso(stamp),
        client_message_id=item.client_message_id,
        metadata=item.metadata,
        delivered=False,
        read=False,
        created_seq=seq,
        change_seq=seq,
    )
    return Appended(message, created=True)


class SQLiteStorage:
    """The embedded default backend."""

    def __init__(self, path: str, *, busy_timeout: float = 10.0) -> None:
        """``busy_timeout``: seconds a statement waits for another process's lock on the file."""
        self._path = path
        self._pragmas = _pragmas(busy_timeout)
        self._listeners: list[Callable[[str, int | None], None]] = []
        self._token_listeners: list[Callable[[str | None], None]] = []
        self._writer = GroupWriter(path, on_orphan=self._orphaned)
        self._reader: aiosqlite.Connection | None = None
        self._secret: bytes | None = None

    @property
    def writer(self) -> GroupWriter:
        """The group-commit writer (its counters tell how many writes shared each commit)."""
        return self._writer

    @_unavailable_on_outage
    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
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
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
        await self._writer.close()

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise closed()
        return self._reader

    # Each read runs its statement and fetches every row in one call on the reader's thread.
    # A statement left half-fetched (execute, then fetch as a second call) keeps the shared
    # connection's read snapshot open, and every read queued behind it would see the data as
    # of then: a woken long poll would re-read a stale, empty page and park again.

    async def _read_one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = await self._r.execute_fetchall(sql, tuple(params))
        return next(iter(rows), None)

    async def _read_all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return list(await self._r.execute_fetchall(sql, tuple(params)))

    @_unavailable_on_outage
    async def ping(self) -> None:
        await self._read_one("SELECT 1")

    @_unavailable_on_outage
    async def server_secret(self) -> bytes:
        if self._secret is None:
            candidate = secrets.token_hex(32)

            # Insert if absent, then read: another process on the file may have made it first.
            def write(conn: sqlite3.Connection) -> str:
                conn.execute(
                    "INSERT INTO server_secrets (name, value) VALUES ('server', ?) ON CONFLICT (name) DO NOTHING",
                    (candidate,),
                )
                return str(_one(conn, "SELECT value FROM server_secrets WHERE name = 'server'")[0])

            self._secret = bytes.fromhex(await self._writer.run(write))
        return self._secret

    def on_change(self, listener: Callable[[str, int | None], None]) -> None:
        """One process owns the file and its callers announce their own commits, with one exception.

        A caller cancelled while its group commits never learns of its write, so it cannot
        announce it: then listeners hear ``"*"`` (re-read everything), as after lost notifications.
        """
        self._listeners.append(listener)

    def on_token_change(self, listener: Callable[[str | None], None]) -> None:
        """Token changes made through this object, after their commit.

        Another process writing the same file (``pollchat users`` while a server runs) is not
        heard: a server's remembered tokens then stay valid until their time to live runs out.
        """
        self._token_listeners.append(listener)

    def _tokens_changed(self, user_ids: Iterable[str | None]) -> None:
        for user_id in user_ids:
            for listener in self._token_listeners:
                listener(user_id)

    def _orphaned(self) -> None:
        for listener in self._listeners:
            listener("*", None)
        # The orphaned write may have changed a token that nobody will announce.
        self._tokens_changed([None])

    # users

    @_unavailable_on_outage
    async def create_user(self, *, name: str, role: Role, token_hash: str, now: datetime) -> User:
        user = User(id=new_user_id(), name=name, role=role, created_at=now)

        def write(conn: sqlite3.Connection) -> User:
            if _one(conn, "SELECT 1 FROM users WHERE name = ?", (name,)):
                raise Conflict(f"a user named {name!r} exists", code="user_exists")
            conn.execute(
                "INSERT INTO users (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (user.id, name, role, token_hash, isoformat(now)),
            )
            return user

        return await self._writer.run(write)

    @_unavailable_on_outage
    async def put_user(self, *, name: str, role: Role, token_hash: str, now: datetime) -> User:
        def write(conn: sqlite3.Connection) -> tuple[User, list[str]]:
            row = _one(conn, "SELECT id, name, role, created_at, token_hash FROM users WHERE name = ?", (name,))
            # A token given to another user by hand wins: the old holder loses it.
            changed = [
                r[0]
                for r in _all(
                    conn,
                    "UPDATE users SET token_hash = 'revoked:' || id WHERE token_hash = ? AND name != ? RETURNING id",
                    (token_hash, name),
                )
            ]
            if row is None:
                user = User(id=new_user_id(), name=name, role=role, created_at=now)
                conn.execute(
                    "INSERT INTO users (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                    (user.id, name, role, token_hash, isoformat(now)),
                )
                return user, changed
            if (row[2], row[4]) != (role, token_hash):
                conn.execute("UPDATE users SET role = ?, token_hash = ? WHERE id = ?", (role, token_hash, row[0]))
                changed.append(row[0])
            return User(id=row[0], name=row[1], role=role, created_at=parse_iso(row[3])), changed

        user, changed = await self._writer.run(write)
        self._tokens_changed(changed)
        return user

    @_unavailable_on_outage
    async def rotate_token(self, user_id: str, *, token_hash: str) -> User:
        return await self._set_token(user_id, token_hash)

    @_unavailable_on_outage
    async def revoke_token(self, user_id: str) -> User:
        return await self._set_token(user_id, None)

    async def _set_token(self, user_id: str, token_hash: str | None) -> User:
        """The new hash, or the revoked marker for None."""

        def write(conn: sqlite3.Connection) -> User:
            if token_hash is not None and _one(
                conn, "SELECT 1 FROM users WHERE token_hash = ? AND id != ?", (token_hash, user_id)
            ):
                raise Conflict("another user holds this token", code="token_in_use")
            row = _one(
                conn,
                f"UPDATE users SET token_hash = COALESCE(?, 'revoked:' || id) WHERE id = ? RETURNING {USER_COLUMNS}",
                (token_hash, user_id),
            )
            if row is None:
                raise NotFound("no such user", code="user_not_found")
            return user_of(row)

        user = await self._writer.run(write)
        self._tokens_changed([user.id])
        return user

    @_unavailable_on_outage
    async def user_by_token_hash(self, token_hash: str) -> User | None:
        row = await self._read_one("SELECT id, name, role, created_at FROM users WHERE token_hash = ?", (token_hash,))
        return user_of(row) if row else None

    @_unavailable_on_outage
    async def list_users(self) -> list[User]:
        rows = await self._read_all("SELECT id, name, role, created_at FROM users ORDER BY created_at, id")
        return [user_of(r) for r in rows]

    @_unavailable_on_outage
    async def has_admin(self) -> bool:
        return bool(await self._read_one("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1"))

    # sessions

    @_unavailable_on_outage
    async def create_session(
        self, *, session_id: str, owner_id: str, client_name: str | None, now: datetime
    ) -> Session:
        def write(conn: sqlite3.Connection) -> Session:
            if _one(conn, "SELECT 1 FROM sessions WHERE id = ?", (session_id,)):
                raise Conflict(f"session {session_id!r} exists", code="session_exists")
            _insert_session(conn, session_id, owner_id, client_name, now)
            return session_of(_one(conn, f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)))

        return await self._writer.run(write)

    @_unavailable_on_outage
    async def get_session(self, session_id: str) -> Session | None:
        row = await self._read_one(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,))
        return session_of(row) if row else None

    @_unavailable_on_outage
    async def list_sessions(
        self, *, owner_id: str | None, status: str | None, inactive_before: datetime, limit: int
    ) -> list[Session]:
        where, params = [], []
        if owner_id is not None:
            where.append("owner_id = ?")
            params.append(owner_id)
        if status == "closed":
            where.append("closed = 1")
        elif status == "active":
            where.append("closed = 0 AND last_activity >= ?")
            params.append(isoformat(inactive_before))
        elif status == "inactive":
            where.append("closed = 0 AND last_activity < ?")
            params.append(isoformat(inactive_before))
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = await self._read_all(
            f"SELECT {SESSION_COLUMNS} FROM sessions {clause} ORDER BY last_activity DESC, id LIMIT ?",
            [*params, limit],
        )
        return [session_of(r) for r in rows]

    @_unavailable_on_outage
    async def update_session(
        self, session_id: str, *, closed: bool | None, client_name: str | None, now: datetime
    ) -> Session:
        def write(conn: sqlite3.Connection) -> Session:
            if not _one(conn, "SELECT 1 FROM sessions WHERE id = ?", (session_id,)):
                raise NotFound("no such session", code="session_not_found")
            if closed is not None:
                conn.execute("UPDATE sessions SET closed = ? WHERE id = ?", (int(closed), session_id))
            if client_name is not None:
                conn.execute("UPDATE sessions SET client_name = ? WHERE id = ?", (client_name, session_id))
            conn.execute("UPDATE sessions SET last_activity = ? WHERE id = ?", (isoformat(now), session_id))
            return session_of(_one(conn, f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)))

        return await self._writer.run(write)

    # messages

    @_unavailable_on_outage
    async def append(self, items: Sequence[NewMessage], *, author: User, now: datetime) -> list[Appended]:
        if not items:
            return []
        stamp = isoformat(now)
        batch = list(items)

        # One operation for the caller's whole batch: its items keep their order, each refusal
        # is its own ``Appended``, and the batch commits with (never apart from) its group.
        def write(conn: sqlite3.Connection) -> list[Appended]:
            return [_append_one(conn, item, author, stamp, now) for item in batch]

        return await self._writer.run(write, weight=len(batch))

    @_unavailable_on_outage
    async def changes(self, session_id: str, *, after: int, limit: int) -> Page:
        # The head is read first: every row with change_seq <= head committed with it, so
        # bounding the rows by it gives a consistent page without a read transaction.
        head_row = await self._read_one("SELECT head FROM sessions WHERE id = ?", (session_id,))
        head = int(head_row[0]) if head_row else 0
        rows = await self._read_all(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND change_seq > ? AND change_seq <= ?"
            " ORDER BY change_seq LIMIT ?",
            (session_id, after, head, limit + 1),
        )
        messages = [message_of(r) for r in rows[:limit]]
        has_more = len(rows) > limit
        return Page(messages=messages, head=head, has_more=has_more, upto=messages[-1].change_seq if has_more else head)

    @_unavailable_on_outage
    async def get_message(self, message_id: str) -> Message | None:
        row = await self._read_one(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
        return message_of(row) if row else None

    @_unavailable_on_outage
    async def mark_delivered(self, session_id: str, message_ids: Sequence[str], *, now: datetime) -> int:
        ids = list(message_ids)

        def write(conn: sqlite3.Connection) -> int:
            for message_id in ids:
                row = _one(
                    conn,
                    "SELECT 1 FROM messages WHERE id = ? AND session_id = ? AND delivered = 0",
                    (message_id, session_id),
                )
                if row:
                    seq = _bump(conn, session_id)
                    conn.execute("UPDATE messages SET delivered = 1, change_seq = ? WHERE id = ?", (seq, message_id))
            return _head(conn, session_id)

        return await self._writer.run(write, weight=len(ids))

    @_unavailable_on_outage
    async def mark_read(self, session_id: str, *, message_type: MessageType, up_to_seq: int, now: datetime) -> int:
        def write(conn: sqlite3.Connection) -> int:
            rows = _all(
                conn,
                "SELECT id FROM messages WHERE session_id = ? AND type = ? AND created_seq <= ? AND read = 0"
                " ORDER BY created_seq",
                (session_id, message_type, up_to_seq),
            )
            for (message_id,) in rows:
                seq = _bump(conn, session_id)
                conn.execute(
                    "UPDATE messages SET read = 1, delivered = 1, change_seq = ? WHERE id = ?", (seq, message_id)
                )
            return _head(conn, session_id)

        return await self._writer.run(write)

    @_unavailable_on_outage
    async def edit(self, message_id: str, *, content: str, now: datetime) -> Message:
        def write(conn: sqlite3.Connection) -> Message:
            row = _one(conn, "SELECT session_id FROM messages WHERE id = ?", (message_id,))
            if row is None:
                raise NotFound("no such message", code="message_not_found")
            seq = _bump(conn, row[0])
            conn.execute(
                "UPDATE messages SET content = ?, edited_at = ?, change_seq = ? WHERE id = ?",
                (content, isoformat(now), seq, message_id),
            )
            return message_of(_one(conn, f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)))

        return await self._writer.run(write)

    @_unavailable_on_outage
    async def pending_user_messages(self, *, since: datetime, limit: int) -> list[Message]:
        rows = await self._read_all(
            f"SELECT {', '.join('m.' + c.strip() for c in MESSAGE_COLUMNS.split(','))} FROM messages m"
            " JOIN sessions s ON s.id = m.session_id"
            " WHERE m.delivered = 0 AND m.type = 'user' AND m.created_at >= ? AND s.closed = 0"
            " ORDER BY m.created_at LIMIT ?",
            (isoformat(since), limit),
        )
        return [message_of(r) for r in rows]
