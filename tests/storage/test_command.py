"""The operations' plumbing, without a database: commands, the drivers' loops, the SQL dialects."""

from __future__ import annotations

from typing import Any

import pytest

from pollchat.storage import messages
from pollchat.storage.command import (
    Command,
    Fetch,
    HeadMoved,
    Operation,
    Statement,
    drive,
    drive_async,
    execute,
    fetch_all,
    fetch_one,
    placeholders,
)
from pollchat.storage.postgres import postgres_sql
from pollchat.storage.sqlite import sqlite_sql


def test_postgres_sql_numbers_placeholders_in_order() -> None:
    sql = "UPDATE t SET a = ?, b = COALESCE(?, b) WHERE id IN (?, ?) AND c = 'x:' || d"
    assert postgres_sql(sql) == "UPDATE t SET a = $1, b = COALESCE($2, b) WHERE id IN ($3, $4) AND c = 'x:' || d"
    assert postgres_sql("SELECT 1") == "SELECT 1"


def test_sqlite_sql_drops_row_locks() -> None:
    assert sqlite_sql("SELECT head FROM sessions WHERE id = ? FOR UPDATE") == "SELECT head FROM sessions WHERE id = ?"
    assert sqlite_sql("SELECT 1") == "SELECT 1"


def test_statements_say_what_they_fetch() -> None:
    assert fetch_one("S ?", 1) == Statement("S ?", (1,), Fetch.ONE)
    assert fetch_all("S") == Statement("S", (), Fetch.ALL)
    assert execute("U ?, ?", "a", None) == Statement("U ?, ?", ("a", None), Fetch.NONE)
    assert placeholders(3) == "?, ?, ?"


def counter() -> Operation[int]:
    (first,) = yield fetch_one("SELECT ?", 1)
    rows = yield fetch_all("SELECT * FROM t WHERE k > ?", 2)
    yield HeadMoved("s1", first + len(rows))
    return first + len(rows)


def scripted(answers: dict[str, Any], log: list[Command]) -> Any:
    def run(command: Command) -> Any:
        log.append(command)
        return answers.get(command.sql) if isinstance(command, Statement) else None

    return run


def test_drive_sends_each_result_back_and_returns_the_value() -> None:
    log: list[Command] = []
    run = scripted({"SELECT ?": (40,), "SELECT * FROM t WHERE k > ?": [(3,), (4,)]}, log)
    assert drive(counter(), run) == 42
    assert log[-1] == HeadMoved("s1", 42)


async def test_drive_async_awaits_each_command() -> None:
    log: list[Command] = []
    answer = scripted({"SELECT ?": (1,), "SELECT * FROM t WHERE k > ?": [(3,)]}, log)

    async def run(command: Command) -> Any:
        return answer(command)

    assert await drive_async(counter(), run) == 2
    assert [type(c).__name__ for c in log] == ["Statement", "Statement", "HeadMoved"]


def test_a_failing_statement_ends_the_operation() -> None:
    """The error reaches the driver's caller (to roll back); the operation is closed, not left suspended."""
    finished: list[str] = []

    def operation() -> Operation[None]:
        try:
            yield execute("UPDATE t SET a = 1")
        finally:
            finished.append("closed")

    def run(command: Command) -> Any:
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        drive(operation(), run)
    assert finished == ["closed"]


def test_marking_nothing_delivered_only_reads_the_locked_head() -> None:
    log: list[Command] = []
    assert drive(messages.mark_delivered("s1", []), scripted({}, log)) == 0
    assert log == [fetch_one("SELECT head FROM sessions WHERE id = ? FOR UPDATE", "s1")]
