"""Shared fixtures: settings on a fresh SQLite file, an in-process app, users with tokens, real server processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pollchat.server.app import create_app
from pollchat.settings import Settings
from tests.servers import ServerFactory

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
API = "/api/v1/admin/chat"


def require_all() -> bool:
    """In CI a missing service or tool fails the test instead of skipping it."""
    return os.environ.get("POLLCHAT_REQUIRE_ALL") == "1"


def missing(reason: str) -> None:
    """Skip for a missing dependency, or fail when everything is required."""
    if require_all():
        pytest.fail(f"required but missing: {reason}")
    pytest.skip(reason)


class FakeClock:
    """Wall and monotonic time that move only when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings on a fresh SQLite file: no assistant, no rate limits, a known admin token."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path / 'chat.db'}",
            "assistant": "none",
            "admin_token": ADMIN_TOKEN,
            "send_rate_limit": "off",
            "poll_rate_limit": "off",
            "session_rate_limit": "off",
            "action_rate_limit": "off",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


class Api:
    """An httpx client on an in-process app, with helpers for the common calls."""

    def __init__(self, app: FastAPI, http: httpx.AsyncClient) -> None:
        self.app = app
        self.http = http

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def user(self, name: str, role: str = "member") -> str:
        """Create a user through the API and return its token."""
        r = await self.http.post(
            "/api/v1/admin/users", json={"name": name, "role": role}, headers=self.auth(ADMIN_TOKEN)
        )
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    async def send(self, token: str, session_id: str, content: str, **extra: Any) -> httpx.Response:
        return await self.http.post(
            f"{API}/messages", json={"content": content, "session_id": session_id, **extra}, headers=self.auth(token)
        )

    async def poll(
        self, token: str, session_id: str, headers: dict[str, str] | None = None, **params: Any
    ) -> httpx.Response:
        query = {"session_id": session_id, **{k: v for k, v in params.items() if v is not None}}
        return await self.http.get(f"{API}/messages", params=query, headers={**self.auth(token), **(headers or {})})

    async def drain(
        self, token: str, session_id: str, since: str | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Follow cursors until has_more is false."""
        out: list[dict[str, Any]] = []
        while True:
            r = await self.poll(token, session_id, since=since, limit=limit)
            assert r.status_code == 200, r.text
            body = r.json()
            out += body["messages"]
            since = body["cursor"]
            if not body["has_more"]:
                assert since is not None
                return out, since


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[Api]:
    """The app with its lifespan started, and a client on it."""
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Api(app, http)


@pytest.fixture
def make_api(settings: Settings) -> Callable[..., Awaitable[Any]]:
    """``async with make_api(**settings_overrides)``: an app of its own."""

    def make(settings_obj: Settings | None = None, **kwargs: Any) -> Any:
        return running(create_app(settings_obj or settings, **kwargs))

    return make  # type: ignore[return-value]


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running(create_app(settings)) as client:
        yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``POLLCHAT_*`` variables from the outer environment."""
    for key in list(os.environ):
        if key.startswith("POLLCHAT_") and key != "POLLCHAT_REQUIRE_ALL":
            monkeypatch.delenv(key)
    yield


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerFactory]:
    """Real ``pollchat serve`` processes of this test, with ``ADMIN_TOKEN``, on this test's own SQLite file.

    ``await servers.start(port=..., env={...}, args=[...], admin_token=None, database_url=...)``
    returns a healthy server, ``servers.spawn(...)`` one that may not serve yet, and
    ``servers.server(...)`` one to ``start()`` later (see ``tests/servers.py``). Every one is
    killed and reaped at teardown, whatever happened; their output is printed then, which pytest
    shows when the test fails.
    """
    factory = ServerFactory(tmp_path, admin_token=ADMIN_TOKEN)
    try:
        yield factory
    finally:
        factory.close()
        print(factory.output())
