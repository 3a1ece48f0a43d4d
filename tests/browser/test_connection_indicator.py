"""The connection indicator in the inbox, with no chat open: it says what the server's answers say."""

from __future__ import annotations

import uuid

import pytest

from tests.browser.conftest import PageFactory, ServerProcess

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails) with the reason
    expect = None

pytestmark = pytest.mark.browser

API_ROUTES = "**/api/**"


@pytest.mark.parametrize("role", ["admin", "member"])
def test_indicator_connected_in_the_inbox_without_an_open_chat(
    server: ServerProcess, open_page: PageFactory, role: str
) -> None:
    """Regression: with no chat open the inbox said *Offline* and "Cannot reach the server" although
    every request was answered; it said *Connected* only once a chat was opened."""
    token = server.user(f"{role}-{uuid.uuid4().hex[:6]}", role=role)
    page = open_page(token)
    expect(page.locator("#chat-pane")).to_be_hidden()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=3_000)
    expect(page.locator("#connection-label")).to_have_text("Connected")
    expect(page.locator("#banner")).to_be_hidden(timeout=3_000)

    page.route(API_ROUTES, lambda route: route.abort())
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline", timeout=15_000)
    expect(page.locator("#connection-label")).to_have_text("Offline")
    expect(page.locator("#banner-text")).to_contain_text("Cannot reach the server")
    expect(page.locator("#retry-now")).to_be_visible()

    page.unroute(API_ROUTES)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=20_000)
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#chat-pane")).to_be_hidden()


def test_indicator_retry_now_in_the_inbox_reconnects_at_once(server: ServerProcess, open_page: PageFactory) -> None:
    """*Retry now* with no chat open asks the server again at once instead of waiting out the backoff."""
    page = open_page(server.user(f"rita-{uuid.uuid4().hex[:6]}"))
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=3_000)
    page.route(API_ROUTES, lambda route: route.abort())
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline", timeout=15_000)
    page.unroute(API_ROUTES)
    page.locator("#retry-now").click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=3_000)
    expect(page.locator("#banner")).to_be_hidden()


def test_indicator_connecting_until_the_first_answer(server: ServerProcess, open_page: PageFactory) -> None:
    """Before any request is answered the page says it is connecting, not that the server is unreachable."""
    page = open_page(None)
    page.route(API_ROUTES, lambda route: None)  # held: never answered while the test looks
    page.evaluate("(token) => { location.hash = `token=${token}`; }", server.user(f"nina-{uuid.uuid4().hex[:6]}"))
    page.wait_for_selector("#app:not([hidden])")
    expect(page.locator("#connection")).to_have_attribute("data-state", "polling")
    expect(page.locator("#connection-label")).to_have_text("Connecting…")
    expect(page.locator("#banner")).to_be_hidden()
    page.unroute(API_ROUTES)
