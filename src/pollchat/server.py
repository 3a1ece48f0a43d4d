"""Runs the app on uvicorn, answering parked long polls at once when asked to stop."""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from fastapi import FastAPI

from pollchat.api.deps import Services


class PollchatServer(uvicorn.Server):
    """A uvicorn server whose exit signal first wakes every parked long poll.

    uvicorn waits for open requests before it shuts the app down; a long poll may be parked
    for a minute, so the notifier is closed on the signal itself and those polls answer now.
    """

    def __init__(self, config: uvicorn.Config, services: Services) -> None:
        super().__init__(config)
        self._services = services
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._services.notifier.close)
        super().handle_exit(sig, frame)


def run(app: FastAPI, *, host: str, port: int, log_level: str) -> None:
    """Serve ``app`` until SIGINT or SIGTERM."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # Longer than any long poll, so a proxy's keep-alive connection is not cut under it.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    PollchatServer(config, app.state.services).run()
