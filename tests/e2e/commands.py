"""The ``pollchat`` client commands as real processes: on pipes, or on a pseudo-terminal.

On a terminal, prompt_toolkit draws with escape codes (cursor moves, erases, colours); pyte plays
them like a terminal would, so a test reads the rows a person would see instead of the raw stream.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import pyte
import pytest

from tests.servers import clean_env, pollchat_command

COLUMNS = 110
LINES = 30


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


class Lines:
    """What a process prints on a pipe, waited for by regex."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.text = ""

    def expect(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while not (match := regex.search(self.text, start)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{pattern!r} not printed within {timeout:g} s; printed:\n{self.text}")
            ready, _, _ = select.select([self.fd], [], [], min(remaining, 0.2))
            if ready:
                data = os.read(self.fd, 65536)
                if not data:
                    pytest.fail(f"{pattern!r} not printed before the end; printed:\n{self.text}")
                self.text += data.decode("utf-8", errors="replace")
        return match


class Screen:
    """The master side of a pseudo-terminal with a terminal emulator on it: type keys, read rows."""

    def __init__(self, fd: int, *, columns: int = COLUMNS, lines: int = LINES) -> None:
        self.fd = fd
        self.raw = ""  # everything the program wrote, decoded: for tracebacks and text after the screen
        self._screen = pyte.Screen(columns, lines)
        # Answers the program's questions (cursor position reports) as a terminal would.
        self._screen.write_process_input = lambda data: os.write(fd, data.encode())
        self._stream = pyte.ByteStream(self._screen)
        self.ended = False

    def type(self, line: str) -> None:
        """Type ``line`` and Enter."""
        os.write(self.fd, line.encode() + b"\r")

    def press(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def rows(self) -> list[str]:
        """The screen as shown now, one string per row, trailing blanks removed."""
        return [row.rstrip() for row in self._screen.display]

    def text(self) -> str:
        return "\n".join(self.rows())

    def pump(self, timeout: float) -> None:
        """Read what the program writes for ``timeout`` seconds (less if it ends)."""
        deadline = time.monotonic() + timeout
        while not self.ended and (remaining := deadline - time.monotonic()) > 0:
            self._read(min(remaining, 0.1))

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the other side has closed
            data = b""
        if not data:
            self.ended = True
            return
        self.raw += data.decode("utf-8", errors="replace")
        self._stream.feed(data)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        """Wait until ``condition()`` holds of the screen."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.ended:
                if condition():
                    return
                pytest.fail(f"{what}: not shown within {timeout:g} s; the screen shows:\n{self.text()}")
            self._read(0.1)

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait for a row matching ``pattern`` (a regex searched in each row); returns its match."""
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        def shown() -> bool:
            found[:] = [m for row in self.rows() if (m := regex.search(row))]
            return bool(found)

        self.wait_for(shown, repr(pattern), timeout)
        return found[0]

    def row_of(self, pattern: str) -> int:
        """The index of the only row matching ``pattern``; fails when none or several match."""
        regex = re.compile(pattern)
        matching = [n for n, row in enumerate(self.rows()) if regex.search(row)]
        assert len(matching) == 1, f"{pattern!r} on rows {matching}:\n{self.text()}"
        return matching[0]

    def timeline(self) -> list[str]:
        """The rows of the chat screen's timeline: from the first row shown down to the status line."""
        rows = self.rows()
        prompt = self.prompt_row()
        top = next(n for n, row in enumerate(rows) if row)
        return rows[top : prompt - 1]

    def expect_timeline(self, patterns: list[str], timeout: float = 15.0) -> None:
        """Wait until the timeline is exactly one row per pattern (each a regex the whole row matches)."""

        def shown() -> bool:
            rows = self.timeline()
            return len(rows) == len(patterns) and all(re.fullmatch(p, r) for p, r in zip(patterns, rows, strict=True))

        self.wait_for(shown, f"the timeline {patterns}", timeout)

    def prompt_row(self) -> int:
        """The row of the prompt: the last row that shows anything."""
        rows = self.rows()
        return max(n for n, row in enumerate(rows) if row)


@contextmanager
def chat_on_a_terminal(
    args: list[str], *, columns: int = COLUMNS, lines: int = LINES
) -> Iterator[tuple[subprocess.Popen[bytes], Screen]]:
    """``pollchat chat ARGS`` on a pseudo-terminal of the given size, killed and reaped whatever happens."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    try:
        proc = subprocess.Popen(
            [*pollchat_command(), "chat", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=clean_env(TERM="xterm-256color"),
            start_new_session=True,
        )
        os.close(slave)
        slave = -1
        screen = Screen(master, columns=columns, lines=lines)
        try:
            yield proc, screen
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            screen.pump(0.2)
            print(screen.text())
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
