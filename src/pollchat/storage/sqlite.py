"""SQLite storage: one file, WAL, one writer connection and one reader connection.

Writes are serialised by an ``asyncio.Lock`` around ``BEGIN IMMEDIATE`` transactions with
``synchronous=FULL``, so a message is on disk before its send is acknowledged and survives
``kill -9`` (and a power cut). Readers use their own connection and, through WAL, never wait
for the writer.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from pollchat.clock import isoformat, parse_iso
from pollchat.errors import Conflict, NotFound
from pollchat.ids import new_message_id, new_user_id
from pollchat.storage.base import Appended, Message, MessageType, NewMessage, Page, Role, Session, User
from pollchat.storage.schema import MIGRATIONS

_SESSION_COLUMNS = "id, owner_id, client_name, created_at, last_activity, closed, message_count, last_message_id, head"
_MESSAGE_COLUMNS = (
    "id, session_id, user_id, type, content, created_at, client_message_id, metadata, delivered, read,"
    " created_seq, change_seq, edited_at"
)


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    path = url.removeprefix("sqlite://")
    if not path.startswith("/") or len(path) < 2:
        raise ValueError(f"not a sqlite URL with a path: {url!r}")
    return path[1:]


def _user(row: sqlite3.Row | tuple[Any, ...]) -> User:
    return User(id=row[0], name=row[1], role=row[2], created_at=parse_iso(row[3]))


def _session(row: sqlite3.Row | tuple[Any, ...]) -> Session:
    return Session(
        id=row[0],
        owner_id=row[1],
        client_name=row[2],
        created_at=parse_iso(row[3]),
        last_activity=parse_iso(row[4]),
        closed=bool(row[5]),
        message_count=row[6],
        last_message_id=row[7],
        head=row[8],
    )


def _message(row: sqlite3.Row | tuple[Any, ...]) -> Message:
    return Message(
        id=row[0],
        session_id=row[1],
        user_id=row[2],
        type=row[3],
        content=row[4],
        timestamp=parse_iso(row[5]),
        client_message_id=row[6],
        metadata=json.loads(row[7]) if row[7] is not None else None,
        delivered=bool(row[8]),
        read=bool(row[9]),
        created_seq=row[10],
        change_seq=row[11],
        edited_at=parse_iso(row[12]) if row[12] else None,
    )


class SQLiteStorage:
    """The embedded default backend."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._migrate(self._writer)
        self._reader = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=10000")
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            async with conn.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
            version = int(row[0]) if row else 0
            for step, script in enumerate(MIGRATIONS[version:], start=version):
                for statement in filter(str.strip, script.split(";")):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {step + 1}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("storage is not open")
        return self._reader

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._writer is None:
            raise RuntimeError("storage is not open")
        conn = self._writer
        async with self._write_lock:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    async def _one(self, conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> Any:
        async with conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def _all(self, conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def ping(self) -> None:
        await self._one(self._r, "SELECT 1")

    def on_change(self, listener: Callable[[str, int | None], None]) -> None:
        """One process owns the file and notifies its own waiters: nothing to relay."""

    # users

    async def create_user(self, *, name: str, role: Role, token_hash: str, now: datetime) -> User:
        user = User(id=new_user_id(), name=name, role=role, created_at=now)
        async with self._transaction() as conn:
            if await self._one(conn, "SELECT 1 FROM users WHERE name = ?", (name,)):
                raise Conflict(f"a user named {name!r} exists", code="user_exists")
            await conn.execute(
                "INSERT INTO users (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (user.id, name, role, token_hash, isoformat(now)),
            )
        return user

    async def put_user(self, *, name: str, role: Role, token_hash: str, now: datetime) -> User:
        async with self._transaction() as conn:
            row = await self._one(conn, "SELECT id, name, role, created_at FROM users WHERE name = ?", (name,))
            if row is None:
                user = User(id=new_user_id(), name=name, role=role, created_at=now)
                # A token given to another user by hand wins: the old holder loses it.
                await conn.execute("UPDATE users SET token_hash = 'revoked:' || id WHERE token_hash = ?", (token_hash,))
                await conn.execute(
                    "INSERT INTO users (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                    (user.id, name, role, token_hash, isoformat(now)),
                )
                return user
            await conn.execute(
                "UPDATE users SET token_hash = 'revoked:' || id WHERE token_hash = ? AND id != ?", (token_hash, row[0])
            )
            await conn.execute("UPDATE users SET role = ?, token_hash = ? WHERE id = ?", (role, token_hash, row[0]))
            return User(id=row[0], name=row[1], role=role, created_at=parse_iso(row[3]))

    async def user_by_token_hash(self, token_hash: str) -> User | None:
        row = await self._one(
            self._r, "SELECT id, name, role, created_at FROM users WHERE token_hash = ?", (token_hash,)
        )
        return _user(row) if row else None

    async def list_users(self) -> list[User]:
        rows = await self._all(self._r, "SELECT id, name, role, created_at FROM users ORDER BY created_at, id")
        return [_user(r) for r in rows]

    async def has_admin(self) -> bool:
        return bool(await self._one(self._r, "SELECT 1 FROM users WHERE role = 'admin' LIMIT 1"))

    # sessions

    async def create_session(
        self, *, session_id: str, owner_id: str, client_name: str | None, now: datetime
    ) -> Session:
        async with self._transaction() as conn:
            if await self._one(conn, "SELECT 1 FROM sessions WHERE id = ?", (session_id,)):
                raise Conflict(f"session {session_id!r} exists", code="session_exists")
            await self._insert_session(conn, session_id, owner_id, client_name, now)
            row = await self._one(conn, f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,))
        return _session(row)

    async def _insert_session(
        self, conn: aiosqlite.Connection, session_id: str, owner_id: str, client_name: str | None, now: datetime
    ) -> None:
        stamp = isoformat(now)
        await conn.execute(
            "INSERT INTO sessions (id, owner_id, client_name, created_at, last_activity) VALUES (?, ?, ?, ?, ?)",
            (session_id, owner_id, client_name, stamp, stamp),
        )

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._one(self._r, f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,))
        return _session(row) if row else None

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
        rows = await self._all(
            self._r,
            f"SELECT {_SESSION_COLUMNS} FROM sessions {clause} ORDER BY last_activity DESC, id LIMIT ?",
            [*params, limit],
        )
        return [_session(r) for r in rows]

    async def update_session(
        self, session_id: str, *, closed: bool | None, client_name: str | None, now: datetime
    ) -> Session:
        async with self._transaction() as conn:
            if not await self._one(conn, "SELECT 1 FROM sessions WHERE id = ?", (session_id,)):
                raise NotFound("no such session", code="session_not_found")
            if closed is not None:
                await conn.execute("UPDATE sessions SET closed = ? WHERE id = ?", (int(closed), session_id))
            if client_name is not None:
                await conn.execute("UPDATE sessions SET client_name = ? WHERE id = ?", (client_name, session_id))
            await conn.execute("UPDATE sessions SET last_activity = ? WHERE id = ?", (isoformat(now), session_id))
            row = await self._one(conn, f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,))
        return _session(row)

    # messages

    async def append(self, items: Sequence[NewMessage], *, author: User, now: datetime) -> list[Appended]:
        stamp = isoformat(now)
        results: list[Appended] = []
        async with self._transaction() as conn:
            for item in items:
                results.append(await self._append_one(conn, item, author, stamp, now))
        return results

    async def _append_one(
        self, conn: aiosqlite.Connection, item: NewMessage, author: User, stamp: str, now: datetime
    ) -> Appended:
        row = await self._one(conn, "SELECT owner_id, closed FROM sessions WHERE id = ?", (item.session_id,))
        if row is None:
            await self._insert_session(conn, item.session_id, author.id, item.client_name, now)
        elif row[0] != author.id and not author.sees_all_sessions:
            return Appended(None, error=NotFound("no such session", code="session_not_found"))
        # A replay is answered before the closed check: the same key always answers with the
        # first message, also when the session closed after it was stored (a lost acknowledgement).
        if item.client_message_id is not None:
            existing = await self._one(
                conn,
                f"SELECT {_MESSAGE_COLUMNS} FROM messages"
                " WHERE user_id = ? AND session_id = ? AND client_message_id = ?",
                (author.id, item.session_id, item.client_message_id),
            )
            if existing:
                return Appended(_message(existing), created=False)
        if row is not None and row[1]:
            return Appended(None, error=Conflict("the session is closed", code="session_closed"))
        seq = await self._bump(conn, item.session_id)
        message_id = new_message_id()
        metadata = json.dumps(item.metadata, separators=(",", ":")) if item.metadata is not None else None
        await conn.execute(
            f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, NULL)",
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
        await conn.execute(
            "UPDATE sessions SET message_count = message_count + 1, last_message_id = ?, last_activity = ?"
            " WHERE id = ?",
            (message_id, stamp, item.session_id),
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

    async def _bump(self, conn: aiosqlite.Connection, session_id: str) -> int:
        row = await self._one(conn, "UPDATE sessions SET head = head + 1 WHERE id = ? RETURNING head", (session_id,))
        return int(row[0])

    async def changes(self, session_id: str, *, after: int, limit: int) -> Page:
        # The head is read first: every row with change_seq <= head committed with it, so
        # bounding the rows by it gives a consistent page without a read transaction.
        head_row = await self._one(self._r, "SELECT head FROM sessions WHERE id = ?", (session_id,))
        head = int(head_row[0]) if head_row else 0
        rows = await self._all(
            self._r,
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND change_seq > ? AND change_seq <= ?"
            " ORDER BY change_seq LIMIT ?",
            (session_id, after, head, limit + 1),
        )
        messages = [_message(r) for r in rows[:limit]]
        has_more = len(rows) > limit
        return Page(messages=messages, head=head, has_more=has_more, upto=messages[-1].change_seq if has_more else head)

    async def get_message(self, message_id: str) -> Message | None:
        row = await self._one(self._r, f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
        return _message(row) if row else None

    async def mark_delivered(self, session_id: str, message_ids: Sequence[str], *, now: datetime) -> int:
        async with self._transaction() as conn:
            for message_id in message_ids:
                row = await self._one(
                    conn,
                    "SELECT 1 FROM messages WHERE id = ? AND session_id = ? AND delivered = 0",
                    (message_id, session_id),
                )
                if row:
                    seq = await self._bump(conn, session_id)
                    await conn.execute(
                        "UPDATE messages SET delivered = 1, change_seq = ? WHERE id = ?", (seq, message_id)
                    )
            head = await self._one(conn, "SELECT head FROM sessions WHERE id = ?", (session_id,))
        return int(head[0]) if head else 0

    async def mark_read(self, session_id: str, *, message_type: MessageType, up_to_seq: int, now: datetime) -> int:
        async with self._transaction() as conn:
            rows = await self._all(
                conn,
                "SELECT id FROM messages WHERE session_id = ? AND type = ? AND created_seq <= ? AND read = 0"
                " ORDER BY created_seq",
                (session_id, message_type, up_to_seq),
            )
            for (message_id,) in rows:
                seq = await self._bump(conn, session_id)
                await conn.execute(
                    "UPDATE messages SET read = 1, delivered = 1, change_seq = ? WHERE id = ?", (seq, message_id)
                )
            head = await self._one(conn, "SELECT head FROM sessions WHERE id = ?", (session_id,))
        return int(head[0]) if head else 0

    async def edit(self, message_id: str, *, content: str, now: datetime) -> Message:
        async with self._transaction() as conn:
            row = await self._one(conn, "SELECT session_id FROM messages WHERE id = ?", (message_id,))
            if row is None:
                raise NotFound("no such message", code="message_not_found")
            seq = await self._bump(conn, row[0])
            await conn.execute(
                "UPDATE messages SET content = ?, edited_at = ?, change_seq = ? WHERE id = ?",
                (content, isoformat(now), seq, message_id),
            )
            updated = await self._one(conn, f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
        return _message(updated)

    async def pending_user_messages(self, *, since: datetime, limit: int) -> list[Message]:
        rows = await self._all(
            self._r,
            f"SELECT {', '.join('m.' + c.strip() for c in _MESSAGE_COLUMNS.split(','))} FROM messages m"
            " JOIN sessions s ON s.id = m.session_id"
            " WHERE m.delivered = 0 AND m.type = 'user' AND m.created_at >= ? AND s.closed = 0"
            " ORDER BY m.created_at LIMIT ?",
            (isoformat(since), limit),
        )
        return [_message(r) for r in rows]
