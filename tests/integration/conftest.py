"""Real ``pollchat serve`` processes for integration tests.

``servers.start(...)`` runs ``pollchat serve --host 127.0.0.1 --port <free port> --database
sqlite:///<tmp>/x.db`` in its own process group (so a SIGKILL takes every child with it), with
``POLLCHAT_ASSISTANT=none``, rate limits off and a known ``POLLCHAT_ADMIN_TOKEN`` unless told
otherwise, and waits until ``GET /api/v1/health`` answers 200. Every process a test started is
killed and reaped at teardown, whatever happened. These helpers are independent of ``tests/e2e``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, missing

HEALTH = "/api/v1/health"
START_TIMEOUT = 20.0


def pollchat_executable() -> str:
    """The ``pollchat`` console script of the interpreter running the tests."""
    beside = Path(sys.executable).with_name("pollchat")
    if beside.exists():
        return str(beside)
    found = shutil.which("pollchat")
    if found is None:
        missing("the `pollchat` console script is not installed")
    assert found is not None
    return found


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any ``POLLCHAT_*`` from outside, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLCHAT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Server:
    """One ``pollchat serve`` process; its stdout and stderr go to files of its own."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, database: Path, stdout: Path, stderr: Path) -> None:
        self.proc = proc
        self.port = port
        self.database = database
        self.stdout_path = stdout
        self.stderr_path = stderr

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        """Both streams, for failure messages."""
        return f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the server process itself."""
        if self.running:
            self.proc.send_signal(sig)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the server's whole process group."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the process group and reap the process."""
        self.kill_group(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit code once the process has ended, or None if it still runs after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return self.proc.returncode


class ServerFactory:
    """Starts servers for one test and kills every one of them at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.database = directory / "x.db"
        self.started: list[Server] = []

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"

    def command(self, port: int, database_url: str | None = None, args: Sequence[str] = ()) -> list[str]:
        return [
            pollchat_executable(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            database_url or self.database_url,
            *args,
        ]

    def environment(
        self, *, admin_token: str | None = ADMIN_TOKEN, env: dict[str, str] | None = None
    ) -> dict[str, str]:
        base = {
            "POLLCHAT_ASSISTANT": "none",
            "POLLCHAT_SEND_RATE_LIMIT": "off",
            "POLLCHAT_POLL_RATE_LIMIT": "off",
            "POLLCHAT_LOG_LEVEL": "warning",
        }
        if admin_token is not None:
            base["POLLCHAT_ADMIN_TOKEN"] = admin_token
        base.update(env or {})
        return clean_env(**base)

    def spawn(
        self,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        admin_token: str | None = ADMIN_TOKEN,
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> Server:
        """Start a process without waiting for it to serve."""
        port = port or free_port()
        n = len(self.started)
        stdout, stderr = self.directory / f"server{n}.out", self.directory / f"server{n}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = subprocess.Popen(
                list(command) if command is not None else self.command(port, args=args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.environment(admin_token=admin_token, env=env),
                cwd=self.directory,
                start_new_session=True,
            )
        server = Server(proc, port, self.database, stdout, stderr)
        self.started.append(server)
        return server

    async def start(
        self,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        admin_token: str | None = ADMIN_TOKEN,
        env: dict[str, str] | None = None,
        timeout: float = START_TIMEOUT,
    ) -> Server:
        """Start a server and wait until its health check answers 200."""
        server = self.spawn(port=port, args=args, admin_token=admin_token, env=env)
        await wait_healthy(server, timeout=timeout)
        return server

    def kill_all(self) -> None:
        for server in self.started:
            server.kill()


async def wait_healthy(server: Server, *, timeout: float = START_TIMEOUT, url: str | None = None) -> None:
    """Wait until ``server`` answers its health check; fail with its output if it dies or never does."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url or server.url, timeout=2.0) as http:
        while True:
            if not server.running:
                pytest.fail(f"pollchat serve exited with {server.proc.returncode}:\n{server.output()}")
            try:
                if (await http.get(HEALTH)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"pollchat serve was not healthy within {timeout:g} s:\n{server.output()}")
            await asyncio.sleep(0.05)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerFactory]:
    """``await servers.start(...)``: servers on this test's own database, killed at teardown."""
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.kill_all()
