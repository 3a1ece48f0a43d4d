"""The chat baseline server: python-socketio as an ASGI app, served by the same uvicorn as pollchat.

    python -m uvicorn bench.socketio_app:app   # what bench.servers.asgi_server runs

A client ``call("join", room)`` enters a room; ``call("chat", {"room": ..., ...})`` broadcasts
the payload as event ``chat`` to everyone in the room and acknowledges the sender once the
broadcast is queued. No persistence, no authentication: the least a Socket.IO chat does.
Any other path (``/`` for the readiness check) goes to ``bench.bare_app``.
"""

from __future__ import annotations

from typing import Any

import socketio

from bench import bare_app

sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)


@sio.on("join")
async def join(sid: str, room: str) -> str:
    """Enter ``room``."""
    await sio.enter_room(sid, room)
    return "ok"


@sio.on("chat")
async def chat(sid: str, data: dict[str, Any]) -> bool:
    """Broadcast ``data`` to its room; the return value is the sender's acknowledgement."""
    await sio.emit("chat", data, room=data["room"])
    return True


app = socketio.ASGIApp(sio, other_asgi_app=bare_app.app)
