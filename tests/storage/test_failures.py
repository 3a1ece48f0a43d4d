"""A database that cannot answer is ``Unavailable`` (503, Retry-After) on every backend, never a bare error."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pollchat.domain.errors import Unavailable
from pollchat.domain.records import NewMessage, User
from pollchat.storage import Storage
from pollchat.storage.sqlite import SQLiteStorage, is_outage
from tests.storage.conftest import Backend, Tick


def new(session_id: str, content: str = "hi") -> NewMessage:
    return NewMessage(session_id=session_id, type="user", content=content)


def calls(storage: Storage, author: User, tick: Tick) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of each kind: reads, writes of one and of many rows, users, the secret."""
    return {
        "ping": storage.ping,
        "append": lambda: storage.append([new("s1"), new("s2")], author=author, now=tick()),
        "changes": lambda: storage.changes("s1", after=0, limit=10),
        "get_session": lambda: storage.get_session("s1"),
        "list_sessions": lambda: storage.list_sessions(owner_id=None, status=None, inactive_before=tick(), limit=5),
        "mark_read": lambda: storage.mark_read("s1", message_type="user", up_to_seq=9, now=tick()),
        "create_user": lambda: storage.create_user(name="bob", role="member", token_hash="hash-bob", now=tick()),
        "user_by_token_hash": lambda: storage.user_by_token_hash("hash-alice"),
        "server_secret": storage.server_secret,
    }


async def assert_unavailable(storage: Storage, author: User, tick: Tick) -> None:
    for name, call in calls(storage, author, tick).items():
        with pytest.raises(Unavailable) as caught:
            await call()
        error = caught.value
        assert (error.status_code, error.code, error.retry_after) == (503, "storage_unavailable", 1), name


async def cut_connections(backend: Backend, storage: Storage) -> None:
    """Break the connections under an open storage, as a crashed server or a lost disk would."""
    if isinstance(storage, SQLiteStorage):

        def close(conn: sqlite3.Connection) -> None:
            conn.close()

        with pytest.raises(sqlite3.ProgrammingError):
            await storage.writer.run(close)
        assert storage._reader is not None
        await storage._reader.close()
    else:
        import asyncpg

        assert backend.name == "postgres"
        pool = storage._pool  # type: ignore[attr-defined]
        assert isinstance(pool, asyncpg.Pool)
        pool.terminate()


async def test_lost_connections_make_every_call_unavailable(backend: Backend, tick: Tick) -> None:
    """Bug: on SQLite a closed or broken connection escaped as a bare exception, answered 500."""
    storage = await backend.open()
    author = await storage.create_user(name="alice", role="member", token_hash="hash-alice", now=tick())
    await cut_connections(backend, storage)
    await assert_unavailable(storage, author, tick)


async def test_a_closed_storage_is_unavailable(backend: Backend, tick: Tick) -> None:
    """A request still running while the server shuts down is told to retry (on another instance)."""
    storage = await backend.open()
    author = await storage.create_user(name="alice", role="member", token_hash="hash-alice", now=tick())
    await storage.close()
    await assert_unavailable(storage, author, tick)


async def test_a_sqlite_file_locked_by_another_process_is_unavailable(tmp_path: Path, tick: Tick) -> None:
    """Bug: "database is locked" (another process holding the write lock past the busy timeout)
    escaped as ``sqlite3.OperationalError``, answered 500; now 503 and the write can be retried."""
    path = str(tmp_path / "chat.db")
    storage = SQLiteStorage(path, busy_timeout=0.05)
    await storage.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        author = await storage.create_user(name="alice", role="member", token_hash="hash-alice", now=tick())
        (first,) = await storage.append([new("s1", "before")], author=author, now=tick())
        other.execute("BEGIN IMMEDIATE")
        for call in (
            lambda: storage.append([new("s1", "during")], author=author, now=tick()),
            lambda: storage.create_user(name="bob", role="member", token_hash="hash-bob", now=tick()),
        ):
            with pytest.raises(Unavailable) as caught:
                await call()
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
            assert "locked" in str(caught.value.__cause__)
        # Readers do not wait for writers (WAL), so polls go on while sends are refused.
        page = await storage.changes("s1", after=0, limit=10)
        assert [m.content for m in page.messages] == ["before"]
        other.execute("ROLLBACK")
        (after,) = await storage.append([new("s1", "after")], author=author, now=tick())
        assert after.created and first.message is not None and after.message is not None
        assert after.message.created_seq == first.message.created_seq + 1
    finally:
        other.close()
        await storage.close()


def test_only_sqlite_outages_become_unavailable(tmp_path: Path) -> None:
    """A bug (a statement the code got wrong, a broken constraint) must show as one (500), not as
    a 503 that clients retry for ever; a locked file or a closed connection is an outage."""
    path = str(tmp_path / "chat.db")
    one, two = (
        sqlite3.connect(path, isolation_level=None, timeout=0),
        sqlite3.connect(path, isolation_level=None, timeout=0),
    )
    try:
        one.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        one.execute("INSERT INTO t VALUES (1)")
        failures: list[tuple[str, bool]] = []
        for sql, params in (("SELEC 1", ()), ("INSERT INTO t VALUES (?)", (1,)), ("SELECT * FROM missing", ())):
            with pytest.raises(sqlite3.Error) as caught:
                two.execute(sql, params)
            failures.append((sql, is_outage(caught.value)))
        one.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as locked:
            two.execute("INSERT INTO t VALUES (2)")
        failures.append(("locked", is_outage(locked.value)))
        one.execute("ROLLBACK")
        two.close()
        with pytest.raises(sqlite3.ProgrammingError) as gone:
            two.execute("SELECT 1")
        failures.append(("closed", is_outage(gone.value)))
        assert failures == [
            ("SELEC 1", False),
            ("INSERT INTO t VALUES (?)", False),
            ("SELECT * FROM missing", False),
            ("locked", True),
            ("closed", True),
        ]
    finally:
        one.close()
        two.close()
