"""The shared client-behaviour corpus (``tests/client_cases``) replayed against ``PollingChatService``.

Each case runs on the fake clock behind an ``httpx.MockTransport`` that answers from the case's
script. The transport also does what httpx's timeouts would do on real time: a request whose
answer does not come within its read timeout fails with ``httpx.ReadTimeout``. The browser's
twin of this file is ``tests/browser/test_cases.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import pytest

from pollchat.client import ConnectionStatus, MessageEvent, PollingChatService, PollingStrategy, RequestFailed
from tests.client.conftest import BASE_URL, TOKEN, FakeClock
from tests.client_cases import CASES, Case, check, collapse, event_record, request_record, route_of


class FixedRandom(random.Random):
    """A random source that always draws the same number, so jitter is known in advance."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class Script:
    """A transport that answers each route's requests with that route's scripted answers, in order."""

    def __init__(self, case: Case, clock: FakeClock) -> None:
        self.clock = clock
        self.answers = {route: list(answers) for route, answers in case.answers.items()}
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append(
            request_record(
                at=self.clock.elapsed,
                method=request.method,
                path=request.url.path,
                params=dict(request.url.params),
                if_none_match=request.headers.get("if-none-match"),
                body=body,
            )
        )
        queue = self.answers.get(route_of(request.method, request.url.path), [])
        answer = queue.pop(0) if queue else None
        timeout = request.extensions["timeout"]["read"]
        if answer is None or answer["after"] >= timeout:
            # No answer (the script has none left, or it comes too late): the client's timeout ends it.
            await self.clock.wait(timeout)
            raise httpx.ReadTimeout("timed out", request=request)
        await self.clock.wait(answer["after"])
        if answer.get("fail") == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if answer.get("fail") == "reset":
            raise httpx.ReadError("connection reset", request=request)
        if "json" in answer:
            return httpx.Response(answer["status"], headers=answer["headers"], json=answer["json"])
        return httpx.Response(answer["status"], headers=answer["headers"], text=answer.get("text", ""))


def strategy_of(case: Case) -> PollingStrategy:
    """The case's strategy settings over the client's defaults."""
    settings = dict(case.strategy)
    if "send_retry_delays" in settings:
        settings["send_retry_delays"] = tuple(settings["send_retry_delays"])
    return PollingStrategy(**settings)


async def replay(case: Case) -> dict[str, Any]:
    """Run ``case`` against a fresh service and return what it observed."""
    clock = FakeClock()
    script = Script(case, clock)
    service = PollingChatService(
        BASE_URL,
        TOKEN,
        "s1",
        strategy=strategy_of(case),
        transport=httpx.MockTransport(script.handle),
        clock=clock,
        rng=FixedRandom(case.random),
        request_timeout=case.request_timeout,
    )
    events: list[list[Any]] = []
    states = [service.connection_status.state]

    def on_message(event: MessageEvent) -> None:
        shown = event.message
        events.append(event_record(event.kind, {"id": shown.id, "content": shown.content, "status": shown.status}))

    def on_status(status: ConnectionStatus) -> None:
        states.append(status.state)

    unauthorized: list[RequestFailed] = []
    service.on_message(on_message)
    service.on_status(on_status)
    service.on_unauthorized(unauthorized.append)

    async def act(action: dict[str, Any]) -> None:
        await clock.wait(float(action["at"]))
        service.enqueue(action["send"])

    actions = [asyncio.ensure_future(act(action)) for action in case.actions]
    try:
        await service.start_polling()
        await clock.run_for(case.run_for)
        status = service.connection_status
        for task in (service._poller, service._sender):
            # A loop that died with an exception would otherwise pass for one that stopped.
            if task is not None and task.done() and not task.cancelled():
                assert task.exception() is None, task.exception()
        return {
            "requests": script.requests,
            "events": events,
            "states": collapse(states),
            "status": {
                "state": status.state,
                "error_count": status.error_count,
                "polling_active": status.polling_active,
                "last_error": status.last_error,
            },
            "unauthorized": len(unauthorized),
        }
    finally:
        for task in actions:
            task.cancel()
        await service.aclose()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_python_client_case(case: Case) -> None:
    check(case, await replay(case))
