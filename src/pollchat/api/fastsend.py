"""Sends, answered in plain ASGI.

A send through FastAPI spends most of its time in routing, dependency solving and the
middleware stack rather than in storing the message. This layer takes the common case (one
message as a JSON body, from a token seen lately) straight to ``ChatService.send_one``, the
function the full route calls, with the same model, the same JSON parsing, the same rate limit
and the same answer. Anything it does not accept as plainly valid (another content type, a body
that does not parse or validate, an unknown token) goes on to the full route with the body
replayed, so every refusal of bad input is worded in one place only.
"""

from __future__ import annotations

import json

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from pollchat.api.deps import Services, send_limited
from pollchat.api.errors import failure_response
from pollchat.api.messages import send_item, send_response
from pollchat.middleware import RequestCounter, header_values, replay_body
from pollchat.models import SendMessageRequest

_JSON_TYPES = (b"application/json", b"application/json; charset=utf-8")
_HEADERS = (b"authorization", b"content-type", b"content-length")


class SendFront:
    """Answers plainly valid single sends before FastAPI; hands the rest to the full app."""

    def __init__(self, *, services: Services, requests: RequestCounter, path: str) -> None:
        self.services = services
        self.requests = requests
        self.path = path
        self.max_body_bytes = services.settings.max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send, full: ASGIApp) -> None:
        """Answer the ``POST`` that ``scope`` describes, or pass it on to ``full``."""
        authorization, content_type, length = header_values(scope, _HEADERS)
        user = self.services.auth.remembered(authorization.decode("latin-1")) if authorization else None
        plain = content_type.lower() in _JSON_TYPES and length.isdigit() and int(length) <= self.max_body_bytes
        if user is None or not plain:
            await full(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before its request was whole: nothing was done
        try:
            # As FastAPI reads a JSON body: json.loads, then the model on the Python objects.
            request = SendMessageRequest.model_validate(json.loads(body))
        except (ValueError, RecursionError, ValidationError):
            await full(scope, replay_body(body, receive), send)
            return
        response: Response
        try:
            await send_limited(self.services, user)
            response = send_response(await self.services.chat.send_one(user, send_item(request)))
        except Exception as exc:  # answered as the full route's exception handlers would
            response = failure_response(exc)
        try:
            await response(scope, receive, send)
        finally:
            self.requests.count("POST", self.path, response.status_code)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None if the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
