"""Process helpers for the scale-out suite and ``bench/scaleout.py``: a fresh PostgreSQL database,
``pollchat serve`` instances on it, and nginx in front of them with deploy/nginx.conf.

Plain classes and coroutines, no pytest: the benchmark imports this module as it is. Every
process runs in its own process group on a free loopback port, and is stopped by its own id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_NGINX = REPO_ROOT / "deploy" / "nginx.conf"
PG_SERVER = os.environ.get("POLLCHAT_SCALEOUT_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
NGINX = os.environ.get("POLLCHAT_NGINX", "/usr/sbin/nginx")
API = "/api/v1/admin/chat"
HEALTH = "/api/v1/health"
# pg_stat_activity rows of the instances' LISTEN connections: they run LISTEN once, then a
# "SELECT 1" every 5 s to notice a dead link. Pooled connections end each use with asyncpg's
# reset query instead, so they never sit idle on either of these.
LISTENER_BACKENDS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid != pg_backend_pid()"
    " AND (query LIKE 'LISTEN %' OR (query = 'SELECT 1' AND state = 'idle'))"
)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def missing_services(*, nginx: bool = True, redis: bool = False, pg_restart: bool = False) -> str | None:
    """Why the scale-out setup cannot run here, or None when everything it needs answers."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[postgres]')"
    try:
        conn = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=3)
        await conn.close()
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {PG_SERVER} is unreachable: {exc}"
    if nginx and not (os.path.isfile(NGINX) and os.access(NGINX, os.X_OK)):
        return f"nginx is not installed at {NGINX}"
    if redis:
        try:
            import redis as _redis  # noqa: F401
        except ImportError:
            return "the redis client is not installed (pip install -e '.[redis]')"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(REDIS_HOST, REDIS_PORT), 3)
            writer.write(b"PING\r\n")
            answer = await asyncio.wait_for(reader.readline(), 3)
            writer.close()
            await writer.wait_closed()
            if not answer.startswith(b"+PONG"):
                return f"Redis at {REDIS_HOST}:{REDIS_PORT} answered {answer!r}"
        except (OSError, TimeoutError) as exc:
            return f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable: {exc}"
    if pg_restart and (shutil.which("pg_ctlcluster") is None or not postgres_clusters()):
        return "pg_ctlcluster (to restart PostgreSQL) is missing"
    return None


def postgres_clusters() -> list[str]:
    """The PostgreSQL versions with a cluster under /etc/postgresql."""
    try:
        return sorted(os.listdir("/etc/postgresql"))
    except FileNotFoundError:
        return []


