"""``/docs`` works without the internet: Swagger UI comes from the package, not a CDN."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser


def test_docs_list_the_operations_with_every_non_local_request_blocked(browser: Any, server: Any) -> None:
    """``/docs`` was a blank page without internet: Swagger UI loaded from a CDN."""
    context = browser.new_context()
    outside: list[str] = []

    def only_local(route: Any) -> None:
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/docs")
        page.wait_for_selector("text=Poll for messages", timeout=20_000)
        assert page.locator("text=Send a message").count() >= 1
        assert page.locator("text=Send several messages in order").count() >= 1
        assert outside == []
    finally:
        context.close()
