"""``/api/v1/admin/chat/messages``: polls and single sends, the hot path, in plain ASGI.

Polling is most of a chat's traffic, and most polls of a quiet chat change nothing (a 304, an
empty page, a parked long poll): the notifier and caches answer those without storage, and a
framework's routing, dependency solving and per-request objects would cost many times the
answer itself, and hold a larger stack per parked poll. So this endpoint is the one path for
these two operations: the app routes them here ahead of FastAPI, after the checks every
request meets (``pollchat.server.app``); it authenticates, validates with the API's own models and
answers every refusal through the one error mapping. FastAPI only describes these routes in
the OpenAPI document (``pollchat.server.routes.messages``).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from pollchat.domain.errors import BadRequest, MethodNotAllowed
from pollchat.domain.records import Appended, User
from pollchat.domain.rules import IF_NONE_MATCH_MAX
from pollchat.server.bodies import PageKey
from pollchat.server.deps import Services, limited
from pollchat.server.http import respond
from pollchat.server.models import ChatMessage, GetMessagesResponse, PollQuery, SendMessageRequest, SendMessageResponse
from pollchat.services.polling import PollResult
from pollchat.services.sending import SendItem

PATH = "/api/v1/admin/chat/messages"
# Many pollers send the very same query (one session, one cursor): each is parsed once. Only
# queries of authenticated callers that validated are kept, bounded in number and length.
QUERY_CACHE_SIZE = 4096
QUERY_CACHE_MAX_LENGTH = 512
_JSON = (b"content-type", b"application/json")
# Pages with more text than this are serialised and compressed on a worker thread.
OFFLOAD_BYTES = 64 * 1024


def send_item(request: SendMessageRequest) -> SendItem:
    """What the send service is asked to send."""
    return SendItem(
        content=request.content,
        session_id=request.session_id,
        type=request.type,
        client_message_id=request.client_message_id,
        client_name=request.client_name,
        metadata=request.metadata,
    )


def send_result(result: Appended) -> SendMessageResponse:
    """The answer for one message of a send: its stored form, or why it was refused."""
    if result.message is None:
        error = result.error
        return SendMessageResponse(success=False, error=str(error), code=getattr(error, "code", "error"))
    return SendMessageResponse(success=True, message_id=result.message.id, message=ChatMessage.of(result.message))


def parse_json(body: bytes) -> object:
    """A request body as JSON, or the one refusal for a body that is not."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON", code="invalid_json") from None


