"""Clickjacking: a page of another origin frames the chat page, and the browser refuses to render it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.browser.conftest import PageFactory, ServerProcess

pytestmark = pytest.mark.browser

# A page of the attacker's own, shaped like the chat page: framing it shows that a frame which
# is allowed to render is seen rendering, so an empty victim frame means refused, not unseen.
DECOY = b'<!doctype html><title>decoy</title><div id="app">a page that may be framed</div>'


def attack_page(target: str) -> bytes:
    """Frames the chat page under a decoy, as a clickjacking page would, and notes when each frame loaded."""
    return (
        "<!doctype html><title>win a prize</title>"
        '<iframe name="victim" src="' + target + '" width="800" height="600"'
        ' onload="window.victimLoaded = true"></iframe>'
        '<iframe name="control" src="/decoy" onload="window.controlLoaded = true"></iframe>'
    ).encode()


@pytest.fixture
def attacker(server: ServerProcess) -> Iterator[str]:
    """Another origin (another loopback port) serving the attack page at ``/`` and the decoy at ``/decoy``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = DECOY if self.path == "/decoy" else attack_page(f"{server.url}/")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def frame(page: Any, name: str) -> Any:
    found = page.frame(name=name)
    assert found is not None, f"no frame named {name}"
    return found


def test_chat_page_framed_by_another_origin_does_not_render(
    server: ServerProcess, open_page: PageFactory, attacker: str
) -> None:
    """The page's ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY`` keep it out of other origins' frames."""
    # The victim is signed in on the chat's origin, as when clickjacking pays off.
    page = open_page(server.user(f"vera-{uuid.uuid4().hex[:6]}"))
    assert attacker != server.url

    page.goto(attacker)
    page.wait_for_function("window.victimLoaded === true && window.controlLoaded === true")
    page.wait_for_timeout(500)  # time for the page's scripts, had any run

    control = frame(page, "control")
    assert control.query_selector("#app") is not None, "the decoy frame should render"
    victim = frame(page, "victim")
    assert victim.query_selector("#app") is None
    assert victim.query_selector("#signin") is None
    assert victim.query_selector("#messages") is None
    assert not victim.url.startswith(server.url), f"the chat page loaded in the frame: {victim.url}"
