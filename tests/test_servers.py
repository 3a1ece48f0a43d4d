"""The server processes the tests start (``tests/servers.py``): the code they run, restarts, teardown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import pollchat
from tests.servers import ServerFactory, clean_env


def test_clean_env_runs_the_package_under_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server started with a relative ``PYTHONPATH`` in another directory imported the installed
    ``pollchat`` (another checkout's): the browser then tested that checkout's pages."""
    monkeypatch.setenv("PYTHONPATH", "src")
    monkeypatch.setenv("POLLCHAT_ASSISTANT", "echo")
    env = clean_env(EXTRA="1")
    done = subprocess.run(
        [sys.executable, "-c", "import pollchat; print(pollchat.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert Path(done.stdout.strip()).resolve() == Path(pollchat.__file__).resolve()
    assert "POLLCHAT_ASSISTANT" not in env
    assert env["EXTRA"] == "1"


@pytest.mark.integration
def test_server_restarts_on_its_port_and_database_with_output_per_run(servers: ServerFactory) -> None:
    server = servers.server()
    server.start()
    token = server.user("kept")
    pid, port = server.pid, server.port
    server.kill()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing of the group is left
    server.start()
    assert (server.port, server.starts) == (port, 2)
    with server.client(token) as http:
        assert http.get("/api/v1/admin/users/me").json()["user"]["name"] == "kept"
    assert server.output_paths(1) != server.output_paths(2)
    assert "run 1" in server.output() and "run 2" in server.output()
    assert server.stop() == 0, server.output()


@pytest.mark.integration
async def test_factory_close_kills_and_reaps_every_server(servers: ServerFactory) -> None:
    serving = await servers.start()
    starting = servers.spawn()
    servers.close()
    for server in (serving, starting):
        assert server.proc is not None and server.proc.returncode == -signal.SIGKILL
        assert not server.running
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=serving.url) as http:
            await http.get("/api/v1/health")
    assert await asyncio.wait_for(serving.wait_exit(1), 5) == -signal.SIGKILL
