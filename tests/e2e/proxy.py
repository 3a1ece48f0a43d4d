"""A controllable TCP proxy for end-to-end tests: a flaky network between a client and a server.

Modes (``proxy.mode = ...``) apply to what happens next; ``cut()`` acts at once:

- ``pass``: forward both ways.
- ``refuse``: every new connection is reset as soon as it is accepted (live ones carry on).
- ``blackhole``: new connections are accepted but nothing is ever forwarded; connections that
  are live when the mode is set go silent too, and stay silent until the client closes them
  (like a partition that sends no reset: only the client's timeout notices).
- ``delay``: every chunk, both ways, is held ``delay`` seconds before it is forwarded.
- ``reset``: each server response is cut: its first part is forwarded, then both sides are reset.

``cut()`` closes every live connection now (both sides), whatever the mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from typing import Literal

Mode = Literal["pass", "refuse", "blackhole", "delay", "reset"]
CHUNK = 65536


@dataclass
class ProxyStats:
    """What the proxy did, for reports and for checking that the chaos really happened."""

    accepted: int = 0
    refused: int = 0
    blackholed: int = 0
    silenced: int = 0
    cut: int = 0
    reset_responses: int = 0
    upstream_failures: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP reset (SO_LINGER 0) instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.silent = False  # black-holed: drop everything until the client goes away
        self.closed = asyncio.Event()

    def close(self, *, reset: bool = False) -> None:
        """Close both sides at once: with a reset, or with a FIN dropping anything unsent."""
        for writer in self.writers():
            if reset:
                _rst(writer)
            else:
                writer.transport.abort()
        self.closed.set()

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None and not w.transport.is_closing()]

    async def finish(self) -> None:
        """Close both sides in order, flushing what is already written (a normal end of connection)."""
        writers = self.writers()
        for writer in writers:
            writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1):
                await asyncio.gather(*(w.wait_closed() for w in writers))
        self.close()


class ChaosProxy:
    """``async with ChaosProxy(port) as proxy``: listens on a free loopback port, forwards to ``port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.mode: Mode = "pass"
        self.delay = 0.3
        self.reset_fraction = 0.5
        self.stats = ProxyStats()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for connection in list(self._connections):
            connection.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Let the transports' connection_lost callbacks run, so every socket is really closed.
        await asyncio.sleep(0)

    async def __aenter__(self) -> ChaosProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "blackhole":
            for connection in self._connections:
                if not connection.silent:
                    connection.silent = True
                    self.stats.silenced += 1

    def cut(self) -> int:
        """Close every live connection now; returns how many there were."""
        live = list(self._connections)
        for connection in live:
            connection.close()
        self.stats.cut += len(live)
        return len(live)

    @property
    def live_connections(self) -> int:
        return len(self._connections)

    # connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        connection = _Connection(writer)
        self._connections.add(connection)
        self.stats.accepted += 1
        try:
            await self._serve(connection, reader)
            await connection.finish()
        except OSError:
            pass
        finally:
            connection.close()
            self._connections.discard(connection)
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _serve(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        if self.mode == "refuse":
            self.stats.refused += 1
            connection.close(reset=True)
            return
        if self.mode == "blackhole":
            self.stats.blackholed += 1
            connection.silent = True
            await self._swallow(reader, connection)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            # The server is down: the client sees its connection closed without an answer.
            self.stats.upstream_failures += 1
            connection.close(reset=True)
            return
        connection.upstream = up_writer
        if connection.closed.is_set():  # cut while we were connecting
            connection.close()
            return
        pumps = [
            asyncio.ensure_future(self._pump(connection, reader, up_writer, downstream=False)),
            asyncio.ensure_future(self._pump(connection, up_reader, connection.client, downstream=True)),
        ]
        closed = asyncio.ensure_future(connection.closed.wait())
        try:
            await asyncio.wait([*pumps, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (*pumps, closed):
                future.cancel()
            await asyncio.gather(*pumps, closed, return_exceptions=True)

    async def _swallow(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        while not connection.closed.is_set() and await reader.read(CHUNK):
            pass

    async def _pump(
        self, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, downstream: bool
    ) -> None:
        while data := await reader.read(CHUNK):
            if connection.silent:
                continue
            if self.mode == "delay":
                await asyncio.sleep(self.delay)
            if downstream and self.mode == "reset":
                part = data[: max(1, int(len(data) * self.reset_fraction))]
                writer.write(part)
                await writer.drain()
                # Give the partial answer time to reach the client before the reset.
                await asyncio.sleep(0.05)
                self.stats.reset_responses += 1
                connection.close(reset=True)
                return
            if downstream:
                self.stats.bytes_down += len(data)
            else:
                self.stats.bytes_up += len(data)
            writer.write(data)
            await writer.drain()
