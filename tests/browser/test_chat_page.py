"""The chat page in real Chromium: two sides chatting, outages, offline sends, crashes, XSS, phones."""

from __future__ import annotations

import base64
import os
import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.browser.conftest import PageFactory
from tests.conftest import API
from tests.servers import ServerProcess

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails) with the reason
    expect = None

pytestmark = pytest.mark.browser

# Records every delivery status each message element goes through, in order (a poll of the
# DOM from Python could miss a status that lasted only a few milliseconds).
STATUS_RECORDER = """() => {
  const history = new Map();
  const note = (li, value) => {
    const key = li.dataset.key;
    if (!key || value === null || value === undefined) return;
    const list = history.get(key) || [];
    if (list[list.length - 1] !== value) list.push(value);
    history.set(key, list);
  };
  new MutationObserver((records) => {
    for (const record of records) {
      if (record.type === "attributes" && record.target.matches("li.msg")) {
        note(record.target, record.oldValue);
        note(record.target, record.target.dataset.status);
      }
    }
  }).observe(document.getElementById("messages"), {
    subtree: true, attributes: true, attributeOldValue: true, attributeFilter: ["data-status"],
  });
  window.statusHistory = (key) => history.get(key) || [];
}"""


def session_id() -> str:
    return f"b-{uuid.uuid4().hex[:12]}"


def message(page: Any, text: str) -> Any:
    """The message element whose content is exactly ``text``."""
    return page.locator("#messages li.msg").filter(has=page.locator(".content").get_by_text(text, exact=True))


def send(page: Any, text: str) -> None:
    """Type ``text`` into the composer and press Enter."""
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")


def contents(page: Any) -> list[str]:
    """Every message's text, in the order shown."""
    texts: list[str] = page.locator("#messages li.msg .content").all_text_contents()
    return texts


def expect_contents(page: Any, texts: list[str]) -> None:
    """Wait until the page shows exactly these messages, in this order."""
    expect(page.locator("#messages li.msg .content")).to_have_text(texts)


def connected(page: Any, timeout: float = 15_000) -> None:
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=timeout)


def set_hidden(page: Any, hidden: bool) -> None:
    """Make the page believe its tab is hidden (or visible again), as when the user switches tabs."""
    page.evaluate(
        """(hidden) => {
      const state = hidden ? "hidden" : "visible";
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
      Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
      document.dispatchEvent(new Event("visibilitychange"));
    }""",
        hidden,
    )


