"""Real ``pollchat serve`` processes for the tests (and ``bench/scaleout.py``, through ``tests/scaleout/cluster.py``).

A ``ServerProcess`` is one server bound to one loopback port and one database: ``start()`` runs
``pollchat serve`` in a process group of its own and waits for ``GET /api/v1/health``; ``kill()``
(SIGKILL to the group) or ``stop()`` (a signal, then the exit status) end it, and ``start()``
again brings it back on the same port and database. Each run writes its stdout and stderr to
files of its own in the server's directory; ``output()`` shows them in failure messages.

The server always imports the ``pollchat`` this test run imports: its ``PYTHONPATH`` starts
with that package's root, so neither a relative ``PYTHONPATH`` (the server runs in another
directory) nor another checkout's editable install can slip in other code. Outside
``POLLCHAT_*`` variables never reach it; only the defaults below and what a test passes do.

A ``ServerFactory`` makes the servers of one test (or module, or package) and kills and reaps
every one of them at ``close()``, whatever happened. The ``servers`` fixture in
``tests/conftest.py`` is one. Plain classes, no pytest: the benchmark imports this module too.
Methods are synchronous, so browser tests can call them; async tests run ``start`` through
``ServerFactory.start`` or ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import httpx

import pollchat

HOST = "127.0.0.1"
HEALTH = "/api/v1/health"
API = "/api/v1/admin/chat"
START_TIMEOUT = 30.0
OUTPUT_TAIL = 4000
# Quiet and unlimited unless a test says otherwise: no assistant answering, no rate limit refusing.
SERVER_DEFAULTS: Mapping[str, str] = MappingProxyType(
    {
        "POLLCHAT_ASSISTANT": "none",
        "POLLCHAT_SEND_RATE_LIMIT": "off",
        "POLLCHAT_POLL_RATE_LIMIT": "off",
        "POLLCHAT_LOG_LEVEL": "warning",
    }
)


class ProcessError(RuntimeError):
    """A process exited, or never answered, while a test waited for it to serve."""


class Inherit(enum.Enum):
    """The factory's value, for an option a server may override with None."""

    FACTORY = enum.auto()


FACTORY = Inherit.FACTORY


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def package_path() -> str:
    """``PYTHONPATH`` for a subprocess: the root this run imports ``pollchat`` from, then the rest."""
    root = str(Path(pollchat.__file__).resolve().parents[1])
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return os.pathsep.join([root, *rest])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any ``POLLCHAT_*`` from outside, with the ``pollchat`` under test, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLCHAT_")}
    env["PYTHONPATH"] = package_path()
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def pollchat_command() -> list[str]:
    """The ``pollchat`` console script of the interpreter running the tests (or that interpreter running the CLI)."""
    script = Path(sys.executable).with_name("pollchat")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from pollchat.cli import main; sys.argv[0] = 'pollchat'; sys.exit(main())",
    ]


