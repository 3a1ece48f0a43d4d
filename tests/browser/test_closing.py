"""Closing a chat is final for its member; operators may reopen it."""

from __future__ import annotations

import uuid

import pytest

from tests.browser.conftest import PageFactory
from tests.conftest import ADMIN_TOKEN, API
from tests.servers import ServerProcess

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails) with the reason
    pass

pytestmark = pytest.mark.browser


def test_member_who_closed_a_chat_gets_no_reopen_and_an_operator_may_reopen_it(
    server: ServerProcess, open_page: PageFactory
) -> None:
    """A member could reopen a session an operator had closed."""
    member = server.user(f"lena-{uuid.uuid4().hex[:6]}")
    sid = f"closing-{uuid.uuid4().hex[:8]}"
    page = open_page(member, sid)
    page.locator("#input").fill("hello")
    page.locator("#input").press("Enter")
    expect(page.locator("#close-session")).to_have_text("Close", timeout=20_000)
    page.locator("#close-session").click()
    expect(page.locator("#chat-status")).to_have_text("closed")
    expect(page.locator("#close-session")).to_be_hidden()
    expect(page.locator("#composer-note")).to_contain_text("Start a new chat")
    expect(page.locator("#input")).to_be_disabled()
    with server.client(ADMIN_TOKEN) as http:
        assert http.patch(f"{API}/sessions/{sid}", json={"status": "active"}).status_code == 200
    expect(page.locator("#chat-status")).to_have_text("active", timeout=20_000)
    expect(page.locator("#input")).to_be_enabled()
