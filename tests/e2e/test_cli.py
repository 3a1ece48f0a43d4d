"""The ``pollchat`` client commands as a script runs them: chat on pipes, send, tail.

The chat screen on a terminal is tested in ``test_chat_screen.py``.

One server with the echo assistant serves the module; each test uses its own user and session.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from typing import IO

import pytest

from tests.e2e.commands import Lines, spawn
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.integration


def test_chat_on_pipes_prints_one_line_per_event(echo_server: ServerProcess) -> None:
    """Not on a terminal (a script's pipes), ``pollchat chat`` reads lines and prints plain lines."""
    token = echo_server.create_user("pipe-user")
    with spawn(
        ["chat", "--url", echo_server.url, "--token", token, "--session", "pipe-session"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        out = Lines(proc.stdout)
        out.expect(r"Chatting in session pipe-session\. /quit to leave")
        out.expect(r"-- connection: (polling|connected)")

        proc.stdin.write(b"hello over a pipe\n")
        proc.stdin.flush()
        # At once, with the "sending" mark; then the server's acknowledgement (sent, then
        # delivered once the echo assistant has it, possibly reported together).
        shown = out.expect(r"\[\d\d:\d\d:\d\d\] you: hello over a pipe  …")
        out.expect(r"  ✓✓? 'hello over a pipe'", start=shown.end())
        out.expect(r"\[\d\d:\d\d:\d\d\] assistant: Echo: hello over a pipe  ✓", start=shown.end())
        out.expect(r"  ✓✓ 'hello over a pipe'", start=shown.end())
        out.expect(r"-- connection: connected")

        proc.stdin.write(b"/status\n/quit\n")
        proc.stdin.flush()
        out.expect(r"-- connected; last poll .*; errors 0; pending 0")
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
    # Escape codes are for terminals only.
    assert "\x1b" not in out.text, out.text


def test_send_prints_one_json_line(echo_server: ServerProcess) -> None:
    token = echo_server.create_user("sender")
    args = ["send", "--url", echo_server.url, "--token", token, "--session", "send-session", "--timeout", "20"]
    with spawn(
        [*args, "hi there"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 1, out
    message = json.loads(lines[0])
    assert message["content"] == "hi there"
    assert message["session_id"] == "send-session"
    assert message["status"] in ("sent", "delivered")
    assert message["id"].startswith("msg_")
    assert message["client_message_id"]
    stored = [m for m in echo_server.drain("send-session") if m["type"] == "user"]
    assert [m["id"] for m in stored] == [message["id"]]


def test_send_with_a_bad_token_fails(echo_server: ServerProcess) -> None:
    with spawn(
        ["send", "--url", echo_server.url, "--token", "not-a-token", "--session", "bad", "--timeout", "20", "x"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert out == b""
    assert "token" in err.decode().lower(), err


def read_json_lines(stream: IO[bytes], count: int, timeout: float) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    buffer = b""
    while len(lines) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(lines)} lines within {timeout:g} s: {lines}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            data = os.read(fd, 65536)
            assert data, f"tail ended after {lines}"
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                lines.append(json.loads(line))
    return lines


def test_tail_prints_json_lines_in_order(echo_server: ServerProcess) -> None:
    token = echo_server.create_user("tailer")
    session_id = "tail-session"
    for i in range(3):
        echo_server.send(token, session_id, f"line {i}")
    # The assistant answers each one; wait for it so the session holds all six.
    deadline = time.monotonic() + 15
    while len(echo_server.drain(session_id, token)) < 6:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    with spawn(
        ["tail", "--url", echo_server.url, "--token", token, "--session", session_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        lines = read_json_lines(proc.stdout, 6, timeout=20)
        # A message sent now shows up too, after the history: "line 3", the echo, and line 3
        # again once the assistant has it (tail prints changes too; when the assistant fetched
        # it before tail's poll answered, "line 3" comes once, already delivered).
        echo_server.send(token, session_id, "line 3")
        while not (
            any(m["content"] == "Echo: line 3" for m in lines[6:])
            and any(m["content"] == "line 3" and m["status"] == "delivered" for m in lines[6:])
        ):
            lines += read_json_lines(proc.stdout, 1, timeout=15)
        # Ctrl-C: the status of a tool stopped by SIGINT, without a traceback.
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130

    stored = echo_server.drain(session_id, token)
    # History first, in cursor order (the server's order for this reader), then the new ones.
    assert [m["id"] for m in lines[:6]] == [m["id"] for m in stored[:6]]
    contents = [m["content"] for m in lines]
    assert [c for c in contents[:6] if not c.startswith("Echo")] == ["line 0", "line 1", "line 2"]
    assert [c for c in contents[:6] if c.startswith("Echo")] == ["Echo: line 0", "Echo: line 1", "Echo: line 2"]
    assert contents[6] == "line 3"
    assert sorted(set(contents[6:])) == ["Echo: line 3", "line 3"]
    assert [m["status"] for m in lines[6:] if m["content"] == "line 3"] in (["sent", "delivered"], ["delivered"])
    assert all(set(m) >= {"id", "type", "content", "timestamp", "session_id", "status"} for m in lines)
