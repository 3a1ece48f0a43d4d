"""The chat workload of ``bench.chatload`` over python-socketio's polling transport.

The server is ``bench.socketio_app`` on the same uvicorn as pollchat. Every client is a
``socketio.AsyncClient`` limited to ``transports=["polling"]`` (Engine.IO long polling over
aiohttp, no WebSocket upgrade). The receivers ``call("join", room)`` and record each ``chat``
event; the sender ``call``s ``chat`` for each message and waits for its acknowledgement,
which is the closed loop pollchat's sender runs with its 201.
"""

from __future__ import annotations

import asyncio
import time

import socketio

from bench import rawhttp
from bench.chatload import ChatResult, ChatSpec, Receiver, content, drive, process_cpu_seconds, tally
from bench.servers import HOST, ServerProcess


async def _connect(url: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=["polling"], wait_timeout=10)
    return client


async def _close(client: socketio.AsyncClient) -> None:
    # A plain disconnect waits for the pending long-poll GET, which the server holds up to its
    # ping interval (25 s); aborting closes the client's HTTP session under it instead.
    await client.eio.disconnect(abort=True)


async def _socketio(server: ServerProcess, room: str, spec: ChatSpec) -> ChatResult:
    url = f"http://{HOST}:{server.port}"
    receivers = [Receiver() for _ in range(spec.receivers)]
    clients: list[socketio.AsyncClient] = []
    sent_at = [0.0] * spec.total
    send_rtts = [0.0] * spec.total
    try:
        for r in receivers:
            client = await _connect(url)
            clients.append(client)

            def on_chat(data: dict[str, object], r: Receiver = r) -> None:
                r.received.append((int(str(data["i"])), time.perf_counter()))

            client.on("chat", on_chat)
            if await client.call("join", room, timeout=10) != "ok":
                raise RuntimeError("join was not acknowledged")
        sender = await _connect(url)
        clients.append(sender)

        async def send(i: int) -> None:
            if await sender.call("chat", {"room": room, "i": i, "content": content(i)}, timeout=30) is not True:
                raise RuntimeError(f"chat {i} was not acknowledged")

        cpu_client, cpu_server = process_cpu_seconds(), server.cpu_seconds()
        async with asyncio.timeout(spec.timeout):
            await drive(spec, receivers, send, sent_at, send_rtts)
        cpu = (process_cpu_seconds() - cpu_client, server.cpu_seconds() - cpu_server)
    finally:
        await asyncio.gather(*(_close(c) for c in clients), return_exceptions=True)
    return tally("python-socketio (polling)", spec, receivers, sent_at, send_rtts, cpu, None)


def run_socketio(server: ServerProcess, room: str, spec: ChatSpec) -> ChatResult:
    """The workload on python-socketio with its polling transport."""
    return rawhttp.run(_socketio(server, room, spec))
