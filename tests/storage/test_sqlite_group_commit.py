"""SQLite group commit: writes waiting together share one transaction, yet succeed or fail on their own."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pollchat.domain.errors import Conflict, Unavailable
from pollchat.domain.records import NewMessage, User
from pollchat.storage.sqlite import SQLiteStorage
from pollchat.storage.sqlite_writer import GroupWriter
from tests.storage.conftest import Tick

SENDERS = 16


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(str(tmp_path / "chat.db"))
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


async def alice(storage: SQLiteStorage, tick: Tick) -> User:
    return await storage.create_user(name="alice", role="member", token_hash="hash-alice", now=tick())


def new(session_id: str, content: str, client_message_id: str | None = None) -> NewMessage:
    return NewMessage(session_id=session_id, type="user", content=content, client_message_id=client_message_id)


async def contents(storage: SQLiteStorage, session_id: str) -> list[str]:
    page = await storage.changes(session_id, after=0, limit=10_000)
    return [m.content for m in page.messages]


async def test_concurrent_appends_share_one_commit(sqlite: SQLiteStorage, tick: Tick) -> None:
    author = await alice(sqlite, tick)
    groups = sqlite.writer.groups
    now = tick()
    outcomes = await asyncio.gather(
        *(sqlite.append([new("s1", f"m{i}"), new(f"own-{i}", f"m{i}")], author=author, now=now) for i in range(SENDERS))
    )
    assert sqlite.writer.groups == groups + 1
    assert all(r.created for results in outcomes for r in results)
    # Sequence numbers follow the order the callers queued in, which is commit order.
    assert [results[0].message.created_seq for results in outcomes if results[0].message] == list(range(1, SENDERS + 1))
    assert await contents(sqlite, "s1") == [f"m{i}" for i in range(SENDERS)]
    session = await sqlite.get_session("s1")
    assert session is not None and (session.head, session.message_count) == (SENDERS, SENDERS)


async def test_a_refused_write_does_not_roll_back_its_group(sqlite: SQLiteStorage, tick: Tick) -> None:
    author = await alice(sqlite, tick)
    await sqlite.create_session(session_id="taken", owner_id=author.id, client_name=None, now=tick())
    groups = sqlite.writer.groups
    now = tick()
    first, refused, last = await asyncio.gather(
        sqlite.append([new("s1", "before")], author=author, now=now),
        sqlite.create_session(session_id="taken", owner_id=author.id, client_name=None, now=now),
        sqlite.append([new("s1", "after")], author=author, now=now),
        return_exceptions=True,
    )
    assert sqlite.writer.groups == groups + 1
    assert isinstance(refused, Conflict)
    assert not isinstance(first, BaseException) and not isinstance(last, BaseException)
    assert await contents(sqlite, "s1") == ["before", "after"]


async def test_a_failing_operation_is_rolled_back_to_its_savepoint_alone(sqlite: SQLiteStorage, tick: Tick) -> None:
    author = await alice(sqlite, tick)
    now = tick()

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE users SET name = 'mallory' WHERE id = ?", (author.id,))
        raise RuntimeError("a bug halfway through")

    before, failed, after = await asyncio.gather(
        sqlite.append([new("s1", "before")], author=author, now=now),
        sqlite.writer.run(half_done),
        sqlite.append([new("s1", "after")], author=author, now=now),
        return_exceptions=True,
    )
    assert isinstance(failed, RuntimeError)
    assert [u.name for u in await sqlite.list_users()] == ["alice"]
    assert await contents(sqlite, "s1") == ["before", "after"]


async def test_a_failed_commit_fails_every_caller_and_applies_nothing(sqlite: SQLiteStorage, tick: Tick) -> None:
    author = await alice(sqlite, tick)
    await sqlite.append([new("s1", "kept")], author=author, now=tick())
    now = tick()

    def breaks_the_commit(conn: sqlite3.Connection) -> None:
        # A deferred foreign key violation is only detected by COMMIT, which then fails.
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute("UPDATE sessions SET owner_id = 'nobody' WHERE id = 's1'")

    outcomes = await asyncio.gather(
        sqlite.append([new("s1", "lost 1")], author=author, now=now),
        sqlite.writer.run(breaks_the_commit),
        sqlite.append([new("s2", "lost 2")], author=author, now=now),
        return_exceptions=True,
    )
    assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes), outcomes
    assert await contents(sqlite, "s1") == ["kept"]
    assert await sqlite.get_session("s2") is None
    session = await sqlite.get_session("s1")
    assert session is not None and (session.owner_id, session.head) == (author.id, 1)
    # The writer goes on with the next group.
    await sqlite.append([new("s1", "next")], author=author, now=tick())
    assert await contents(sqlite, "s1") == ["kept", "next"]


async def test_a_transaction_ended_by_sqlite_fails_the_whole_group(sqlite: SQLiteStorage, tick: Tick) -> None:
    author = await alice(sqlite, tick)
    now = tick()

    def aborts(conn: sqlite3.Connection) -> None:
        # What SQLite does by itself on some I/O errors: the whole transaction is gone.
        conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("disk I/O error")

    outcomes = await asyncio.gather(
        sqlite.append([new("s1", "lost")], author=author, now=now),
        sqlite.writer.run(aborts),
        return_exceptions=True,
    )
    # The storage caller is told to retry; the writer's own caller sees what SQLite raised.
    assert [type(o) for o in outcomes] == [Unavailable, sqlite3.OperationalError]
    assert isinstance(outcomes[0].__cause__, sqlite3.OperationalError)
    assert await sqlite.get_session("s1") is None


async def test_a_caller_cancelled_before_its_group_writes_nothing(sqlite: SQLiteStorage, tick: Tick) -> None:
    author = await alice(sqlite, tick)
    release = threading.Event()
    blocker = asyncio.create_task(sqlite.writer.run(lambda conn: release.wait(5)))
    await asyncio.sleep(0.05)  # the blocker's group holds the writer thread
    send = asyncio.create_task(sqlite.append([new("s1", "never")], author=author, now=tick()))
    await asyncio.sleep(0)
    send.cancel()
    release.set()
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await send
    await sqlite.append([new("other", "flush")], author=author, now=tick())
    assert await sqlite.get_session("s1") is None


async def cancel_while_its_group_commits(sqlite: SQLiteStorage, operation: Coroutine[Any, Any, Any]) -> None:
    """Queue ``operation`` into a group that holds the writer, cancel its caller there, then let the group commit."""
    release, running = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        running.set()
        release.wait(5)

    blocker = asyncio.create_task(sqlite.writer.run(hold))
    task = asyncio.create_task(operation)
    while not running.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    release.set()
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_caller_cancelled_while_its_group_commits_is_announced(sqlite: SQLiteStorage, tick: Tick) -> None:
    author = await alice(sqlite, tick)
    heard: list[tuple[str, int | None]] = []
    sqlite.on_change(lambda session_id, head: heard.append((session_id, head)))
    await cancel_while_its_group_commits(sqlite, sqlite.append([new("s1", "committed")], author=author, now=tick()))
    assert await contents(sqlite, "s1") == ["committed"]
    assert heard == [("*", None)]


async def test_a_token_change_whose_caller_was_cancelled_forgets_every_token(sqlite: SQLiteStorage, tick: Tick) -> None:
    """A revocation committed for a caller that gave up must not leave the old token remembered."""
    author = await alice(sqlite, tick)
    heard: list[str | None] = []
    sqlite.on_token_change(heard.append)
    await cancel_while_its_group_commits(sqlite, sqlite.revoke_token(author.id))
    assert await sqlite.user_by_token_hash("hash-alice") is None
    for _ in range(100):  # the writer announces orphans soon after the commit, not during it
        if heard:
            break
        await asyncio.sleep(0.01)
    assert heard == [None]


async def test_close_commits_what_is_queued(tmp_path: Path, tick: Tick) -> None:
    path = str(tmp_path / "chat.db")
    storage = SQLiteStorage(path)
    await storage.open()
    author = await alice(storage, tick)
    now = tick()
    sends = [asyncio.create_task(storage.append([new("s1", f"m{i}")], author=author, now=now)) for i in range(5)]
    await asyncio.sleep(0)
    await storage.close()
    assert all(s.done() and s.result()[0].created for s in sends)
    with pytest.raises(Unavailable):
        await storage.append([new("s1", "late")], author=author, now=now)
    reopened = SQLiteStorage(path)
    await reopened.open()
    try:
        assert await contents(reopened, "s1") == [f"m{i}" for i in range(5)]
    finally:
        await reopened.close()


async def test_groups_are_cut_by_weight(tmp_path: Path) -> None:
    def setup(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (x)")

    writer = GroupWriter(str(tmp_path / "w.db"), max_group_weight=4)
    await writer.open(setup)
    try:

        def insert(x: int) -> Callable[[sqlite3.Connection], int]:
            def op(conn: sqlite3.Connection) -> int:
                conn.execute("INSERT INTO t VALUES (?)", (x,))
                return x

            return op

        light = [writer.run(insert(i)) for i in range(10)]
        assert await asyncio.gather(*light) == list(range(10))
        assert writer.groups == 3  # 4 + 4 + 2
        # A heavier operation than a whole group still runs, alone.
        assert await asyncio.gather(writer.run(insert(10), weight=9), writer.run(insert(11))) == [10, 11]
        assert writer.groups == 5
    finally:
        await writer.close()


async def test_reads_running_alongside_others_see_every_committed_write(sqlite: SQLiteStorage, tick: Tick) -> None:
    """Regression: reads on the shared reader connection ran their statement and their fetch as
    two calls, so a read half-done pinned the connection's snapshot and reads queued behind it
    saw data from before the latest commit (a woken long poll re-read an empty page and parked)."""
    author = await alice(sqlite, tick)
    await sqlite.append([new("busy", f"b{i}") for i in range(300)], author=author, now=tick())
    stop = asyncio.Event()

    async def background_reader() -> None:
        while not stop.is_set():
            await sqlite.changes("busy", after=0, limit=300)

    readers = [asyncio.create_task(background_reader()) for _ in range(8)]
    try:
        for i in range(40):
            (stored,) = await sqlite.append([new("mine", f"m{i}")], author=author, now=tick())
            assert stored.message is not None
            page = await sqlite.changes("mine", after=stored.message.change_seq - 1, limit=10)
            assert [m.content for m in page.messages] == [f"m{i}"], f"round {i}: a read missed a committed write"
    finally:
        stop.set()
        await asyncio.gather(*readers)
