"""End-to-end fixtures: real ``pollchat serve`` processes, users made through the API, a chaos proxy.

Each server runs in its own process group on a free loopback port with its own SQLite file, and
is always killed (SIGKILL to the whole group) at teardown. These helpers are independent of
``tests/integration``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.proxy import ChaosProxy

POLLCHAT = str(Path(sys.executable).with_name("pollchat"))
API = "/api/v1/admin/chat"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any ``POLLCHAT_*`` from outside, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLCHAT_")}
    env.update(extra)
    return env


class ServerProcess:
    """One ``pollchat serve`` in its own process group; ``kill()`` and ``start()`` again keep port and database."""

    def __init__(self, directory: Path, *, assistant: str = "none", env: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.database = directory / "x.db"
        self.log = directory / f"server-{self.port}.log"
        self.admin_token = "e2e-admin-" + secrets.token_hex(16)
        self.assistant = assistant
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None, "already running"
        env = clean_env(
            POLLCHAT_ADMIN_TOKEN=self.admin_token,
            POLLCHAT_ASSISTANT=self.assistant,
            POLLCHAT_SEND_RATE_LIMIT="off",
            POLLCHAT_POLL_RATE_LIMIT="off",
            POLLCHAT_LOG_LEVEL="warning",
            **self.extra_env,
        )
        args = [POLLCHAT, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--database", f"sqlite:///{self.database}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as http:
            while True:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    self.proc = None
                    raise RuntimeError(f"pollchat serve exited with {code}:\n{self.log.read_text()[-3000:]}")
                try:
                    # Our admin token proves the answer comes from our process, not another on this port.
                    r = http.get("/api/v1/admin/users/me", headers=auth(self.admin_token))
                    if r.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"pollchat serve did not come up:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None

    # API helpers (direct, not through any proxy)

    def create_user(self, name: str, role: str = "member") -> str:
        with httpx.Client(base_url=self.url, timeout=10.0) as http:
            r = http.post("/api/v1/admin/users", json={"name": name, "role": role}, headers=auth(self.admin_token))
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    def create_session(self, token: str, session_id: str) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as http:
            r = http.post(f"{API}/sessions", json={"id": session_id}, headers=auth(token))
        assert r.status_code == 201, r.text

    def send(self, token: str, session_id: str, content: str) -> dict[str, Any]:
        with httpx.Client(base_url=self.url, timeout=10.0) as http:
            r = http.post(f"{API}/messages", json={"content": content, "session_id": session_id}, headers=auth(token))
        assert r.status_code == 201, r.text
        message: dict[str, Any] = r.json()["message"]
        return message

    def drain(self, session_id: str, token: str | None = None) -> list[dict[str, Any]]:
        """Every message of a session in its latest state, following cursors from the start."""
        out: list[dict[str, Any]] = []
        since: str | None = None
        with httpx.Client(base_url=self.url, timeout=10.0, headers=auth(token or self.admin_token)) as http:
            while True:
                params = {"session_id": session_id, "limit": 500, **({"since": since} if since else {})}
                r = http.get(f"{API}/messages", params=params)
                assert r.status_code == 200, r.text
                body = r.json()
                out += body["messages"]
                since = body["cursor"]
                if not body["has_more"]:
                    return out


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``server_factory(assistant=...)``: a started server of this test's own, killed at teardown."""
    servers: list[ServerProcess] = []

    def make(*, assistant: str = "none", env: dict[str, str] | None = None) -> ServerProcess:
        directory = tmp_path / f"server{len(servers)}"
        directory.mkdir()
        server = ServerProcess(directory, assistant=assistant, env=env)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server without an assistant, shared by a module's tests that do not stop it."""
    server = ServerProcess(tmp_path_factory.mktemp("quiet"))
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the echo assistant, shared by a module's tests."""
    server = ServerProcess(tmp_path_factory.mktemp("echo"), assistant="echo")
    try:
        server.start()
        yield server
    finally:
        server.kill()


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
