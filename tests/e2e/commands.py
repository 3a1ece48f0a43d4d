"""The ``pollchat`` client commands as real processes."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import pytest

from tests.e2e.conftest import POLLCHAT, clean_env

COLUMNS = 110
LINES = 30


@contextmanager
def spawn(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A ``pollchat`` process in its own process group, killed and reaped whatever happens."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        [POLLCHAT, *args], env=clean_env(), start_new_session=True, **kwargs
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
