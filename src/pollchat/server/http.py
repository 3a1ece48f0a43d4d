"""How every request is read, whichever endpoint answers it: headers, bodies, raw answers.

These are the request rules that once had two homes (the plain-ASGI fronts read headers one
way, Starlette another, and a request with two ``Authorization`` headers ran as one user or
the other depending on how its query was spelled). Now the app applies them once, ahead of
every endpoint.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from starlette.types import Message, Receive, Scope, Send

from pollchat.domain.errors import BadRequest, PayloadTooLarge, RequestTimeout

# Headers that name who is asking or what a body is: a second copy is ambiguous, and two
# readers could each pick a different one. A request carrying one twice is refused.
SINGLE_HEADERS = (b"authorization", b"content-type", b"content-length")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# The refusals of ``BodyReader``: after them the rest of the body stays unread, so the answer
# closes the connection.
UNREAD_BODY_CODES = frozenset({"body_too_large", "body_timeout"})
# The body types a client may label JSON with. ``curl -d`` says form-urlencoded and many
# tools say nothing at all: their bodies are read as JSON too, and refused as not JSON when
# they are not.
_JSON_TYPE = b"application/json"
_READ_AS_JSON = (b"", b"application/x-www-form-urlencoded", b"text/plain")


class Endpoint(Protocol):
    """A plain-ASGI endpoint of the hot path: it answers, and returns the status it answered.

    Raising instead is answering in the error shape (the app maps the exception), as long as
    the endpoint sent nothing yet; the endpoints send their whole answer last.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int: ...


class ClientDisconnected(Exception):
    """The client went away before its request was whole: there is nothing to answer."""


def header(scope: Scope, name: bytes) -> bytes:
    """The value of request header ``name`` (lower-case), ``b""`` when absent.

    Only for the headers of ``SINGLE_HEADERS`` (checked unique before any endpoint runs) or
    headers where any copy will do.
    """
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


def check_headers(scope: Scope) -> None:
    """Refuse a request that carries one of ``SINGLE_HEADERS`` more than once."""
    headers = scope["headers"]
    if len(dict(headers)) == len(headers):
        return  # no name twice at all: the common case, checked in C
    seen: set[bytes] = set()
    for key, _ in scope["headers"]:
        if key in SINGLE_HEADERS:
            if key in seen:
                raise BadRequest(f"the {key.decode().title()} header is given more than once", code="duplicate_header")
            seen.add(key)


def read_as_json(scope: Scope) -> None:
    """Label a body sent without a JSON content type as JSON, so every endpoint parses it one way."""
    content_type = header(scope, b"content-type").split(b";")[0].strip().lower()
    if content_type in _READ_AS_JSON:
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        headers.append((b"content-type", _JSON_TYPE))
        scope["headers"] = headers


class BodyReader:
    """Reads a request body whole, up to ``max_bytes``; a larger one is refused with 413.

    A refused body is still read (and dropped) up to ``drain_bytes`` before the answer: a
    client that is still sending when the server closes the connection sees a reset, not the
    413, and client libraries retry a reset as a network fault for ever.
    """

    def __init__(self, *, max_bytes: int, drain_bytes: int, timeout: float) -> None:
        self.max_bytes = max_bytes
        self.drain_bytes = max(drain_bytes, max_bytes)
        self.timeout = timeout

    async def read(self, scope: Scope, receive: Receive) -> bytes | None:
        """The body; None if the client went away first.

        Raises ``PayloadTooLarge`` past the limit, ``RequestTimeout`` when the body takes longer
        than ``timeout`` seconds (a slow sender holds a connection and a task meanwhile).
        """
        try:
            async with asyncio.timeout(self.timeout):
                return await self._read(scope, receive)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.timeout:g} seconds", code="body_timeout"
            ) from None

    async def _read(self, scope: Scope, receive: Receive) -> bytes | None:
        length = header(scope, b"content-length")
        declared = int(length) if length.isdigit() else None
        if length and declared is None:
            raise BadRequest("the Content-Length header is not a number", code="bad_content_length")
        too_large = declared is not None and declared > self.max_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                too_large = True
            if not too_large:
                chunks.append(chunk)
            if not message.get("more_body", False) or size > self.drain_bytes:
                break
        if too_large:
            raise PayloadTooLarge(f"the request body is larger than {self.max_bytes} bytes", code="body_too_large")
        return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` (read already) once, then whatever the connection says next."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
    """Send a whole answer (``Content-Length`` added, except on 304)."""
    if status != 304:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
