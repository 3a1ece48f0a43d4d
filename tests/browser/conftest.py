"""Browser fixtures: a real ``pollchat serve`` process and Debian's Chromium driven by Playwright.

The server runs in its own process group on a free loopback port with a fresh SQLite file, so a
test can SIGKILL it mid-chat and start it again on the same port and database. The server and
the browser start once for the package; every page gets a context of its own (its own
localStorage), closed at the end of its test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import pollchat
from tests.conftest import ADMIN_TOKEN, API, missing

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT = 20.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def source_path() -> str:
    """``PYTHONPATH`` for the server: the tree this test run imports ``pollchat`` from, first.

    The server runs in another directory, where a relative ``PYTHONPATH`` (``src``) names
    nothing, and the installed ``pollchat`` may be another checkout's: the browser would then
    load that checkout's pages and scripts instead of the ones under test.
    """
    package_root = str(Path(pollchat.__file__).resolve().parents[1])
    return os.pathsep.join([package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])


def pollchat_command() -> list[str]:
    """The installed ``pollchat`` next to this interpreter."""
    script = shutil.which("pollchat", path=str(Path(sys.executable).parent))
    if script is not None:
        return [script]
    return [sys.executable, "-c", "from pollchat.cli import main; main()"]


class ServerProcess:
    """``pollchat serve`` in a subprocess (own process group), restartable on the same port and database."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = ADMIN_TOKEN
        self.log_path = directory / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("POLLCHAT_")},
            "POLLCHAT_DATABASE_URL": f"sqlite:///{directory / 'chat.db'}",
            "POLLCHAT_ADMIN_TOKEN": ADMIN_TOKEN,
            "POLLCHAT_ASSISTANT": "none",
            "POLLCHAT_SEND_RATE_LIMIT": "off",
            "POLLCHAT_POLL_RATE_LIMIT": "off",
            "POLLCHAT_LOG_LEVEL": "warning",
            "PYTHONPATH": source_path(),
        }

    def start(self) -> None:
        """Start the server and wait until it answers its health check."""
        assert self._process is None, "already running"
        self._log = open(self.log_path, "ab")  # closed in _reap
        self._process = subprocess.Popen(
            [*pollchat_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            cwd=self.directory,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = self.log_path.read_text(errors="replace")
                self._reap()
                raise RuntimeError(f"pollchat serve exited at start:\n{log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/v1/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"pollchat serve did not become healthy:\n{self.log_path.read_text(errors='replace')}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no graceful shutdown, as in a crash."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=10)
        self._reap()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._reap()

    def restart(self) -> None:
        """Kill and start again on the same port and database."""
        self.kill()
        self.start()

    def _reap(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    # the API, for setting up and checking what the browser did

    def client(self, token: str | None = None) -> httpx.Client:
        """An httpx client on the server with ``token`` (default: the admin's)."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token or self.admin_token}"}, timeout=10.0
        )

    def user(self, name: str, role: str = "member") -> str:
        """Create a user and return its token."""
        with self.client() as http:
            r = http.post("/api/v1/admin/users", json={"name": name, "role": role})
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    def messages(self, session_id: str, token: str) -> list[dict[str, Any]]:
        """Every message of a session in the order they were stored, fetched with ``token``.

        A poll answers in change order (a message marked delivered moves to the end), so this
        sorts by the server's timestamp; messages of one batch share it and keep their order.
        Fetching with the owner's token marks nothing the owner wrote.
        """
        out: list[dict[str, Any]] = []
        since: str | None = None
        with self.client(token) as http:
            while True:
                params = {"session_id": session_id, "limit": 500, **({"since": since} if since else {})}
                r = http.get(f"{API}/messages", params=params)
                assert r.status_code == 200, r.text
                body = r.json()
                out += body["messages"]
                since = body["cursor"]
                if not body["has_more"]:
                    return sorted(out, key=lambda m: str(m["timestamp"]))


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A running ``pollchat serve``; killed at teardown."""
    process = ServerProcess(tmp_path_factory.mktemp("pollchat-server"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless; skips (or fails under POLLCHAT_REQUIRE_ALL=1) without it."""
    if not os.path.exists(CHROMIUM):
        missing(f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


PageFactory = Callable[..., Any]


@pytest.fixture
def open_page(browser: Any, server: ServerProcess) -> Iterator[PageFactory]:
    """``open_page(token, session=None, width=1100, height=760, timezone_id=None)``: a page signed in by its link.

    Without a token the page opens signed out. Each page has a context of its own (its own
    localStorage, locale en-US); errors thrown in a page fail the test.
    """
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(
        token: str | None,
        session: str | None = None,
        *,
        width: int = 1100,
        height: int = 760,
        timezone_id: str | None = None,
    ) -> Any:
        context = browser.new_context(
            viewport={"width": width, "height": height}, locale="en-US", timezone_id=timezone_id
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        if token is None:
            page.goto(f"{server.url}/")
            page.wait_for_selector("#signin:not([hidden])")
            return page
        fragment = f"#token={token}" + (f"&session={session}" if session else "")
        page.goto(f"{server.url}/{fragment}")
        page.wait_for_selector("#app:not([hidden])")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"errors in the page: {errors}"
