"""The idle short poll, answered in plain ASGI.

Most polls of a quiet chat change nothing: a 304 for a matching ETag, or an empty page. The
notifier and the caches already answer those without storage (``ChatService.poll_from_memory``);
going through FastAPI's routing, dependency solving and validation would still cost many times
the answer itself. So this layer answers them directly, for requests in their plain canonical
form from a recently seen token. Every other request (anything malformed, a cold cache, news
to fetch, a long poll) goes on to the full route, which answers the same way, only slower.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from pollchat.api.deps import Services, charge_poll
from pollchat.api.errors import error_response
from pollchat.api.messages import page_body
from pollchat.errors import TooManyRequests
from pollchat.models import SESSION_ID_RE

PATH = "/api/v1/admin/chat/messages"
_KNOWN = {"session_id", "since", "limit", "wait"}


def _plain_query(raw: bytes) -> dict[str, str] | None:
    """The poll's parameters when they are plainly valid, else None (the full route judges)."""
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return None
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= _KNOWN:
        return None
    session_id, limit, wait = params.get("session_id", ""), params.get("limit", "100"), params.get("wait", "0")
    if not SESSION_ID_RE.fullmatch(session_id) or wait not in ("0", "0.0"):
        return None
    if not (limit.isascii() and limit.isdigit() and len(limit) <= 3 and 1 <= int(limit) <= 500):
        return None
    if len(params.get("since", "")) > 200:
        return None
    return params


class FastPollMiddleware:
    """Answers idle short polls before FastAPI; passes everything else on."""

    def __init__(self, app: ASGIApp, *, services: Services, route: BaseRoute) -> None:
        self.app = app
        self.services = services
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        params = _plain_query(scope["query_string"])
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if_none_match = headers.get(b"if-none-match", b"").decode("latin-1") or None
        user = self.services.auth.remembered(authorization) if params is not None else None
        if params is None or user is None or (if_none_match is not None and len(if_none_match) > 500):
            await self.app(scope, receive, send)
            return
        result = self.services.chat.poll_from_memory(
            user,
            params["session_id"],
            since=params.get("since") or None,
            limit=int(params.get("limit", "100")),
            if_none_match=if_none_match,
        )
        if result is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # for the request metrics, as FastAPI would set it
        try:
            await charge_poll(self.services, user, scope)
        except TooManyRequests as exc:
            await error_response(exc.status_code, exc.message, exc.code, exc.retry_after)(scope, receive, send)
            return
        response_headers: list[tuple[bytes, bytes]] = [
            (b"etag", result.etag.encode()),
            (b"cache-control", b"private, no-cache"),
        ]
        if result.not_modified:
            await _respond(send, 304, response_headers, b"")
            return
        body = page_body(self.services, result)
        response_headers.append((b"content-type", b"application/json"))
        await _respond(send, 200, response_headers, body)


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    if status != 304:
        headers.append((b"content-length", str(len(body)).encode()))
    await send(start)
    await send({"type": "http.response.body", "body": body})
