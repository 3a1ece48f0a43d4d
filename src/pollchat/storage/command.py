"""Storage operations without I/O: each is a generator that yields commands and receives their results.

An operation (``users.py``, ``sessions.py``, ``messages.py``) holds the logic and the SQL of one
storage call, written once for every backend. It never touches a connection: it yields

- ``Statement(sql, params, fetch)`` and is sent back one row (or ``None``), every row, the
  number of rows changed, or nothing, as ``fetch`` asks. The SQL is written once, with ``?`` placeholders, in the subset
  SQLite and PostgreSQL share plus ``FOR UPDATE``; each driver translates it (``$n`` for
  asyncpg; no row locks for SQLite, whose writer runs one operation at a time anyway);
- ``Lock(table)``: writers of that table wait for this transaction (PostgreSQL takes a table
  lock; SQLite's single writer has nothing to do);
- notices, ``HeadMoved(session_id, head)`` and ``TokenChanged(user_id)``: what other instances
  must hear once the transaction commits (PostgreSQL sends them with ``pg_notify`` inside the
  transaction, which delivers them on commit; every backend tells its own token listeners
  after the commit).

A driver runs the whole operation inside its transaction, synchronously (``drive``: SQLite's
group writer, inside each caller's savepoint) or asynchronously (``drive_async``: asyncpg, the
SQLite reader). An operation that raises aborts its transaction (or savepoint) like any failed
statement; nothing it yielded is committed or announced.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple, TypeVar, cast

T = TypeVar("T")


class Fetch(enum.Enum):
    """What a statement sends back to its operation."""

    NONE = enum.auto()  # nothing: ``None``
    ONE = enum.auto()  # the first row, or ``None`` when there is none
    ALL = enum.auto()  # a list of every row
    COUNT = enum.auto()  # how many rows it inserted, updated or deleted


class Statement(NamedTuple):
    """One SQL statement with ``?`` placeholders and its parameters (a tuple: cheap to make)."""

    sql: str
    params: tuple[Any, ...]
    fetch: Fetch


class Lock(NamedTuple):
    """Make other writers of ``table`` wait until this transaction ends."""

    table: str


class HeadMoved(NamedTuple):
    """The session's change sequence reached ``head``: wake the long polls of every instance."""

    session_id: str
    head: int


class TokenChanged(NamedTuple):
    """The user's token or role changed: every instance forgets the tokens it remembers for it."""

    user_id: str


Notice = HeadMoved | TokenChanged
Command = Statement | Lock | HeadMoved | TokenChanged
# Yields commands, is sent each command's result, returns the operation's value.
Operation = Generator[Command, Any, T]


def fetch_one(sql: str, *params: Any) -> Statement:
    """A statement whose first row (or ``None``) is sent back."""
    return Statement(sql, params, Fetch.ONE)


def fetch_all(sql: str, *params: Any) -> Statement:
    """A statement whose rows are sent back as a list."""
    return Statement(sql, params, Fetch.ALL)


def count(sql: str, *params: Any) -> Statement:
    """A statement that changes rows, whose number is sent back (cheaper than ``RETURNING`` on SQLite)."""
    return Statement(sql, params, Fetch.COUNT)


def execute(sql: str, *params: Any) -> Statement:
    """A statement run for its effect alone."""
    return Statement(sql, params, Fetch.NONE)


def placeholders(count: int) -> str:
    """``?, ?, ?`` for an ``IN (...)`` list of ``count`` values (at least one)."""
    return ", ".join("?" * max(1, count))


def drive(operation: Operation[T], run: Callable[[Command], Any]) -> T:
    """Run ``operation`` to its end, synchronously, with ``run`` carrying out each command."""
    # The loop of every SQLite write, on the writer thread while it holds the write lock: kept
    # to one call of ``run`` and one ``send`` per command.
    send = operation.send
    try:
        command = send(None)
        while True:
            command = send(run(command))
    except StopIteration as stop:
        return cast(T, stop.value)
    except BaseException:
        operation.close()
        raise


async def drive_async(operation: Operation[T], run: Callable[[Command], Awaitable[Any]]) -> T:
    """Run ``operation`` to its end, awaiting ``run`` for each command."""
    send = operation.send
    try:
        command = send(None)
        while True:
            command = send(await run(command))
    except StopIteration as stop:
        return cast(T, stop.value)
    except BaseException:
        operation.close()
        raise
