"""The fan-out floor: a bare ASGI app that parks requests on one ``asyncio.Event`` until a wake.

Served by the same uvicorn as pollchat, it does the least a long-poll server can: ``GET /park``
waits on the current event; ``POST /wake`` sets it (and starts a new one), answering every parked
request with a small JSON body; ``GET /parked`` says how many wait now. So its wake latency and
its memory per parked request are what uvicorn and asyncio cost by themselves.
"""

from __future__ import annotations

import asyncio
from typing import Any

_BODY = b'{"messages":[{"id":"bench"}]}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


class _State:
    event: asyncio.Event | None = None
    parked = 0


async def _answer(send: Any, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Any) -> None:
    message = await receive()
    while message.get("more_body"):
        message = await receive()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /park``, ``POST /wake``, ``GET /parked``; ``ok`` to anything else; the lifespan protocol."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _State.event is not None:
                    _State.event.set()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/park":
        if _State.event is None:
            _State.event = asyncio.Event()
        event = _State.event
        _State.parked += 1
        try:
            await event.wait()
        finally:
            _State.parked -= 1
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _BODY})
    elif path == "/wake":
        await _drain(receive)
        woken = _State.parked
        if _State.event is not None:
            _State.event.set()
            _State.event = None
        await _answer(send, 201, b'{"woken":%d}' % woken, b"application/json")
    elif path == "/parked":
        await _answer(send, 200, b"%d" % _State.parked)
    else:
        await _answer(send, 200, b"ok")