class Process:
    """A subprocess in its own process group, restartable, each run's stdout and stderr in files of its own.

    The leader is reaped only after its group has had a SIGKILL (``_finish``): while it is an
    unreaped zombie its pid cannot be reused, so the group signal can only reach what it started.
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], directory: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ProcessError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet (checked without reaping it)."""
        if self.proc is None or self.proc.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:  # reaped meanwhile by another thread's _finish
            return False

    def output_paths(self, run: int | None = None) -> tuple[Path, Path]:
        """The stdout and stderr files of run ``run`` (1 is the first; default: the latest)."""
        n = run or self.runs
        return self.directory / f"{self.name}.{n}.out", self.directory / f"{self.name}.{n}.err"

    @property
    def stdout_path(self) -> Path:
        return self.output_paths()[0]

    @property
    def stderr_path(self) -> Path:
        return self.output_paths()[1]

    @property
    def stdout(self) -> str:
        """What the latest run printed on stdout."""
        return _read(self.stdout_path)

    @property
    def stderr(self) -> str:
        """What the latest run printed on stderr."""
        return _read(self.stderr_path)

    def output(self) -> str:
        """The end of both streams of every run, for failure messages."""
        parts = []
        for run in range(1, self.runs + 1):
            for stream, path in zip(("stdout", "stderr"), self.output_paths(run), strict=True):
                parts.append(f"--- {self.name} run {run} {stream} ---\n{_read(path)[-OUTPUT_TAIL:]}")
        return "\n".join(parts)

    def spawn(self) -> None:
        """Start a new run without waiting for anything; the previous run is reaped first."""
        if self.running:
            raise ProcessError(f"{self.name} is running already")
        self._finish()
        self.runs += 1
        stdout, stderr = self.output_paths()
        with stdout.open("wb") as out, stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.directory,
                start_new_session=True,  # its own process group
            )

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process itself (not its group)."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group, without reaping."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group, as in a crash, and reap the process."""
        self._finish()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send ``sig``, wait up to ``timeout`` for the exit, SIGKILL whatever is left; the exit status."""
        self.send_signal(sig)
        self.exited_within(timeout)
        return self._finish()

    def exited_within(self, timeout: float) -> bool:
        """Whether the process ends within ``timeout`` seconds (it is not reaped)."""
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit status once the process has ended (then its group killed, it reaped); None if it still runs."""
        if not await asyncio.to_thread(self.exited_within, timeout):
            return None
        return self._finish()

    def wait_http(self, url: str, timeout: float = START_TIMEOUT) -> None:
        """Until ``url`` answers 200; fails at once, with the output, if the process exits."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while True:
                if not self.running:
                    code = self._finish()
                    raise ProcessError(f"{self.name} exited with {code}:\n{self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ProcessError(f"{url} did not answer 200 within {timeout:g} s:\n{self.output()}")
                time.sleep(0.05)

    def _finish(self) -> int | None:
        """SIGKILL the group and reap the process (once per run); its exit status."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.kill_group(signal.SIGKILL)
            self.proc.wait(timeout=10)
        return self.proc.returncode


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL; None for another database."""
    prefix = "sqlite:///"
    return Path(url.removeprefix(prefix)) if url.startswith(prefix) else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class ServerProcess(Process):
    """``pollchat serve`` on one loopback port and one database; ``kill()`` and ``start()`` again keep both."""

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "server",
        port: int | None = None,
        database_url: str | None = None,
        admin_token: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.database_url = database_url or f"sqlite:///{directory / f'{name}.db'}"
        self.admin_token = admin_token
        argv = [*pollchat_command(), "serve", "--host", HOST, "--port", str(self.port)]
        argv += ["--database", self.database_url, *args]
        token = {"POLLCHAT_ADMIN_TOKEN": admin_token} if admin_token is not None else {}
        super().__init__(name, argv, env=clean_env(**{**SERVER_DEFAULTS, **token, **(env or {})}), directory=directory)

    @property
    def database(self) -> Path | None:
        """The SQLite file, when the database is one."""
        return sqlite_file(self.database_url)

    @property
    def starts(self) -> int:
        """How many times this server was started."""
        return self.runs

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until its health check answers 200 (killed again if it never does)."""
        self.spawn()
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.kill()
            raise

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        self.wait_http(self.url + HEALTH, timeout)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Kill (if it runs) and start again on the same port and database."""
        self.kill()
        self.start(timeout)

    # The API, straight to this server, for setting up and checking what a test did.

    def client(self, token: str | None = None) -> httpx.Client:
        """An httpx client on the server with ``token`` (default: the admin's)."""
        token = token or self.admin_token
        if token is None:
            raise ProcessError(f"{self.name} has no admin token of the tests'")
        return httpx.Client(base_url=self.url, headers=auth(token), timeout=10.0)

    def user(self, name: str, role: str = "member") -> str:
        """Create a user and return its token."""
        with self.client() as http:
            r = http.post("/api/v1/admin/users", json={"name": name, "role": role})
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    create_user = user

    def create_session(self, token: str, session_id: str) -> None:
        with self.client(token) as http:
            r = http.post(f"{API}/sessions", json={"id": session_id})
        assert r.status_code == 201, r.text

    def send(self, token: str, session_id: str, content: str) -> dict[str, Any]:
        """Send one message; the stored message."""
        with self.client(token) as http:
            r = http.post(f"{API}/messages", json={"content": content, "session_id": session_id})
        assert r.status_code == 201, r.text
        message: dict[str, Any] = r.json()["message"]
        return message

    def drain(self, session_id: str, token: str | None = None) -> list[dict[str, Any]]:
        """Every message of a session in its latest state, in cursor order, following cursors from the start."""
        out: list[dict[str, Any]] = []
        since: str | None = None
        with self.client(token) as http:
            while True:
                params: dict[str, str | int] = {"session_id": session_id, "limit": 500}
                if since is not None:
                    params["since"] = since
                r = http.get(f"{API}/messages", params=params)
                assert r.status_code == 200, r.text
                body = r.json()
                out += body["messages"]
                since = body["cursor"]
                if not body["has_more"]:
                    return out

    def messages(self, session_id: str, token: str) -> list[dict[str, Any]]:
        """Every message of a session in the order they were stored, fetched with ``token``.

        A poll answers in change order (a message marked delivered moves to the end), so this
        sorts by the server's timestamp; messages of one batch share it and keep their order.
        Fetching with the owner's token marks nothing the owner wrote.
        """
        return sorted(self.drain(session_id, token), key=lambda m: str(m["timestamp"]))


class ServerFactory:
    """Makes ``pollchat serve`` processes in ``directory`` and kills and reaps all of them at ``close()``.

    Every server gets ``admin_token``, ``env`` and ``args`` unless told otherwise, and the
    factory's own SQLite file unless given a ``database_url``: a second server started on the
    first one's port is that server restarted.
    """

    def __init__(
        self,
        directory: Path,
        *,
        admin_token: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        database_url: str | None = None,
    ) -> None:
        self.directory = directory
        self.admin_token = admin_token
        self.env = dict(env or {})
        self.args = list(args)
        self.database_url = database_url or f"sqlite:///{directory / 'servers.db'}"
        self.started: list[ServerProcess] = []

    @property
    def database(self) -> Path | None:
        """The shared SQLite file, when the database is one."""
        return sqlite_file(self.database_url)

    def server(
        self,
        *,
        name: str | None = None,
        port: int | None = None,
        database_url: str | None = None,
        admin_token: str | None | Literal[Inherit.FACTORY] = FACTORY,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> ServerProcess:
        """A server, not started yet; ``admin_token=None`` gives it none (a first start prints one)."""
        server = ServerProcess(
            self.directory,
            name=name or f"server{len(self.started)}",
            port=port,
            database_url=database_url or self.database_url,
            admin_token=self.admin_token if admin_token is FACTORY else admin_token,
            env={**self.env, **(env or {})},
            args=[*self.args, *args],
        )
        self.started.append(server)
        return server

    def spawn(self, **options: Any) -> ServerProcess:
        """``server(**options)`` started, without waiting for it to serve."""
        server = self.server(**options)
        server.spawn()
        return server

    async def start(self, *, timeout: float = START_TIMEOUT, **options: Any) -> ServerProcess:
        """``server(**options)`` started and healthy (the wait runs in a thread, the event loop runs on)."""
        server = self.server(**options)
        await asyncio.to_thread(server.start, timeout)
        return server

    def output(self) -> str:
        """Every server's output."""
        return "\n".join(server.output() for server in self.started)

    def close(self) -> None:
        """Kill and reap every server this factory made."""
        for server in self.started:
            server.kill()

    def __enter__(self) -> ServerFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    kill_all = close


@contextlib.contextmanager
def serving(directory: Path, **options: Any) -> Iterator[ServerProcess]:
    """One started server for a longer scope (a module's, a package's), killed at exit whatever happened.

    ``options`` are ``ServerProcess``'s.
    """
    server = ServerProcess(directory, **options)
    try:
        server.start()
        yield server
    finally:
        server.kill()
