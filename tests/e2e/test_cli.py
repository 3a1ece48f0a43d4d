"""The ``pollchat`` client commands as a person or a script runs them: chat on a terminal, send, tail.

One server with the echo assistant serves the module; each test uses its own user and session.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from tests.e2e.proxy import ChaosProxy
from tests.servers import ServerProcess, clean_env, pollchat_command

pytestmark = pytest.mark.integration


@contextmanager
def spawn(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A ``pollchat`` process in its own process group, killed and reaped whatever happens."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        [*pollchat_command(), *args], env=clean_env(), start_new_session=True, **kwargs
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class Terminal:
    """The master side of a pseudo-terminal: type lines, wait for text on the screen."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.screen = ""

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the other side has closed
            return False
        if not data:
            return False
        self.screen += data.decode("utf-8", errors="replace").replace("\r\n", "\n")
        return True

    def expect(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) in what the terminal printed after offset ``start``."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.screen, start)
            if match:
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 0.2)):
                match = re.compile(pattern).search(self.screen, start)
                if match:
                    return match
                pytest.fail(f"{pattern!r} not shown within {timeout:g} s; the terminal shows:\n{self.screen}")

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.1):
            pass


def test_chat_on_a_pseudo_terminal(echo_server: ServerProcess) -> None:
    token = echo_server.create_user("terminal-user")
    master, slave = os.openpty()
    try:
        with spawn(
            ["chat", "--url", echo_server.url, "--token", token, "--session", "pty-session"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
        ) as proc:
            os.close(slave)
            slave = -1
            term = Terminal(master)
            term.expect(r"Chatting in session pty-session\. /quit to leave")
            # The state is shown at once (a long poll on a quiet session is "polling" until it answers).
            term.expect(r"-- connection: (polling|connected)\n")

            term.type("hello over a terminal")
            # At once, with the "sending" mark; then the server's acknowledgement (sent, then
            # delivered once the echo assistant has it, possibly reported together).
            shown = term.expect(r"\[\d\d:\d\d:\d\d\] you: hello over a terminal  …")
            term.expect(r"  ✓✓? 'hello over a terminal'", start=shown.end())
            term.expect(r"\[\d\d:\d\d:\d\d\] assistant: Echo: hello over a terminal  ✓", start=shown.end())
            term.expect(r"  ✓✓ 'hello over a terminal'", start=shown.end())
            term.expect(r"-- connection: connected")

            term.type("/status")
            term.expect(r"-- connected; last poll .*; errors 0; pending 0")

            term.type("/quit")
            assert proc.wait(timeout=15) == 0
            term.drain(0.5)
        print(term.screen)
        assert "Traceback" not in term.screen, term.screen
        # Leaving prints no stale connection line.
        assert "-- connection" not in term.screen.split("/quit")[-1], term.screen
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


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
        # again once the assistant has it (tail prints changes too).
        echo_server.send(token, session_id, "line 3")
        lines += read_json_lines(proc.stdout, 3, timeout=15)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0

    stored = echo_server.drain(session_id, token)
    # History first, in cursor order (the server's order for this reader), then the new ones.
    assert [m["id"] for m in lines[:6]] == [m["id"] for m in stored[:6]]
    contents = [m["content"] for m in lines]
    assert [c for c in contents[:6] if not c.startswith("Echo")] == ["line 0", "line 1", "line 2"]
    assert [c for c in contents[:6] if c.startswith("Echo")] == ["Echo: line 0", "Echo: line 1", "Echo: line 2"]
    assert contents[6] == "line 3"
    assert sorted(contents[7:]) == ["Echo: line 3", "line 3"]
    assert [m["status"] for m in lines[6:] if m["content"] == "line 3"] == ["sent", "delivered"]
    assert all(set(m) >= {"id", "type", "content", "timestamp", "session_id", "status"} for m in lines)


async def test_chat_keeps_a_line_typed_offline_and_sends_it_after_a_restart(
    echo_server: ServerProcess, tmp_path: Path
) -> None:
    """Through a proxy that refuses connections: the line waits (…), survives /quit in the state
    file, and the next ``pollchat chat`` with that file delivers it once the network is back."""
    token = echo_server.create_user("offline-user")
    session_id = "pty-offline"
    state = tmp_path / "chat-state.json"
    async with ChaosProxy(echo_server.port) as proxy:
        args = ["chat", "--url", proxy.url, "--token", token, "--session", session_id, "--state", str(state)]
        for run in ("offline", "back"):
            master, slave = os.openpty()
            try:
                with spawn(args, stdin=slave, stdout=slave, stderr=slave) as proc:
                    os.close(slave)
                    slave = -1
                    term = Terminal(master)
                    await asyncio.to_thread(term.expect, r"Chatting in session pty-offline\.")
                    if run == "offline":
                        proxy.cut()
                        proxy.set_mode("refuse")
                        term.type("typed while offline")
                        await asyncio.to_thread(term.expect, r"you: typed while offline  …")
                        await asyncio.to_thread(term.expect, r"-- connection: (error|offline) \(.+\)")
                        term.type("/quit")
                        await asyncio.to_thread(term.expect, r"-- 1 message\(s\) not yet sent stay queued")
                    else:
                        await asyncio.to_thread(term.expect, r"  ✓✓? 'typed while offline'", 30)
                        await asyncio.to_thread(term.expect, r"assistant: Echo: typed while offline", 30)
                        term.type("/quit")
                    assert await asyncio.to_thread(proc.wait, 15) == 0
                    await asyncio.to_thread(term.drain, 0.3)
                    print(term.screen)
                    assert "Traceback" not in term.screen, term.screen
            finally:
                os.close(master)
                if slave >= 0:
                    os.close(slave)
            proxy.set_mode("pass")
    stored = [m["content"] for m in echo_server.drain(session_id)]
    assert stored.count("typed while offline") == 1
    assert stored.count("Echo: typed while offline") == 1
