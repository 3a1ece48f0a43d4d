"""The ceiling: a bare ASGI app answering every request with a 2-byte body.

Served by the same uvicorn (same loop, same HTTP parser, one worker) as pollchat, so the ratio
pollchat / bare is the share of one core's request budget that pollchat's own work leaves.
"""

from __future__ import annotations

from typing import Any

_BODY = b"ok"
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
_END = {"type": "http.response.body", "body": _BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer ``ok`` to any HTTP request; acknowledge the lifespan protocol."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await send(_START)
        await send(_END)
