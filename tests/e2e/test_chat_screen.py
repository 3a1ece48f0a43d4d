"""``pollchat chat`` on a terminal: the chat screen as a person sees it, read through a terminal emulator.

One server with the echo assistant serves the module; each test uses its own user and session.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.commands import Screen, chat_on_a_terminal
from tests.e2e.conftest import API, ServerProcess, auth
from tests.e2e.proxy import ChaosProxy

pytestmark = pytest.mark.integration

TIME = r"\d\d:\d\d"
STATUS = "│ session "


def ours(text: str, mark: str) -> str:
    """A row showing our message ``text`` with the status ``mark`` at its end."""
    return rf"{TIME} you: {re.escape(text)}  {re.escape(mark)}$"


def own_message(server: ServerProcess, token: str, session_id: str, content: str) -> dict[str, object]:
    (message,) = [m for m in server.drain(session_id, token) if m["content"] == content and m["type"] == "user"]
    return message


def assert_layout(screen: Screen, session_id: str) -> None:
    """The prompt is the bottom row shown, empty, with the status line just above it."""
    prompt = screen.prompt_row()
    assert screen.rows()[prompt] == "›", screen.text()
    status = screen.rows()[prompt - 1]
    assert f"{STATUS}{session_id}" in status, screen.text()


def test_chat_screen_shows_each_message_once_and_updates_it_in_place(echo_server: ServerProcess) -> None:
    """A typed line takes one row; its mark, a read receipt and an edit from elsewhere change that
    row, and a message from another client comes in above the prompt."""
    token = echo_server.create_user("screen-user")
    session_id = "screen-session"
    intro = rf"-- chatting in session {session_id}; /quit to leave, /retry, /status"
    with chat_on_a_terminal(["--url", echo_server.url, "--token", token, "--session", session_id]) as (proc, screen):
        screen.expect(rf"● connected {STATUS}{session_id}")
        screen.expect_timeline([intro])
        assert_layout(screen, session_id)

        screen.type("hello over a terminal")
        # Delivered once the echo assistant has fetched it, then answered below it.
        echo = rf"{TIME} assistant: Echo: hello over a terminal"
        screen.expect_timeline([intro, ours("hello over a terminal", "✓✓"), echo])
        assert_layout(screen, session_id)

        message = own_message(echo_server, token, session_id, "hello over a terminal")
        with httpx.Client(base_url=echo_server.url, timeout=10.0) as http:
            # The other side (staff) reads it: the same row says so.
            r = http.post(
                f"{API}/sessions/{session_id}/read",
                json={"up_to": message["id"]},
                headers=auth(echo_server.admin_token),
            )
            assert r.status_code == 200, r.text
            screen.expect_timeline([intro, ours("hello over a terminal", "✓✓ read"), echo])

            # Another client of ours posts: it shows above the prompt, after what came before.
            echo_server.send(token, session_id, "sent from another client")
            other = [ours("sent from another client", "✓✓"), rf"{TIME} assistant: Echo: sent from another client"]
            screen.expect_timeline([intro, ours("hello over a terminal", "✓✓ read"), echo, *other])
            assert_layout(screen, session_id)

            # Edited elsewhere: the row shows the new text, marked as an edit, in its place.
            r = http.patch(
                f"{API}/messages/{message['id']}", json={"content": "hello, edited elsewhere"}, headers=auth(token)
            )
            assert r.status_code == 200, r.text
            screen.expect_timeline([intro, ours("hello, edited elsewhere (edited)", "✓✓ read"), echo, *other])

        screen.type("/status")
        screen.expect(r"^-- connected; last poll \d\d:\d\d:\d\d; errors 0; pending 0$")
        assert_layout(screen, session_id)

        screen.type("/quit")
        assert proc.wait(timeout=15) == 0
    assert "Traceback" not in screen.raw, screen.raw


def test_chat_screen_shows_the_history_in_time_order(echo_server: ServerProcess) -> None:
    """History comes in change order (an edit moves a message to the end of the cursor); the screen
    shows it in the order it was written."""
    token = echo_server.create_user("history-user")
    session_id = "screen-history"
    first = echo_server.send(token, session_id, "first of all")
    echo_server.send(token, session_id, "second")
    with httpx.Client(base_url=echo_server.url, timeout=10.0) as http:
        r = http.patch(f"{API}/messages/{first['id']}", json={"content": "first, edited"}, headers=auth(token))
        assert r.status_code == 200, r.text
    with chat_on_a_terminal(["--url", echo_server.url, "--token", token, "--session", session_id]) as (proc, screen):
        screen.expect(r"you: first, edited \(edited\)")
        screen.expect(r"assistant: Echo: second")
        rows = [screen.row_of("you: first, edited"), screen.row_of("you: second"), screen.row_of("Echo: second")]
        assert rows == sorted(rows), screen.text()
        screen.press(b"\x04")  # Ctrl-D on an empty prompt leaves
        assert proc.wait(timeout=15) == 0
    assert "Traceback" not in screen.raw, screen.raw


def test_chat_screen_shows_a_refused_line_with_the_reason(echo_server: ServerProcess) -> None:
    token = echo_server.create_user("refused-user")
    session_id = "screen-closed"
    echo_server.create_session(token, session_id)
    with httpx.Client(base_url=echo_server.url, timeout=10.0) as http:
        r = http.patch(f"{API}/sessions/{session_id}", json={"status": "closed"}, headers=auth(token))
        assert r.status_code == 200, r.text
    with chat_on_a_terminal(["--url", echo_server.url, "--token", token, "--session", session_id]) as (proc, screen):
        screen.expect(rf"● connected {STATUS}{session_id}")
        screen.type("too late")
        failed = screen.expect(rf"^{TIME} you: too late  ✗ failed: (.+) \(/retry sends it again\)$")
        assert "closed" in failed.group(1).lower(), screen.text()
        screen.expect(r"│ 1 failed: /retry")
        screen.press(b"\x03")  # Ctrl-C
        assert proc.wait(timeout=15) == 130
    assert "Traceback" not in screen.raw, screen.raw


def test_chat_screen_ends_quietly_on_sigint(echo_server: ServerProcess) -> None:
    token = echo_server.create_user("sigint-user")
    session_id = "screen-sigint"
    with chat_on_a_terminal(["--url", echo_server.url, "--token", token, "--session", session_id]) as (proc, screen):
        screen.expect(rf"● connected {STATUS}{session_id}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    assert "Traceback" not in screen.raw, screen.raw


async def test_chat_screen_marks_a_line_typed_offline_as_it_goes_out(echo_server: ServerProcess) -> None:
    """Through a proxy that refuses connections: the status line says so, the line waits with …,
    and the same row turns ✓✓ once the network is back."""
    token = echo_server.create_user("screen-offline-user")
    session_id = "screen-offline"
    async with ChaosProxy(echo_server.port) as proxy:
        args = ["--url", proxy.url, "--token", token, "--session", session_id]
        with chat_on_a_terminal(args) as (proc, screen):
            await asyncio.to_thread(screen.expect, rf"● connected {STATUS}{session_id}")
            proxy.cut()
            proxy.set_mode("refuse")
            screen.type("typed while offline")
            intro = rf"-- chatting in session {session_id}; /quit to leave, /retry, /status"
            await asyncio.to_thread(screen.expect_timeline, [intro, ours("typed while offline", "…")])
            await asyncio.to_thread(screen.expect, rf"● (offline|error) \(.+\) {STATUS}{session_id}")
            proxy.set_mode("pass")
            echo = rf"{TIME} assistant: Echo: typed while offline"
            await asyncio.to_thread(screen.expect_timeline, [intro, ours("typed while offline", "✓✓"), echo], 30)
            await asyncio.to_thread(screen.expect, rf"● connected {STATUS}{session_id}", 30)
            screen.type("/quit")
            assert await asyncio.to_thread(proc.wait, 15) == 0
        assert "Traceback" not in screen.raw, screen.raw
    stored = [m["content"] for m in echo_server.drain(session_id)]
    assert stored.count("typed while offline") == 1


async def test_chat_keeps_a_line_typed_offline_and_sends_it_after_a_restart(
    echo_server: ServerProcess, tmp_path: Path
) -> None:
    """Through a proxy that refuses connections: the line waits (…), survives /quit in the state
    file, and the next ``pollchat chat`` with that file shows it waiting and delivers it once the
    network is back."""
    token = echo_server.create_user("offline-user")
    session_id = "pty-offline"
    state = tmp_path / "chat-state.json"
    async with ChaosProxy(echo_server.port) as proxy:
        args = ["--url", proxy.url, "--token", token, "--session", session_id, "--state", str(state)]
        with chat_on_a_terminal(args) as (proc, screen):
            await asyncio.to_thread(screen.expect, rf"● connected {STATUS}{session_id}")
            proxy.cut()
            proxy.set_mode("refuse")
            screen.type("typed while offline")
            await asyncio.to_thread(screen.expect, ours("typed while offline", "…"))
            await asyncio.to_thread(screen.expect, r"│ 1 queued")
            screen.type("/quit")
            assert await asyncio.to_thread(proc.wait, 15) == 0
            await asyncio.to_thread(screen.pump, 0.3)
            # Printed on the terminal's own screen, after the chat screen is gone.
            assert "-- 1 message(s) not yet sent stay queued" in screen.raw, screen.raw
        assert "Traceback" not in screen.raw, screen.raw

        with chat_on_a_terminal(args) as (proc, screen):
            await asyncio.to_thread(screen.expect, ours("typed while offline", "…"))
            proxy.set_mode("pass")
            await asyncio.to_thread(screen.expect, ours("typed while offline", "✓✓"), 30)
            await asyncio.to_thread(screen.expect, r"assistant: Echo: typed while offline", 30)
            screen.row_of("you: typed while offline")
            screen.type("/quit")
            assert await asyncio.to_thread(proc.wait, 15) == 0
        assert "Traceback" not in screen.raw, screen.raw
    stored = [m["content"] for m in echo_server.drain(session_id)]
    assert stored.count("typed while offline") == 1
    assert stored.count("Echo: typed while offline") == 1


def test_chat_plain_on_a_terminal_prints_lines(echo_server: ServerProcess) -> None:
    """``--plain`` keeps the line mode of scripts on a terminal: no screen, no escape codes."""
    token = echo_server.create_user("plain-user")
    args = ["--url", echo_server.url, "--token", token, "--session", "screen-plain", "--plain"]
    with chat_on_a_terminal(args) as (proc, screen):
        screen.expect(r"^Chatting in session screen-plain\. /quit to leave")
        screen.type("plain words")
        screen.expect(r"^\[\d\d:\d\d:\d\d\] assistant: Echo: plain words  ✓")
        screen.type("/quit")
        assert proc.wait(timeout=15) == 0
    assert "\x1b" not in screen.raw, screen.raw


def test_chat_screen_says_when_the_token_is_refused(echo_server: ServerProcess) -> None:
    args = ["--url", echo_server.url, "--token", "not-a-token", "--session", "screen-refused"]
    with chat_on_a_terminal(args) as (proc, screen):
        screen.expect(r"^-- the server refused the token \(.+\); polling and sending have stopped$")
        screen.expect(rf"● error \(.+\) {STATUS}screen-refused")
        screen.type("/quit")
        assert proc.wait(timeout=15) == 0
    assert "Traceback" not in screen.raw, screen.raw