def save_side_by_side(pages: list[tuple[str, Any]], path: Path) -> None:
    """One picture of several pages next to each other, each under a caption."""
    figures = "".join(
        f'<figure><figcaption>{caption}</figcaption><img src="data:image/png;base64,'
        f'{base64.b64encode(page.screenshot()).decode()}"></figure>'
        for caption, page in pages
    )
    size = pages[0][1].viewport_size
    canvas = pages[0][1].context.new_page()
    canvas.set_viewport_size({"width": (size["width"] + 24) * len(pages) + 24, "height": size["height"] + 72})
    canvas.set_content(
        "<style>body{margin:0;padding:12px;display:flex;gap:24px;background:#d9dee7;font:600 15px system-ui}"
        "figure{margin:0}figcaption{padding:6px 2px 10px}img{display:block;border-radius:8px;"
        "box-shadow:0 2px 10px rgba(0,0,0,.2)}</style>" + figures
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.screenshot(path=str(path))
    canvas.close()


def test_chat_two_sides_see_messages_and_status_marks(server: ServerProcess, open_page: PageFactory) -> None:
    alice = server.user(f"alice-{uuid.uuid4().hex[:6]}")
    olga = server.user(f"olga-{uuid.uuid4().hex[:6]}", role="operator")

    user = open_page(alice, width=960, height=640)
    expect(user.locator("#list-title")).to_have_text("Your chats")
    user.locator("#client-name").fill("Alice Example")
    user.locator("#new-session button").click()
    expect(user.locator("#chat-title")).to_have_text("Alice Example")
    connected(user)
    user.evaluate(STATUS_RECORDER)

    question = "Hello, I need help with my order"
    send(user, question)
    mine = message(user, question)
    expect(mine).to_have_count(1)
    expect(mine).to_have_class(re.compile(r"\bmine\b"))
    expect(mine).to_have_attribute("data-status", "sent")
    expect(mine.locator(".status")).to_contain_text("Sent")
    sid = user.evaluate("window.pollchat.current")

    operator = open_page(olga, width=960, height=640)
    expect(operator.locator("#list-title")).to_have_text("Inbox")
    item = operator.locator(f'#sessions button[data-session-id="{sid}"]')
    expect(item).to_contain_text("Alice Example")
    item.click()
    theirs = message(operator, question)
    expect(theirs).to_have_class(re.compile(r"\btheirs\b"))
    expect(theirs.locator(".author")).to_have_text("Alice Example")

    # The operator fetched it (delivered) and has it on screen (read).
    expect(mine).to_have_attribute("data-status", "read")
    expect(mine.locator(".status")).to_contain_text("Read")
    key = mine.get_attribute("data-key")
    assert user.evaluate("(key) => window.statusHistory(key)", key) == ["sending", "sent", "delivered", "read"]

    operator.evaluate(STATUS_RECORDER)
    operator.locator("#input").fill("Of course. What is the order number?")
    operator.locator("#input").press("Shift+Enter")
    operator.locator("#input").type("(It starts with PC-)")
    operator.locator("#input").press("Enter")
    reply = "Of course. What is the order number?\n(It starts with PC-)"
    expect(operator.locator("#input")).to_have_value("")
    answer = message(user, reply)
    expect(answer).to_have_class(re.compile(r"\btheirs\b"))
    expect(answer.locator(".author")).to_have_text("Assistant")
    expect(user.locator("#announcer")).to_have_text(f"Assistant: {reply}")
    own_reply = message(operator, reply)
    expect(own_reply).to_have_attribute("data-status", "read")
    key = own_reply.get_attribute("data-key")
    history = operator.evaluate("(key) => window.statusHistory(key)", key)
    # The reader's page may fetch and mark it read between two polls of the operator's page.
    assert history in (["sending", "sent", "delivered", "read"], ["sending", "sent", "read"]), history

    code = 'PC-1042, and the error was:\n```\nTraceback (most recent call last):\n  File "shop.py", line 7\n```'
    send(user, code)
    expect(message(operator, 'Traceback (most recent call last):\n  File "shop.py", line 7')).to_have_count(1)
    expect(user.locator("#messages li.msg").last).to_have_attribute("data-status", "read")
    send(operator, "Thanks, I am looking into it now.")
    expect(message(user, "Thanks, I am looking into it now.")).to_have_count(1)

    expect(message(operator, "Thanks, I am looking into it now.")).to_have_attribute("data-status", "read")

    # A hidden tab fetches (delivered) but does not report reading until it is visible again.
    set_hidden(operator, True)
    later = "One more thing: can I still change the delivery address?"
    send(user, later)
    expect(message(operator, later)).to_have_count(1)
    expect(message(user, later)).to_have_attribute("data-status", "delivered")
    operator.wait_for_timeout(800)
    expect(message(user, later)).to_have_attribute("data-status", "delivered")
    shot = os.environ.get("POLLCHAT_SCREENSHOT")
    if shot:
        save_side_by_side([("The client (member)", user), ("The operator's inbox", operator)], Path(shot))
    set_hidden(operator, False)
    expect(message(user, later)).to_have_attribute("data-status", "read")

    stored = server.messages(sid, alice)
    assert [(m["type"], m["status"]) for m in stored] == [
        ("user", "read"),
        ("assistant", "read"),
        ("user", "read"),
        ("assistant", "read"),
        ("user", "read"),
    ]
    assert stored[1]["content"] == reply


def test_chat_sends_typed_while_api_unreachable_arrive_once_in_order_after_reload(
    server: ServerProcess, open_page: PageFactory
) -> None:
    token = server.user(f"bob-{uuid.uuid4().hex[:6]}")
    sid = session_id()
    page = open_page(token, sid)
    connected(page)
    send(page, "before the outage")
    expect(message(page, "before the outage")).to_have_attribute("data-status", "sent")

    page.route("**/api/**", lambda route: route.abort())
    typed = ["first while down", "second while down", "third while down"]
    for text in typed:
        send(page, text)
        expect(message(page, text)).to_have_attribute("data-status", "sending")

    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    expect(page.locator("#banner")).to_be_visible()
    for text in typed:
        expect(message(page, text)).to_have_attribute("data-status", "sending")
    assert contents(page)[-3:] == typed
    page.wait_for_timeout(500)
    assert [m["content"] for m in server.messages(sid, token)] == ["before the outage"]

    page.unroute("**/api/**")
    for text in typed:
        expect(message(page, text)).to_have_attribute("data-status", "sent", timeout=20_000)
    connected(page, timeout=20_000)
    expect_contents(page, ["before the outage", *typed])
    stored = server.messages(sid, token)
    assert [m["content"] for m in stored] == ["before the outage", *typed]
    assert len({m["client_message_id"] for m in stored}) == 4
    assert page.evaluate("Object.keys(localStorage).filter((k) => k.endsWith(':outbox'))") == []


def test_chat_offline_browser_shows_offline_and_sends_when_back(server: ServerProcess, open_page: PageFactory) -> None:
    token = server.user(f"carol-{uuid.uuid4().hex[:6]}")
    sid = session_id()
    page = open_page(token, sid)
    connected(page)

    page.context.set_offline(True)
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    expect(page.locator("#connection-label")).to_have_text("Offline")
    expect(page.locator("#banner-text")).to_contain_text("You are offline")
    send(page, "written on the train")
    pending = message(page, "written on the train")
    expect(pending).to_have_attribute("data-status", "sending")
    expect(page.locator("#banner-text")).to_contain_text("1 message waiting")
    page.wait_for_timeout(1500)
    expect(pending).to_have_attribute("data-status", "sending")
    assert server.messages(sid, token) == []

    page.context.set_offline(False)
    expect(pending).to_have_attribute("data-status", "sent")
    connected(page)
    expect(page.locator("#banner")).to_be_hidden()
    assert [m["content"] for m in server.messages(sid, token)] == ["written on the train"]


def test_chat_recovers_by_itself_when_the_server_is_killed_and_restarted(
    server: ServerProcess, open_page: PageFactory
) -> None:
    token = server.user(f"dave-{uuid.uuid4().hex[:6]}")
    sid = session_id()
    page = open_page(token, sid)
    connected(page)
    send(page, "before the crash")
    expect(message(page, "before the crash")).to_have_attribute("data-status", "sent")

    server.kill()
    expect(page.locator("#connection")).not_to_have_attribute("data-state", "connected")
    send(page, "during the crash")
    expect(message(page, "during the crash")).to_have_attribute("data-status", "sending")
    time.sleep(1)
    server.start()

    expect(message(page, "during the crash")).to_have_attribute("data-status", "sent", timeout=25_000)
    connected(page, timeout=25_000)
    with server.client() as http:
        r = http.post(
            f"{API}/messages", json={"session_id": sid, "content": "back after the restart", "type": "assistant"}
        )
        assert r.status_code == 201, r.text
    expect(message(page, "back after the restart")).to_have_count(1, timeout=20_000)
    expect_contents(page, ["before the crash", "during the crash", "back after the restart"])
    assert [m["content"] for m in server.messages(sid, token)] == contents(page)


def test_chat_shows_markup_as_text_and_runs_nothing(server: ServerProcess, open_page: PageFactory) -> None:
    token = server.user(f"erin-{uuid.uuid4().hex[:6]}")
    sid = session_id()
    page = open_page(token, sid)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    connected(page)

    attack = "<img src=x onerror=alert(1)>"
    send(page, attack)
    expect(message(page, attack)).to_have_attribute("data-status", "sent")
    with server.client() as http:
        for content in ("<script>alert(2)</script>", '<b onmouseover="alert(3)">bold</b>'):
            r = http.post(f"{API}/messages", json={"session_id": sid, "content": content, "type": "assistant"})
            assert r.status_code == 201, r.text
    expect(message(page, '<b onmouseover="alert(3)">bold</b>')).to_have_count(1)
    message(page, '<b onmouseover="alert(3)">bold</b>').hover()
    page.wait_for_timeout(500)

    expect_contents(page, [attack, "<script>alert(2)</script>", '<b onmouseover="alert(3)">bold</b>'])
    assert page.locator("#messages img, #messages script, #messages b").count() == 0
    assert dialogs == []


def test_chat_failed_send_shows_reason_and_does_not_block_later_ones(
    server: ServerProcess, open_page: PageFactory
) -> None:
    token = server.user(f"fred-{uuid.uuid4().hex[:6]}")
    sid = session_id()
    page = open_page(token, sid)
    connected(page)

    too_big = "x" * 40_000
    send(page, too_big)
    failed = page.locator('#messages li.msg[data-status="failed"]')
    expect(failed).to_have_count(1)
    expect(failed.locator(".reason")).to_contain_text("larger than")
    send(page, "a normal message after it")
    expect(message(page, "a normal message after it")).to_have_attribute("data-status", "sent")

    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    expect(failed).to_have_count(1)
    failed.locator("button.retry").click()
    expect(failed).to_have_count(1)
    expect(failed.locator(".reason")).to_contain_text("larger than")
    failed.locator("button.discard").click()
    expect(failed).to_have_count(0)
    assert [m["content"] for m in server.messages(sid, token)] == ["a normal message after it"]


def test_chat_is_usable_on_a_narrow_phone_screen(server: ServerProcess, open_page: PageFactory) -> None:
    token = server.user(f"gina-{uuid.uuid4().hex[:6]}")
    sid = session_id()
    page = open_page(token, sid, width=375, height=700, timezone_id="Asia/Tokyo")
    connected(page)
    expect(page.locator("#sidebar")).to_be_hidden()
    composer = page.locator("#input")
    expect(composer).to_be_visible()
    box = composer.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 700 and box["x"] + box["width"] <= 375

    long_word = "https://example.com/" + "a" * 300
    send(page, f"A long link: {long_word}\nand a second line")
    sent = message(page, f"A long link: {long_word}\nand a second line")
    expect(sent).to_have_attribute("data-status", "sent")
    bubble = sent.locator(".bubble").bounding_box()
    assert bubble is not None and bubble["x"] >= 0 and bubble["x"] + bubble["width"] <= 375
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    # Times read in the reader's zone.
    stamp = sent.locator("time").get_attribute("datetime")
    assert stamp is not None
    tokyo = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(ZoneInfo("Asia/Tokyo"))
    expect(sent.locator("time")).to_have_text(tokyo.strftime("%I:%M %p"))

    page.locator("#back").click()
    expect(page.locator("#sidebar")).to_be_visible()
    expect(page.locator("#chat")).to_be_hidden()
    page.locator(f'#sessions button[data-session-id="{sid}"]').click()
    expect(composer).to_be_visible()
    expect(sent).to_be_visible()


def test_sign_in_with_a_pasted_token_and_sign_out(server: ServerProcess, open_page: PageFactory) -> None:
    name = f"hugo-{uuid.uuid4().hex[:6]}"
    token = server.user(name)
    page = open_page(None)
    page.locator("#token-input").fill("not-a-token")
    page.locator("#signin-button").click()
    expect(page.locator("#signin-error")).to_have_text("That token was not accepted.")

    page.locator("#token-input").fill(token)
    page.locator("#token-input").press("Enter")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#me")).to_have_text(f"{name} · member")
    connected_list = page.locator("#sessions")
    expect(connected_list).to_contain_text("No chats yet")
    page.reload()
    expect(page.locator("#app")).to_be_visible()  # the token is kept in localStorage
    expect(page.locator("#me")).to_have_text(f"{name} · member")

    page.locator("#signout").click()
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('pollchat:'))") == []


