"""uvicorn's HTTP protocol with a deadline for each request's headers.

uvicorn times out idle keep-alive connections between requests, but not a connection that
sends nothing at all, or its headers a byte at a time: each such connection stays open for
ever, and enough of them exhaust the server's connections. Here every request (the first on
a connection, and each later one from its first byte) must finish its headers within
``header_timeout`` seconds, or the connection is closed. A body that comes too slowly is the
app's to bound (``pollchat.server.http.BodyReader``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class Config(uvicorn.Config):
    """uvicorn's configuration, plus the header deadline (kept here so that workers get it too)."""

    def __init__(self, app: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, http=HeaderDeadlineProtocol, **kwargs)
        self.header_timeout = header_timeout


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """httptools, closing a connection whose request headers take longer than the deadline."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._header_timeout: float = getattr(config, "header_timeout", 10.0)
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
