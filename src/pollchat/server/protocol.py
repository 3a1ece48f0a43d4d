"""uvicorn's HTTP protocol with a deadline for each request's headers.

uvicorn times out idle keep-alive connections between requests, but not a connection that
sends nothing at all, or its headers a byte at a time: each such connection stays open for
ever, and enough of them exhaust the server's connections. Here every request (the first on
a connection, and each later one from its first byte) must finish its headers within
``header_timeout`` seconds, or the connection is closed. A body that comes too slowly is the
app's to bound (``pollchat.server.http.BodyReader``).

The deadline costs a connection one number: one sweep per process, twice per deadline, closes
the connections whose headers are overdue (a timer per connection would cost every parked long
poll its memory).
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


class _Sweep:
    """Closes, every half deadline, the connections of one process whose headers are overdue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any], timeout: float) -> None:
        self._loop = loop
        self._connections = connections
        self._timeout = timeout
        self._loop.call_later(timeout / 2, self._run)

    def _run(self) -> None:
        overdue = self._loop.time() - self._timeout
        for connection in list(self._connections):
            since = getattr(connection, "headers_since", None)
            if since is not None and since < overdue:
                connection.headers_too_slow()
        self._loop.call_later(self._timeout / 2, self._run)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """httptools, closing a connection whose request headers take longer than the deadline."""

    def __init__(self, config: uvicorn.Config, server_state: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, server_state, *args, **kwargs)
        # When the request now being read began (loop time), or None between requests.
        self.headers_since: float | None = None
        if getattr(config, "header_sweep", None) is None:  # one per process, made by its first connection
            config.header_sweep = _Sweep(self.loop, server_state.connections, getattr(config, "header_timeout", 10.0))  # type: ignore[attr-defined]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.headers_since = self.loop.time()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.headers_since is None:
            self.headers_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self.headers_since = None
        super().on_headers_complete()

    def headers_too_slow(self) -> None:
        """Close this connection: its request's headers did not arrive in time."""
        self.headers_since = None
        if not self.transport.is_closing():
            self.transport.close()
