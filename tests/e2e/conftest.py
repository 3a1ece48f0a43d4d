"""End-to-end fixtures: real ``pollchat serve`` processes, users made through the API, a chaos proxy.

The servers are ``tests.servers``'s (each on a free loopback port in its own process group with
its own SQLite file, always killed at teardown); the fixtures below only choose them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.conftest import ADMIN_TOKEN
from tests.e2e.proxy import ChaosProxy
from tests.servers import API, ServerFactory, ServerProcess, auth, clean_env, free_port, pollchat_command, serving

__all__ = ["API", "POLLCHAT", "ServerProcess", "auth", "clean_env", "free_port", "wait_until"]

POLLCHAT = pollchat_command()[0]


@pytest.fixture
def server_factory(servers: ServerFactory) -> Callable[..., ServerProcess]:
    """``server_factory(assistant=..., env=...)``: a started server of this test's own, on its own database."""

    def make(*, assistant: str = "none", env: dict[str, str] | None = None) -> ServerProcess:
        n = len(servers.started)
        server = servers.server(
            database_url=f"sqlite:///{servers.directory / f'server{n}.db'}",
            env={"POLLCHAT_ASSISTANT": assistant, **(env or {})},
        )
        server.start()
        return server

    return make


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server without an assistant, shared by a module's tests that do not stop it."""
    with serving(tmp_path_factory.mktemp("quiet"), admin_token=ADMIN_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the echo assistant, shared by a module's tests."""
    with serving(
        tmp_path_factory.mktemp("echo"), admin_token=ADMIN_TOKEN, env={"POLLCHAT_ASSISTANT": "echo"}
    ) as server:
        yield server


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[ChaosProxy]:
    async with ChaosProxy(server.port) as p:
        yield p


async def wait_until(
    predicate: Callable[[], bool], timeout: float, describe: Callable[[], str] = lambda: "", interval: float = 0.05
) -> float:
    """Wait until ``predicate()`` holds; returns the seconds it took, fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not reached within {timeout:g} s: {describe()}")
        await asyncio.sleep(interval)
    return time.monotonic() - started
