"""Pure ASGI middleware: the request body size limit and per-route request metrics."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pollchat.metrics import Metrics


def header_values(scope: Scope, names: tuple[bytes, ...]) -> list[bytes]:
    """The values of the request headers ``names`` (lower-case), in that order; ``b""`` for a missing one."""
    values = [b""] * len(names)
    for name, value in scope["headers"]:
        if name in names:
            values[names.index(name)] = value
    return values


async def _refuse(send: Send, status: int, error: str, code: str) -> None:
    body = json.dumps({"success": False, "error": error, "code": code}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413 before any of them reaches a route.

    The body is read here in full (it is bounded) and replayed to the app, so a route never
    sees half a body and a refusal never leaves a half-done change behind.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await _refuse(send, 413, too_large, "body_too_large")
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(send, 413, too_large, "body_too_large")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay_body(b"".join(chunks), receive), send)


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


class RequestCounter:
    """Counts answered requests by method, route template and status."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # prometheus_client's labels() takes a lock and builds a key on every call: keep the
        # children, whose set is small (methods x routes x statuses).
        self._counters: dict[tuple[str, str, int], Any] = {}

    def count(self, method: str, template: str, status: int) -> None:
        """One more request answered."""
        key = (method, template, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(method, template, str(status))
        counter.inc()


class MetricsMiddleware:
    """Counts every request the app answers (polls answered up front count themselves)."""

    def __init__(self, app: ASGIApp, *, requests: RequestCounter) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            self.requests.count(scope["method"], getattr(route, "path", None) or "unmatched", status)
