"""The storage suite's fixtures: one opened ``Storage`` per backend in ``BACKENDS``.

Every test in ``tests/storage`` that asks for ``storage`` (or ``backend``) runs once per backend.
Adding a backend is one line: put its name in ``BACKENDS``; ``_database_url`` already knows how
to make an empty database for each name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pollchat.domain.records import Role, User
from pollchat.storage import Storage, create_storage
from tests.conftest import missing

BACKENDS = ["sqlite", "postgres"]

POSTGRES_SERVER_VARIABLE = "POLLCHAT_TEST_POSTGRES"


@dataclass
class Backend:
    """A backend under test and the URL of an empty database for it."""

    name: str
    url: str
    _opened: list[Storage] = field(default_factory=list)

    async def open(self) -> Storage:
        """A new storage on this database, opened (migrations run); closed after the test."""
        storage = create_storage(self.url)
        await storage.open()
        self._opened.append(storage)
        return storage

    async def close_all(self) -> None:
        while self._opened:
            await self._opened.pop().close()

    async def schema_version(self) -> int | None:
        """The schema version recorded in the database, where this suite knows how to read it."""
        if self.name == "sqlite":
            import aiosqlite

            from pollchat.storage.sqlite import sqlite_path

            async with aiosqlite.connect(sqlite_path(self.url)) as conn:
                async with conn.execute("PRAGMA user_version") as cur:
                    row = await cur.fetchone()
            return int(row[0]) if row else None
        if self.name == "postgres":
            import asyncpg

            conn = await asyncpg.connect(self.url, timeout=3)
            try:
                version = await conn.fetchval("SELECT version FROM pollchat_schema")
            finally:
                await conn.close()
            return int(version) if version is not None else None
        return None


async def _sqlite_url(tmp_path: Path) -> AsyncIterator[str]:
    yield f"sqlite:///{tmp_path / 'store' / 'chat.db'}"


async def _postgres_url(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database on the server at ``POLLCHAT_TEST_POSTGRES`` (a URL without a database
    name; by default the local server the scale-out suite uses), dropped afterwards."""
    server = os.environ.get(POSTGRES_SERVER_VARIABLE, "postgresql://postgres@127.0.0.1:5432").rstrip("/")
    try:
        import asyncpg
    except ImportError:
        missing("asyncpg is not installed (pip install -e '.[postgres]')")
    try:
        conn = await asyncpg.connect(f"{server}/postgres", timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        missing(f"PostgreSQL at {server} is unreachable: {exc}")
    name = "pollchat_storage_" + secrets.token_hex(6)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield f"{server}/{name}"
    finally:
        conn = await asyncpg.connect(f"{server}/postgres", timeout=3)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


_database_url: dict[str, Callable[[Path], AsyncIterator[str]]] = {
    "sqlite": _sqlite_url,
    "postgres": _postgres_url,
}


@asynccontextmanager
async def empty_database(name: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database of backend ``name``, dropped afterwards (for suites beyond this one)."""
    urls = _database_url[name](tmp_path)
    try:
        yield await anext(urls)
    finally:
        await urls.aclose()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """An empty database of one backend; every storage opened on it is closed afterwards."""
    urls = _database_url[request.param](tmp_path)
    url = await anext(urls)
    backend = Backend(request.param, url)
    try:
        yield backend
    finally:
        await backend.close_all()
        await urls.aclose()


@pytest.fixture
async def storage(backend: Backend) -> Storage:
    """An opened storage on an empty database."""
    return await backend.open()


class Tick:
    """Strictly increasing timestamps, one second apart, so ordering by time is deterministic."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def tick() -> Tick:
    return Tick()


MakeUser = Callable[..., Awaitable[User]]


@pytest.fixture
def make_user(storage: Storage, tick: Tick) -> MakeUser:
    """``await make_user("alice", "member")``: a stored user whose token hash is ``hash-<name>``."""

    async def make(name: str, role: Role = "member", **kwargs: Any) -> User:
        return await storage.create_user(name=name, role=role, token_hash=f"hash-{name}", now=tick(), **kwargs)

    return make