class MessagesEndpoint:
    """``GET`` polls and ``POST`` sends one message."""

    def __init__(self, *, services: Services) -> None:
        self.services = services
        self._queries: OrderedDict[bytes, PollQuery] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        method = scope["method"]
        if method not in ("GET", "POST"):
            raise MethodNotAllowed(f"{method} is not allowed here; use GET or POST")
        # One read of the headers (the app refused a request naming Authorization twice),
        # keeping only the values: a parked poll holds these frames for up to a minute.
        headers: dict[bytes, bytes] = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if method == "POST":
            return await self._send(receive, send, await self.services.auth.authenticate(authorization or None))
        if_none_match, accept_encoding = headers.get(b"if-none-match", b""), headers.get(b"accept-encoding", b"")
        del headers
        user = await self.services.auth.authenticate(authorization or None)
        gzip_ok = self.services.compression.accepted(accept_encoding)
        return await self._poll(scope, send, user, if_none_match, gzip_ok)

    def _query(self, raw: bytes) -> PollQuery:
        query = self._queries.get(raw)
        if query is not None:
            return query
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        params = dict(pairs)
        if len(params) != len(pairs):
            repeated = next(name for name, _ in pairs if sum(1 for n, _ in pairs if n == name) > 1)
            raise BadRequest(f"`{repeated}` is given more than once", code="duplicate_parameter")
        if params.get("since") == "":
            del params["since"]
        query = PollQuery.model_validate(params)
        if len(raw) <= QUERY_CACHE_MAX_LENGTH:
            self._queries[raw] = query
            if len(self._queries) > QUERY_CACHE_SIZE:
                self._queries.popitem(last=False)
        return query

    async def _poll(self, scope: Scope, send: Send, user: User, if_none_match: bytes, gzip_ok: bool) -> int:
        services = self.services
        await limited(services, "poll", user)
        query = self._query(scope["query_string"])
        max_wait = services.settings.max_wait
        if query.wait > max_wait:
            raise BadRequest(
                f"`wait` is at most {max_wait:g} seconds", code="wait_too_long", details={"max_wait": max_wait}
            )
        if len(if_none_match) > IF_NONE_MATCH_MAX:
            raise BadRequest(f"If-None-Match is longer than {IF_NONE_MATCH_MAX} bytes", code="bad_if_none_match")
        result = await services.polling.poll(
            user,
            query.session_id,
            since=query.since,
            limit=query.limit,
            wait=query.wait,
            if_none_match=if_none_match.decode("latin-1") or None,
        )
        answer = [(b"etag", result.etag.encode()), (b"cache-control", b"private, no-cache")]
        if result.page is None:
            await respond(send, 304, answer)
            return 304
        answer.append(_JSON)
        body = self._page_body(result)
        if body is None:
            body = await self._large_page_body(result)
        if services.compression.applies(len(body)):
            answer.append((b"vary", b"Accept-Encoding"))
            if gzip_ok:
                body = await self._gzipped(result, body)
                answer.append((b"content-encoding", b"gzip"))
        await respond(send, 200, answer, body)
        return 200

    # Building and compressing a page of up to ``max_page_bytes`` takes milliseconds: done on
    # the event loop, it would hold up every other request meanwhile. So a page with much text
    # is built on a worker thread; the many small ones (a woken fan-out) without a coroutine.

    @staticmethod
    def _key(result: PollResult, encoding: str) -> PageKey:
        assert result.page is not None
        return PageKey(result.session_id, result.page.head, result.after, result.limit, encoding)

    @staticmethod
    def _build(result: PollResult) -> bytes:
        page = result.page
        assert page is not None
        messages = [ChatMessage.of(m) for m in page.messages]
        return (
            GetMessagesResponse(messages=messages, has_more=page.has_more, cursor=result.cursor)
            .model_dump_json()
            .encode()
        )

    def _page_body(self, result: PollResult) -> bytes | None:
        """The JSON of a poll's page, kept or built now; None when it is to be built off the loop."""
        assert result.page is not None
        key = self._key(result, "identity")
        body = self.services.bodies.get(key)
        if body is None and sum(len(m.content) for m in result.page.messages) <= OFFLOAD_BYTES:
            body = self._build(result)
            self.services.bodies.put(key, body)
        return body

    async def _large_page_body(self, result: PollResult) -> bytes:
        """The JSON of a poll's large page, built on a worker thread."""
        body = await asyncio.to_thread(self._build, result)
        self.services.bodies.put(self._key(result, "identity"), body)
        return body

    async def _gzipped(self, result: PollResult, plain: bytes) -> bytes:
        """A page's JSON ``plain``, gzipped once per page (a large one on a worker thread)."""
        key = self._key(result, "gzip")
        body = self.services.bodies.get(key)
        if body is None:
            if len(plain) > OFFLOAD_BYTES:
                body = await asyncio.to_thread(self.services.compression.compress, plain)
            else:
                body = self.services.compression.compress(plain)
            self.services.bodies.put(key, body)
        return body

    async def _send(self, receive: Receive, send: Send, user: User) -> int:
        services = self.services
        await limited(services, "send", user)
        message = await receive()  # the app read the body whole (bounded) before routing here
        request = SendMessageRequest.model_validate(parse_json(message.get("body", b"")))
        result = await services.sending.send_one(user, send_item(request))
        body = send_result(result).model_dump_json().encode()
        status = 201 if result.created else 200
        await respond(send, status, [_JSON], body)
        return status
