"""Polls, answered in plain ASGI.

Polling is the hot path: most polls of a quiet chat change nothing (a 304, an empty page, a
parked long poll), and the notifier and caches answer those without storage. Going through
FastAPI's routing, dependency solving and validation would still cost many times the answer
itself, and hold a much larger stack per parked poll. So the app offers every poll to this front
first, ahead of its middleware stack: polls in their plain canonical form, from a recently seen
token, go straight to ``ChatService.poll`` (the function the full route calls), and the front
writes the answer itself. Anything else (an unusual spelling of a
parameter, a token not seen lately) goes on to the full route, which validates it and answers
the same way, only slower.
"""

from __future__ import annotations

import gzip
import re
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from pollchat.api.deps import Services, charge_poll
from pollchat.api.errors import failure_response
from pollchat.api.messages import page_body
from pollchat.domain.records import User
from pollchat.domain.rules import SESSION_ID_RE
from pollchat.middleware import RequestCounter, header_values

PATH = "/api/v1/admin/chat/messages"
QUERY_CACHE_SIZE = 4096
_KNOWN = {"session_id", "since", "limit", "wait"}
_HEADERS = (b"authorization", b"if-none-match", b"accept-encoding")
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


class PollFront:
    """Answers plainly spelled polls before FastAPI and its middleware; declines the rest.

    The app calls ``answer`` first for every ``GET`` of the poll path, ahead of its whole
    middleware stack (error pages, telemetry, body limit, metrics, gzip): each of those layers
    costs every poll a detour and every parked poll a frame. This front does what they would
    for a poll: it counts the request, compresses large pages (once per ETag), and turns a
    failure into the error shape.
    """

    def __init__(self, *, services: Services, requests: RequestCounter) -> None:
        self.services = services
        self.requests = requests
        self.max_wait = min(60.0, services.settings.max_wait)
        self.gzip_min_bytes = services.settings.gzip_min_bytes
        # Many pollers send the very same query (one session, one cursor): parse each once.
        self._queries: dict[bytes, dict[str, str] | None] = {}

    def _params(self, raw: bytes) -> dict[str, str] | None:
        try:
            return self._queries[raw]
        except KeyError:
            pass
        if len(self._queries) >= QUERY_CACHE_SIZE:
            self._queries.clear()
        params = self._queries[raw] = _plain_query(raw, self.max_wait)
        return params

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the poll ``scope`` describes; False (having sent nothing) to leave it to the full route."""
        params = self._params(scope["query_string"])
        if params is None:
            return False
        authorization, if_none_match, accept_encoding = header_values(scope, _HEADERS)
        user = self.services.auth.remembered(authorization.decode("latin-1"))
        if user is None or len(if_none_match) > 500:
            return False
        status = 500
        try:
            status = await self._poll(scope, send, user, params, if_none_match, b"gzip" in accept_encoding)
        except Exception as exc:  # answered as the full route's exception handlers would
            response = failure_response(exc)
            status = response.status_code
            await response(scope, receive, send)
        finally:
            self.requests.count("GET", PATH, status)
        return True

    async def _poll(
        self, scope: Scope, send: Send, user: User, params: dict[str, str], if_none_match: bytes, gzip_ok: bool
    ) -> int:
        services = self.services
        await charge_poll(services, user, scope)
        result = await services.chat.poll(
            user,
            params["session_id"],
            since=params.get("since") or None,
            limit=int(params.get("limit", "100")),
            wait=float(params.get("wait", "0")),
            if_none_match=if_none_match.decode("latin-1") or None,
        )
        headers: list[tuple[bytes, bytes]] = [
            (b"etag", result.etag.encode()),
            (b"cache-control", b"private, no-cache"),
        ]
        if result.not_modified or result.page is None:
            await _respond(send, 304, headers, b"")
            return 304
        headers.append((b"content-type", b"application/json"))
        body = page_body(services, result)
        if len(body) >= self.gzip_min_bytes:
            headers.append((b"vary", b"Accept-Encoding"))
            if gzip_ok:
                body = services.bodies.get(result.etag + ";gzip", lambda: gzip.compress(body, compresslevel=6))
                headers.append((b"content-encoding", b"gzip"))
        await _respond(send, 200, headers, body)
        return 200


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    if status != 304:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
