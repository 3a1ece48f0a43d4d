"""Browser fixtures: a real ``pollchat serve`` process and Debian's Chromium driven by Playwright.

The server is ``tests.servers``'s: its own process group on a free loopback port with a fresh
SQLite file, so a test can ``kill()`` it mid-chat and ``start()`` it again on the same port and
database, and it runs the ``pollchat`` under test (the pages and scripts the browser loads). The
server and the browser start once for the package; every page gets a context of its own (its
own localStorage), closed at the end of its test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, missing
from tests.servers import ServerProcess, serving

__all__ = ["PageFactory", "ServerProcess"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A running ``pollchat serve`` with ``ADMIN_TOKEN`` for the whole package; killed at teardown."""
    with serving(tmp_path_factory.mktemp("pollchat-server"), admin_token=ADMIN_TOKEN) as process:
        yield process


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
