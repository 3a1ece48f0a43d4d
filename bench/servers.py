"""Server subprocesses on free loopback ports: pollchat and the bare ASGI ceiling."""

from __future__ import annotations

import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
ACCESS_LOG_LINE = re.compile(r'"(GET|POST|PATCH|PUT|DELETE|HEAD) /')
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def raise_nofile_to_hard() -> None:
    """Lift this process's soft limit on open files to its hard limit (a ``preexec_fn`` for servers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_files_limit() -> int:
    """This process's soft limit on open files (what a server spawned from it gets, at most the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard if soft == resource.RLIM_INFINITY else soft


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server subprocess whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self, name: str, argv: Sequence[str], *, port: int, env: Mapping[str, str], log_path: Path, ready_path: str
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = dict(env)
        self.log_path = log_path
        self.ready_path = ready_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until ``ready_path`` answers 200."""
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Thousands of parked polls need as many sockets: take the hard limit on open files.
                preexec_fn=raise_nofile_to_hard,
            )
        deadline = time.monotonic() + timeout
        url = f"http://{HOST}:{self.port}{self.ready_path}"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout:g} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def rss_kib(self) -> int:
        """The server's resident set size now, in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.name} (pid {self.pid})")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used so far (``/proc/<pid>/stat``)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def log_text(self) -> str:
        """Everything the server printed."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server printed."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def access_log_lines(self) -> int:
        """How many lines of the output look like uvicorn access-log lines."""
        return sum(1 for line in self.log_text().splitlines() if ACCESS_LOG_LINE.search(line))

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("POLLCHAT_")}


def pollchat_command(src: Path | None = None) -> list[str]:
    """The installed ``pollchat`` console script next to this interpreter; the module when ``src`` is given."""
    script = Path(sys.executable).parent / "pollchat"
    if src is None and script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from pollchat.cli import main; sys.argv[0] = 'pollchat'; main()"]


def pollchat_server(
    workdir: Path, *, max_parked: int, src: Path | None = None, name: str = "pollchat"
) -> tuple[ServerProcess, str]:
    """``pollchat serve`` on a fresh SQLite file, rate limits off, no assistant; and the admin token.

    With ``src`` (a directory holding the ``pollchat`` package), that code is served instead
    of the installed one: put first on ``PYTHONPATH``, it wins over the editable install.
    ``name`` names the process, its log and (unless it is the default) its database file, so
    several servers can share ``workdir``.
    """
    token = secrets.token_urlsafe(32)
    port = free_port()
    env = _clean_env()
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src.resolve()), env.get("PYTHONPATH")]))
    env |= {
        "POLLCHAT_ADMIN_TOKEN": token,
        "POLLCHAT_SEND_RATE_LIMIT": "off",
        "POLLCHAT_POLL_RATE_LIMIT": "off",
        "POLLCHAT_ASSISTANT": "none",
        "POLLCHAT_MAX_PARKED_POLLS_PER_USER": str(max_parked),
    }
    argv = [
        *pollchat_command(src),
        "serve",
        "--database",
        f"sqlite:///{workdir / ('bench.db' if name == 'pollchat' else name + '.db')}",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    server = ServerProcess(
        name, argv, port=port, env=env, log_path=workdir / f"{name}.log", ready_path="/api/v1/health"
    )
    return server, token


def bare_server(workdir: Path) -> ServerProcess:
    """``bench.bare_app`` on uvicorn, configured like ``pollchat.server.run`` but with the access log off."""
    return asgi_server(workdir, "bare", "bench.bare_app:app", ready_path="/")


def asgi_server(workdir: Path, name: str, app: str, *, ready_path: str) -> ServerProcess:
    """The ASGI app ``app`` (``module:attribute`` under the repository) on the same uvicorn as pollchat.

    Configured like ``pollchat.server.run`` (one worker, uvloop and httptools when installed,
    keep-alive 75 s, no server header), with the access log off.
    """
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(REPO_ROOT),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
        "--no-server-header",
        "--timeout-keep-alive",
        "75",
    ]
    return ServerProcess(
        name, argv, port=port, env=_clean_env(), log_path=workdir / f"{name}.log", ready_path=ready_path
    )