async def restart_postgres() -> float:
    """Restart the local PostgreSQL cluster; returns how long it took."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        postgres_clusters()[-1],
        "main",
        "restart",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"pg_ctlcluster restart failed ({proc.returncode}): {output.decode(errors='replace')}")
    return time.monotonic() - started


class Database:
    """A fresh database on the local PostgreSQL, dropped (forcefully) by ``drop``."""

    def __init__(self, prefix: str = "pollchat_scaleout") -> None:
        self.name = f"{prefix}_{secrets.token_hex(5)}"
        self.url = f"{PG_SERVER}/{self.name}"

    async def _admin(self) -> Any:
        import asyncpg

        return await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=10)

    async def create(self) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()

    async def drop(self) -> None:
        # PostgreSQL may still be coming back from a restart: try for a while.
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = await self._admin()
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                finally:
                    await conn.close()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """Run one query on this database (a connection of its own)."""
        import asyncpg

        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def listener_pids(self) -> list[int]:
        """Backend pids of the instances' LISTEN connections (see ``LISTENER_BACKENDS``)."""
        return [r["pid"] for r in await self.fetch(LISTENER_BACKENDS, self.name)]

    async def kill_listeners(self) -> list[int]:
        """``pg_terminate_backend`` every LISTEN connection on this database; returns their pids."""
        pids = await self.listener_pids()
        if pids:
            await self.fetch("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
        return pids


class Process:
    """A subprocess in its own process group, output appended to a log file, restartable."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is running already")
        with self.log_path.open("ab") as log:
            log.write(f"\n--- {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group
            )

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit status, or None if it is still running after ``timeout``."""
        if self.proc is None:
            return None
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return code

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the main process only."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL the process group (the process and any children); reaped by ``reap``."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def kill(self) -> None:
        """SIGKILL, now, and reap."""
        self.kill_group()
        await self.reap()

    async def reap(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        while proc.poll() is None:
            await asyncio.sleep(0.01)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """``sig``, then SIGKILL to the group if it lingers."""
        if self.proc is None:
            return
        self.send_signal(sig)
        if await self.wait_exit(timeout) is None:
            self.kill_group()  # the process and whatever it started (uvicorn or nginx workers)
        await self.reap()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def wait_http(url: str, *, proc: Process, timeout: float = 30.0) -> None:
    """Until ``url`` answers 200; fails early if the process exits."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if not proc.running:
                raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s:\n{proc.log_tail()}")


def pollchat_argv() -> list[str]:
    script = Path(sys.executable).parent / "pollchat"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from pollchat.cli import main; sys.argv[0] = 'pollchat'; main()"]


def pollchat_env(token: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLCHAT_")}
    env |= {
        "POLLCHAT_ADMIN_TOKEN": token,
        "POLLCHAT_ASSISTANT": "none",
        "POLLCHAT_SEND_RATE_LIMIT": "off",
        "POLLCHAT_POLL_RATE_LIMIT": "off",
        "POLLCHAT_LOG_LEVEL": "warning",
    }
    env |= dict(extra or {})
    return env


class Instance(Process):
    """``pollchat serve --port P --database URL``; killable and restartable on the same port."""

    def __init__(
        self,
        name: str,
        *,
        database_url: str,
        token: str,
        workdir: Path,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        argv = [
            *pollchat_argv(),
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--database",
            database_url,
            *args,
        ]
        super().__init__(name, argv, env=pollchat_env(token, env), log_path=workdir / f"{name}.log")
        self.url = f"http://{HOST}:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        self.spawn()
        await wait_http(self.url + HEALTH, proc=self, timeout=timeout)

    async def restart(self, timeout: float = 30.0) -> None:
        """Start again on the same port (after ``kill`` or ``stop``)."""
        await self.start(timeout)


def render_nginx(upstream_ports: Sequence[int], listen_port: int, workdir: Path) -> Path:
    """deploy/nginx.conf with these ports, wrapped like deploy/nginx-main.conf; returns the main file."""
    text = DEPLOY_NGINX.read_text()
    servers = list(re.finditer(r"^(\s*)server 127\.0\.0\.1:800\d( [^;]*)?;$", text, flags=re.MULTILINE))
    if len(servers) != len(upstream_ports):
        raise RuntimeError(f"{DEPLOY_NGINX} has {len(servers)} upstream servers, not {len(upstream_ports)}")
    ports = iter(upstream_ports)
    text = re.sub(
        r"^(\s*)server 127\.0\.0\.1:800\d( [^;]*)?;$",
        lambda m: f"{m.group(1)}server {HOST}:{next(ports)}{m.group(2) or ''};",
        text,
        flags=re.MULTILINE,
    )
    text, listens = re.subn(r"^(\s*)listen 8080;$", rf"\1listen {HOST}:{listen_port};", text, flags=re.MULTILINE)
    if listens != 1:
        raise RuntimeError(f"{DEPLOY_NGINX} has no single 'listen 8080;' line")
    (workdir / "pollchat.conf").write_text(text)
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = workdir / "nginx.conf"
    main.write_text(
        f"""# Generated by tests/scaleout/cluster.py around {DEPLOY_NGINX}.
daemon off;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
worker_processes 1;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    include {workdir / "pollchat.conf"};
}}
"""
    )
    return main


class Nginx(Process):
    """nginx in the foreground (``daemon off``) with a generated config in a temporary directory."""

    def __init__(self, upstream_ports: Sequence[int], *, port: int | None = None) -> None:
        # Its own directory under /tmp, readable by nginx's unprivileged workers.
        self.workdir = Path(tempfile.mkdtemp(prefix="pollchat-nginx-"))
        self.workdir.chmod(0o755)
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        conf = render_nginx(upstream_ports, self.port, self.workdir)
        argv = [NGINX, "-p", f"{self.workdir}/", "-e", str(self.workdir / "error.log"), "-c", str(conf)]
        super().__init__("nginx", argv, env=dict(os.environ), log_path=self.workdir / "output.log")

    async def start(self, timeout: float = 15.0) -> None:
        self.spawn()
        await wait_http(self.url + HEALTH, proc=self, timeout=timeout)

    async def close(self, keep_log: Path | None = None) -> None:
        """Stop nginx and remove its directory, keeping a copy of its error log at ``keep_log``."""
        await self.stop(signal.SIGTERM, timeout=5.0)
        if keep_log is not None:
            keep_log.write_text(self.error_log())
        shutil.rmtree(self.workdir, ignore_errors=True)

    def error_log(self) -> str:
        try:
            return (self.workdir / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Cluster:
    """N pollchat instances on one fresh database, optionally behind nginx."""

    def __init__(
        self,
        workdir: Path,
        *,
        instances: int = 3,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        nginx: bool = True,
    ) -> None:
        self.workdir = workdir
        self.token = secrets.token_urlsafe(24)
        self.db = Database()
        self.instances = [
            Instance(
                f"pollchat-{i + 1}", database_url=self.db.url, token=self.token, workdir=workdir, env=env, args=args
            )
            for i in range(instances)
        ]
        self.nginx = Nginx([i.port for i in self.instances]) if nginx else None

    @property
    def url(self) -> str:
        """Through nginx."""
        if self.nginx is None:
            raise RuntimeError("this cluster has no nginx")
        return self.nginx.url

    @property
    def headers(self) -> dict[str, str]:
        return auth(self.token)

    async def start(self) -> None:
        await self.db.create()
        try:
            await asyncio.gather(*(i.start() for i in self.instances))
            if self.nginx is not None:
                await self.nginx.start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        try:
            if self.nginx is not None:
                await self.nginx.close(keep_log=self.workdir / "nginx-error.log")
        finally:
            try:
                await asyncio.gather(*(i.stop() for i in self.instances))
            finally:
                await self.db.drop()

    def logs(self) -> str:
        parts = [f"== {i.name} ==\n{i.log_tail()}" for i in self.instances]
        if self.nginx is not None:
            parts.append(f"== nginx error.log ==\n{self.nginx.error_log()[-4000:]}")
        return "\n".join(parts)
