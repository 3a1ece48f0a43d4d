"""Process helpers for the scale-out suite and ``bench/scaleout.py``: a fresh PostgreSQL database,
``pollchat serve`` instances on it, and nginx in front of them with deploy/nginx.conf.

Plain classes and coroutines, no pytest: the benchmark imports this module as it is. The
instances are ``tests.servers``'s ``ServerProcess``es and nginx runs on its ``Process``: every
process in its own process group on a free loopback port, stopped by its own id.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.servers import API, HEALTH, HOST, Process, ServerFactory, ServerProcess, auth, free_port

__all__ = ["API", "HEALTH", "HOST", "Instance", "auth"]

# The instances are the shared server processes; the name stays for the modules that use it.
Instance = ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_NGINX = REPO_ROOT / "deploy" / "nginx.conf"
PG_SERVER = os.environ.get("POLLCHAT_SCALEOUT_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
NGINX = os.environ.get("POLLCHAT_NGINX", "/usr/sbin/nginx")
# pg_stat_activity rows of the instances' LISTEN connections: they run LISTEN once, then a
# "SELECT 1" every 5 s to notice a dead link. Pooled connections end each use with asyncpg's
# reset query instead, so they never sit idle on either of these.
LISTENER_BACKENDS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid != pg_backend_pid()"
    " AND (query LIKE 'LISTEN %' OR (query = 'SELECT 1' AND state = 'idle'))"
)


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
        super().__init__("nginx", argv, env=dict(os.environ), directory=self.workdir)

    def start(self, timeout: float = 15.0) -> None:
        self.spawn()
        self.wait_http(self.url + HEALTH, timeout)

    def close(self, keep_log: Path | None = None) -> None:
        """Stop nginx and remove its directory, keeping a copy of its error log at ``keep_log``."""
        self.stop(signal.SIGTERM, timeout=5.0)
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
        self.servers = ServerFactory(workdir, admin_token=self.token, env=env, args=args, database_url=self.db.url)
        self.instances = [self.servers.server(name=f"pollchat-{i + 1}") for i in range(instances)]
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
            await asyncio.gather(*(asyncio.to_thread(i.start) for i in self.instances))
            if self.nginx is not None:
                await asyncio.to_thread(self.nginx.start)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        try:
            if self.nginx is not None:
                await asyncio.to_thread(self.nginx.close, keep_log=self.workdir / "nginx-error.log")
        finally:
            try:
                await asyncio.gather(*(asyncio.to_thread(i.stop, timeout=10.0) for i in self.instances))
            finally:
                self.servers.close()
                await self.db.drop()

    def logs(self) -> str:
        parts = [f"== {i.name} ==\n{i.output()}" for i in self.instances]
        if self.nginx is not None:
            parts.append(f"== nginx error.log ==\n{self.nginx.error_log()[-4000:]}")
        return "\n".join(parts)
