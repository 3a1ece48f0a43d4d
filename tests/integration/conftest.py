"""Integration tests run real ``pollchat serve`` processes through the ``servers`` fixture of ``tests/conftest.py``.

The processes themselves are ``tests.servers``'s; these names stay importable from here for
the test modules that import them so.
"""

from __future__ import annotations

import asyncio

from tests.conftest import missing
from tests.servers import HEALTH, START_TIMEOUT, ServerFactory, auth, clean_env, free_port, pollchat_command
from tests.servers import ServerProcess as Server

__all__ = ["HEALTH", "START_TIMEOUT", "Server", "ServerFactory", "auth", "clean_env", "free_port"]


def pollchat_executable() -> str:
    """The ``pollchat`` console script of the interpreter running the tests."""
    command = pollchat_command()
    if len(command) != 1:
        missing("the `pollchat` console script is not installed")
    return command[0]


async def wait_healthy(server: Server, *, timeout: float = START_TIMEOUT, url: str | None = None) -> None:
    """Wait until ``server`` (or ``url``) answers its health check; fails with its output if it dies or never does."""
    await asyncio.to_thread(server.wait_http, (url or server.url) + HEALTH, timeout)
