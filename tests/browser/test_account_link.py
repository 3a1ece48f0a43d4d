"""Sign-in links while somebody is signed in: a link for another account asks before switching."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.browser.conftest import PageFactory, ServerProcess
from tests.conftest import API

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails) with the reason
    expect = None

pytestmark = pytest.mark.browser


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def visit(page: Any, server: ServerProcess, fragment: str, how: str) -> None:
    """Follow a sign-in link: in the open tab (the address changes) or as a fresh load of the page."""
    if how == "fresh load":
        page.goto("about:blank")
    page.goto(f"{server.url}/#{fragment}")
    page.wait_for_selector("#app:not([hidden])")


def signed_in_as(page: Any, user: str, token: str) -> None:
    expect(page.locator("#me")).to_have_text(f"{user} · member")
    assert page.evaluate("JSON.parse(localStorage.getItem('pollchat:token'))") == token


def session_exists(server: ServerProcess, token: str, sid: str) -> bool:
    with server.client(token) as http:
        r: httpx.Response = http.get(f"{API}/sessions/{sid}")
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


@pytest.mark.parametrize("how", ["same tab", "fresh load"])
def test_link_for_another_account_declined_keeps_the_signed_in_user(
    server: ServerProcess, open_page: PageFactory, how: str
) -> None:
    """Regression: a link with bob's token silently replaced alice's; what she typed next went to bob's session."""
    alice, bob = name("alice"), name("bob")
    alice_token, bob_token = server.user(alice), server.user(bob)
    sid = f"support-desk-{uuid.uuid4().hex[:6]}"
    page = open_page(alice_token)
    signed_in_as(page, alice, alice_token)

    visit(page, server, f"token={bob_token}&session={sid}", how)
    dialog = page.locator("#choice")
    expect(dialog).to_be_visible()
    assert bob_token not in page.url
    assert bob_token not in page.evaluate("location.href")
    expect(page.locator("#choice-text")).to_contain_text(bob)
    expect(page.locator("#choice-text")).to_contain_text(alice)
    expect(page.locator("#choice-text")).to_contain_text(sid)
    expect(page.locator("#choice-decline")).to_have_text(f"Stay as {alice}")
    expect(page.locator("#choice-accept")).to_have_text(f"Switch to {bob}")

    page.locator("#choice-decline").click()
    expect(dialog).to_be_hidden()
    signed_in_as(page, alice, alice_token)
    page.wait_for_timeout(500)
    signed_in_as(page, alice, alice_token)
    assert not session_exists(server, bob_token, sid)

    # What alice writes now is hers.
    page.locator("#new-session button").click()
    page.locator("#input").fill("still alice")
    page.locator("#input").press("Enter")
    mine = page.locator("#messages li.msg").filter(has_text="still alice")
    expect(mine).to_have_attribute("data-status", "sent")
    current = page.evaluate("window.pollchat.current")
    assert [m["content"] for m in server.messages(current, alice_token)] == ["still alice"]


@pytest.mark.parametrize("how", ["same tab", "fresh load"])
def test_link_for_another_account_accepted_switches_and_opens_the_session(
    server: ServerProcess, open_page: PageFactory, how: str
) -> None:
    alice, bob = name("alice"), name("bob")
    alice_token, bob_token = server.user(alice), server.user(bob)
    sid = f"support-desk-{uuid.uuid4().hex[:6]}"
    page = open_page(alice_token)
    signed_in_as(page, alice, alice_token)

    visit(page, server, f"token={bob_token}&session={sid}", how)
    expect(page.locator("#choice")).to_be_visible()
    assert bob_token not in page.evaluate("location.href")
    page.locator("#choice-accept").click()
    expect(page.locator("#choice")).to_be_hidden()
    signed_in_as(page, bob, bob_token)
    expect(page.locator("#chat-title")).to_have_text(sid)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=15_000)
    assert session_exists(server, bob_token, sid)


def test_link_with_the_same_users_new_token_switches_without_asking(
    server: ServerProcess, open_page: PageFactory
) -> None:
    """A link with another token of the signed-in user (a rotated one) signs in as today: nobody to ask about."""
    alice = name("alice")
    old_token = server.user(alice)
    page = open_page(old_token)
    signed_in_as(page, alice, old_token)
    with server.client(old_token) as http:
        r = http.post("/api/v1/admin/users/me/token")
    assert r.status_code == 200, r.text
    new_token = r.json()["token"]
    sid = f"desk-{uuid.uuid4().hex[:6]}"

    visit(page, server, f"token={new_token}&session={sid}", "same tab")
    expect(page.locator("#chat-title")).to_have_text(sid)
    signed_in_as(page, alice, new_token)
    expect(page.locator("#choice")).to_be_hidden()
    assert new_token not in page.evaluate("location.href")
    assert session_exists(server, new_token, sid)


def test_link_while_signed_out_signs_in_without_asking(server: ServerProcess, open_page: PageFactory) -> None:
    bob = name("bob")
    token = server.user(bob)
    page = open_page(None)
    sid = f"desk-{uuid.uuid4().hex[:6]}"
    visit(page, server, f"token={token}&session={sid}", "same tab")
    signed_in_as(page, bob, token)
    expect(page.locator("#chat-title")).to_have_text(sid)
    expect(page.locator("#choice")).to_be_hidden()


def test_link_with_a_refused_token_keeps_the_signed_in_user(server: ServerProcess, open_page: PageFactory) -> None:
    alice = name("alice")
    token = server.user(alice)
    page = open_page(token)
    signed_in_as(page, alice, token)
    visit(page, server, "token=not-a-token-of-anybody&session=elsewhere", "same tab")
    expect(page.locator("#choice")).to_be_visible()
    expect(page.locator("#choice-text")).to_contain_text("not accepted")
    expect(page.locator("#choice-accept")).to_be_hidden()
    page.locator("#choice-decline").click()
    signed_in_as(page, alice, token)
    assert page.evaluate("window.pollchat.current") is None
