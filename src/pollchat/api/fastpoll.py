"""Polls, answered in plain ASGI.

Polling is the hot path: most polls of a quiet chat change nothing (a 304, an empty page, a
parked long poll), and the notifier and caches answer those without storage. Going through
FastAPI's routing, dependency solving and validation would still cost many times the answer
itself, and hold a much larger stack per parked poll. So this layer hands polls in their plain
canonical form, from a recently seen token, straight to ``ChatService.poll`` (the function the
full route calls) and writes the answer itself. Anything else (an unusual spelling of a
parameter, a token not seen lately) goes on to the full route, which validates it and answers
the same way, only slower.
"""

from __future__ import annotations

import gzip
import re
from urllib.parse import parse_qsl

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from pollchat.api.deps import Services, charge_poll
from pollchat.api.errors import error_response
from pollchat.api.messages import page_body
from pollchat.errors import PollchatError
from pollchat.models import SESSION_ID_RE

PATH = "/api/v1/admin/chat/messages"
_KNOWN = {"session_id", "since", "limit", "wait"}
_WAIT_RE = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?")


def _plain_query(raw: bytes, max_wait: float) -> dict[str, str] | None:
    """The poll's parameters when they are plainly valid, else None (the full route judges)."""
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return None
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= _KNOWN:
        return None
    session_id, limit, wait = params.get("session_id", ""), params.get("limit", "100"), params.get("wait", "0")
    if not SESSION_ID_RE.fullmatch(session_id) or not _WAIT_RE.fullmatch(wait) or float(wait) > max_wait:
        return None
    if not (limit.isascii() and limit.isdigit() and len(limit) <= 3 and 1 <= int(limit) <= 500):
        return None
    if len(params.get("since", "")) > 200:
        return None
    return params


class FastPollMiddleware:
    """Answers polls before FastAPI; passes everything else on."""

    def __init__(self, app: ASGIApp, *, services: Services, route: BaseRoute) -> None:
        self.app = app
        self.services = services
        self.route = route
        self.max_wait = min(60.0, services.settings.max_wait)
        self.gzip_min_bytes = services.settings.gzip_min_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        params = _plain_query(scope["query_string"], self.max_wait)
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if_none_match = headers.get(b"if-none-match", b"").decode("latin-1") or None
        user = self.services.auth.remembered(authorization) if params is not None else None
        if params is None or user is None or (if_none_match is not None and len(if_none_match) > 500):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # for the request metrics, as FastAPI would set it
        try:
            await charge_poll(self.services, user, scope)
            result = await self.services.chat.poll(
                user,
                params["session_id"],
                since=params.get("since") or None,
                limit=int(params.get("limit", "100")),
                wait=float(params.get("wait", "0")),
                if_none_match=if_none_match,
            )
        except PollchatError as exc:
            await error_response(exc.status_code, exc.message, exc.code, exc.retry_after)(scope, receive, send)
            return
        response_headers: list[tuple[bytes, bytes]] = [
            (b"etag", result.etag.encode()),
            (b"cache-control", b"private, no-cache"),
        ]
        if result.not_modified or result.page is None:
            await _respond(send, 304, response_headers, b"")
            return
        response_headers.append((b"content-type", b"application/json"))
        body = page_body(self.services, result)
        if len(body) >= self.gzip_min_bytes:
            # This layer sits outside the general gzip middleware (which costs every small
            # answer a detour): it compresses large pages itself, once per ETag.
            response_headers.append((b"vary", b"Accept-Encoding"))
            if b"gzip" in headers.get(b"accept-encoding", b""):
                body = self.services.bodies.get(result.etag + ";gzip", lambda: gzip.compress(body, compresslevel=6))
                response_headers.append((b"content-encoding", b"gzip"))
        await _respond(send, 200, response_headers, body)


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    if status != 304:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
