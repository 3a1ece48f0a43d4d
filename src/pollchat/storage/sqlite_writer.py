"""Group commit for SQLite: every write waiting at the same moment shares one transaction and one fsync.

With ``synchronous=FULL`` each ``COMMIT`` waits for an fsync of the WAL, which costs
milliseconds on a real disk while the statements of a send cost microseconds. So the commit,
not the SQL, bounds how many durable sends a second one file can take. ``GroupWriter`` keeps
the fsync per commit (nothing is acknowledged before it is on disk) but lets many callers
share a commit:

- A caller hands over a write operation: a plain function of a ``sqlite3.Connection`` that
  runs its statements and returns a value or raises. It never begins, commits or rolls back.
- Operations queue up while a commit is in progress. When it returns, the next group is every
  operation queued by then: no timer, so an idle server adds no latency and a busy one makes
  bigger groups exactly when commits are the bottleneck.
- A group runs on the writer's own thread, in submission order, as ``BEGIN IMMEDIATE``, one
  ``SAVEPOINT`` per operation, ``COMMIT``. An operation that raises is rolled back to its
  savepoint alone; the others stay in the transaction. If SQLite ends the transaction itself
  or the commit fails, every caller of the group gets that error and nothing of it is applied.
- A caller's future is resolved only after ``COMMIT`` returned, so an acknowledged write
  survives ``kill -9`` and a power cut just as with one commit per write.

Running a whole group in one call to the thread (rather than one thread hop per statement,
as ``aiosqlite`` does) keeps the time the write lock is held, and the event loop's share of a
send, small. The connection is made, used and closed on that one thread only.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pollchat.storage.failure import closed, unavailable

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], T]

# A group is one transaction holding the write lock while it runs: bounding its size (in
# messages, roughly) bounds how long its first caller waits for the fsync, and how long
# another process's writer (``pollchat users create``) waits for the lock.
DEFAULT_MAX_GROUP_WEIGHT = 256


@dataclass(slots=True)
class _Pending:
    operation: Callable[[sqlite3.Connection], Any]
    weight: int
    future: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class _Outcome:
    value: Any = None
    error: BaseException | None = None


class GroupWriter:
    """One SQLite connection on its own thread that commits queued operations in groups."""

    def __init__(
        self,
        path: str,
        *,
        on_orphan: Callable[[], None] | None = None,
        max_group_weight: int = DEFAULT_MAX_GROUP_WEIGHT,
    ) -> None:
        """``on_orphan`` is called after a group committed a write whose caller had given up waiting."""
        self._path = path
        self._on_orphan = on_orphan
        self._max_group_weight = max_group_weight
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._queue: deque[_Pending] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._closing = False
        # Observability for tests and the benchmark: how many groups committed, how many operations.
        self.groups = 0
        self.operations = 0

    async def open(self, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Connect on the writer thread and run ``setup`` (pragmas, migrations) there."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pollchat-sqlite-writer")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._connect, setup)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    def _connect(self, setup: Callable[[sqlite3.Connection], None]) -> None:
        # isolation_level=None: the module must not open transactions behind our back; the
        # group's BEGIN IMMEDIATE / SAVEPOINT / COMMIT are the only transaction control.
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            setup(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def run(self, operation: Operation[T], *, weight: int = 1) -> T:
        """Run ``operation`` in the next group; return its value once that group has committed.

        ``weight`` is roughly how many rows it writes (a batch's length); groups are cut by it.
        """
        if self._executor is None or self._closing:
            raise closed()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Pending(operation, max(1, weight), future))
        if self._drainer is None:
            # Scheduled, not run now: callers made ready in this same turn of the loop still
            # queue before the first group is taken.
            self._drainer = loop.create_task(self._drain())
        return cast(T, await future)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        group: list[_Pending] = []
        try:
            while self._queue:
                group, weight = [], 0
                # At least one operation, however heavy; then as many as fit.
                while self._queue and (not group or weight + self._queue[0].weight <= self._max_group_weight):
                    pending = self._queue.popleft()
                    # A caller cancelled before its group starts is dropped: nothing of it is
                    # written. Once the group runs, its write commits whatever the caller does.
                    if not pending.future.done():
                        group.append(pending)
                        weight += pending.weight
                if not group:
                    continue
                assert self._executor is not None
                outcomes = await loop.run_in_executor(self._executor, self._commit, [p.operation for p in group])
                orphaned = False
                for pending, outcome in zip(group, outcomes, strict=True):
                    if pending.future.done():
                        # Cancelled while its group ran: the write is committed but nobody will
                        # announce it (wake long polls), so the storage owner must hear of it.
                        orphaned = orphaned or outcome.error is None
                        continue
                    if outcome.error is not None:
                        pending.future.set_exception(outcome.error)
                    else:
                        pending.future.set_result(outcome.value)
                group = []
                if orphaned and self._on_orphan is not None:
                    # Soon, not now: a failing listener must not stop the writer.
                    loop.call_soon(self._on_orphan)
        except BaseException as exc:
            # Only reached when this task itself is cancelled (the loop is shutting down) or on
            # a bug here: no caller may wait forever on a group whose outcome it cannot learn.
            error = exc if isinstance(exc, Exception) else unavailable("the SQLite writer stopped")
            for pending in [*group, *self._queue]:
                if not pending.future.done():
                    pending.future.set_exception(error)
            self._queue.clear()
            raise
        finally:
            self._drainer = None

    def _commit(self, operations: Sequence[Callable[[sqlite3.Connection], Any]]) -> list[_Outcome]:
        """Run on the writer thread: one transaction for the whole group, one savepoint per operation."""
        conn = self._conn
        if conn is None:
            return [_Outcome(error=closed())] * len(operations)
        outcomes: list[_Outcome] = []
        try:
            if conn.in_transaction:
                # Left open by a group interrupted by a BaseException: none of it was acknowledged.
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            for operation in operations:
                conn.execute("SAVEPOINT caller")
                try:
                    value = operation(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        # SQLite rolled back the whole transaction (I/O error, full disk...):
                        # the writes of the group's earlier callers are gone too.
                        raise
                    conn.execute("ROLLBACK TO caller")
                    conn.execute("RELEASE caller")
                    outcomes.append(_Outcome(error=exc))
                else:
                    conn.execute("RELEASE caller")
                    outcomes.append(_Outcome(value=value))
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the error that brought us here (a closed connection, say) is the one to report
            if not isinstance(exc, Exception):
                raise
            return [_Outcome(error=exc)] * len(operations)
        self.groups += 1
        self.operations += len(operations)
        return outcomes

    async def close(self) -> None:
        """Commit what is queued, then close the connection and stop the thread."""
        self._closing = True
        while self._drainer is not None:
            # wait(), not await: the drainer's own failure was already given to its callers.
            await asyncio.wait({self._drainer})
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=True)
            self._closing = False

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