def test_sign_in_link_opens_the_session_and_leaves_no_token_in_the_address(
    server: ServerProcess, open_page: PageFactory
) -> None:
    token = server.user(f"ida-{uuid.uuid4().hex[:6]}")
    sid = session_id()
    page = open_page(token, sid)
    assert page.url == f"{server.url}/"
    assert token not in page.evaluate("location.href + history.length")
    expect(page.locator("#chat-title")).to_have_text(sid)
    connected(page)
    with server.client(token) as http:
        r = http.get(f"{API}/sessions/{sid}")
    assert r.status_code == 200 and r.json()["session"]["status"] == "active"


def test_session_list_shows_unread_counts_switches_and_closes(server: ServerProcess, open_page: PageFactory) -> None:
    member = server.user(f"jade-{uuid.uuid4().hex[:6]}")
    operator_token = server.user(f"kurt-{uuid.uuid4().hex[:6]}", role="operator")
    first, second = session_id(), session_id()
    with server.client(member) as http:
        for sid, name in ((first, "Jade first"), (second, "Jade second")):
            r = http.post(f"{API}/sessions", json={"id": sid, "client_name": name})
            assert r.status_code == 201, r.text
        assert http.post(f"{API}/messages", json={"session_id": first, "content": "in the first"}).status_code == 201

    page = open_page(operator_token, first)
    expect(message(page, "in the first")).to_have_count(1)
    current = page.locator(f'#sessions button[data-session-id="{first}"]')
    other = page.locator(f'#sessions button[data-session-id="{second}"]')
    expect(current).to_have_attribute("aria-current", "true")
    expect(other).to_contain_text("Jade second")
    expect(other.locator(".pill")).to_have_text("active")
    expect(other.locator("time")).to_have_text("just now")

    with server.client(member) as http:
        for text in ("hello in the second", "are you there?"):
            assert http.post(f"{API}/messages", json={"session_id": second, "content": text}).status_code == 201
    expect(other.locator(".unread")).to_have_text("2", timeout=20_000)
    expect(current.locator(".unread")).to_have_count(0)
    assert page.locator("#sessions button[data-session-id]").first.get_attribute("data-session-id") == second

    other.click()
    expect(page.locator("#chat-title")).to_have_text("Jade second")
    expect_contents(page, ["hello in the second", "are you there?"])
    expect(other.locator(".unread")).to_have_count(0)

    page.locator("#close-session").click()
    expect(page.locator("#chat-status")).to_have_text("closed")
    expect(page.locator("#input")).to_be_disabled()
    expect(page.locator("#composer-note")).to_contain_text("closed")
    expect(other.locator(".pill")).to_have_text("closed")
    with server.client(member) as http:
        assert http.get(f"{API}/sessions/{second}").json()["session"]["status"] == "closed"
    page.locator("#close-session").click()
    expect(page.locator("#chat-status")).to_have_text("active")
    expect(page.locator("#input")).to_be_enabled()
