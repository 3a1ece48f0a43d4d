"""One title per session in every view: the chat list, the chat's header and the tab."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.browser.conftest import PageFactory, ServerProcess
from tests.conftest import API

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails) with the reason
    expect = None

pytestmark = pytest.mark.browser


def session_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def titles(page: Any, sid: str) -> dict[str, str]:
    """The session's title as each view shows it: the list, the chat's header, the tab."""
    item = page.locator(f'#sessions button[data-session-id="{sid}"]')
    expect(item).to_have_count(1)
    return {
        "list": item.locator(".session-name").inner_text(),
        "header": page.locator("#chat-title").inner_text(),
        "tab": page.evaluate("document.title").removesuffix(" · pollchat"),
    }


def test_session_title_same_in_every_view_for_a_chat_opened_by_link(
    server: ServerProcess, open_page: PageFactory
) -> None:
    """Regression: a chat opened by a link was titled with the reader's own name ("admin") or with
    its id, depending on whether the reader's profile had loaded when the chat was created."""
    admin = f"ada-{uuid.uuid4().hex[:6]}"
    token = server.user(admin, role="admin")
    page = open_page(token)
    expect(page.locator("#me")).to_have_text(f"{admin} · admin")

    sid = session_id()
    page.goto(f"{server.url}/#session={sid}")
    expect(page.locator("#chat-title")).to_have_text(sid)
    assert titles(page, sid) == {"list": sid, "header": sid, "tab": sid}
    expect(page.locator("#chat-sub")).to_have_text("")
    # The id shows once: as the title, not again beneath it.
    expect(page.locator(f'#sessions button[data-session-id="{sid}"] .session-id')).to_have_count(0)
    with server.client(token) as http:
        assert http.get(f"{API}/sessions/{sid}").json()["session"]["client_name"] is None

    # The same chat opened by a link on a fresh load, before the profile is known, is titled alike.
    other = session_id()
    page.goto("about:blank")
    page.goto(f"{server.url}/#session={other}")
    expect(page.locator("#chat-title")).to_have_text(other)
    assert titles(page, other) == {"list": other, "header": other, "tab": other}
    page.reload()
    expect(page.locator("#chat-title")).to_have_text(other)
    assert titles(page, other) == {"list": other, "header": other, "tab": other}


def test_session_title_named_chat_same_in_every_view(server: ServerProcess, open_page: PageFactory) -> None:
    member = server.user(f"dana-{uuid.uuid4().hex[:6]}")
    operator = server.user(f"otto-{uuid.uuid4().hex[:6]}", role="operator")
    sid = session_id()
    with server.client(member) as http:
        assert http.post(f"{API}/sessions", json={"id": sid, "client_name": "Dana Example"}).status_code == 201

    for token in (member, operator):
        page = open_page(token, sid)
        expect(page.locator("#chat-title")).to_have_text("Dana Example")
        assert titles(page, sid) == {"list": "Dana Example", "header": "Dana Example", "tab": "Dana Example"}
        item = page.locator(f'#sessions button[data-session-id="{sid}"]')
        expect(item.locator(".session-id")).to_have_text(sid)
        expect(page.locator("#chat-sub")).to_contain_text(sid)
