"""``GET /metrics``: Prometheus counters follow the app's activity."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pollchat.settings import Settings
from tests.conftest import API, Api
from tests.server.support import metric, wait_parked


async def scrape(api: Api) -> str:
    r = await api.http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_metrics_count_requests_by_method_route_and_status(api: Api) -> None:
    alice = await api.user("alice")
    for i in range(3):
        await api.send(alice, "s1", f"m{i}")
    await api.send(alice, "s1", "")
    await api.http.get(f"{API}/sessions/s1", headers=api.auth(alice))
    await api.http.get(f"{API}/sessions/s1")
    text = await scrape(api)
    route = "/api/v1/admin/chat/messages"
    assert metric(text, "pollchat_http_requests_total", method="POST", route=route, status="201") == 3
    assert metric(text, "pollchat_http_requests_total", method="POST", route=route, status="400") == 1
    session_route = "/api/v1/admin/chat/sessions/{session_id}"
    assert metric(text, "pollchat_http_requests_total", method="GET", route=session_route, status="200") == 1
    assert metric(text, "pollchat_http_requests_total", method="GET", route=session_route, status="401") == 1
    assert metric(text, "pollchat_http_requests_total", method="POST", route="/api/v1/admin/users", status="201") == 1


async def test_metrics_unmatched_paths_share_one_label(api: Api) -> None:
    for i in range(3):
        await api.http.get(f"/no/such/path/{i}")
    text = await scrape(api)
    assert metric(text, "pollchat_http_requests_total", method="GET", route="unmatched", status="404") == 3
    assert "/no/such/path" not in text


async def test_metrics_count_polls_by_outcome(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    first = await api.poll(alice, "s1")  # data
    _, cursor = await api.drain(alice, "s1")  # data
    await api.poll(alice, "s1", since=cursor)  # empty
    await api.poll(alice, "s1", since=cursor, wait=0.05)  # empty after waiting
    await api.poll(alice, "s1", headers={"If-None-Match": first.headers["etag"]})  # not_modified
    text = await scrape(api)
    assert metric(text, "pollchat_polls_total", outcome="data") == 2
    assert metric(text, "pollchat_polls_total", outcome="empty") == 2
    assert metric(text, "pollchat_polls_total", outcome="not_modified") == 1


async def test_metrics_count_stored_messages_by_type_not_replays(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "a", client_message_id="k")
    await api.send(alice, "s1", "a", client_message_id="k")
    await api.send(alice, "s1", "b")
    await api.send(op, "s1", "reply", type="assistant")
    await api.send(alice, "s1", "", client_message_id="refused")
    text = await scrape(api)
    assert metric(text, "pollchat_messages_stored_total", type="user") == 2
    assert metric(text, "pollchat_messages_stored_total", type="assistant") == 1


async def test_metrics_parked_long_polls_gauge(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    _, cursor = await api.drain(alice, "s1")
    polls = [asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=5)) for _ in range(2)]
    await wait_parked(api, 2)
    assert metric(await scrape(api), "pollchat_parked_long_polls") == 2
    await api.send(alice, "s1", "wake")
    await asyncio.gather(*polls)
    text = await scrape(api)
    assert metric(text, "pollchat_parked_long_polls") == 0
    assert metric(text, "pollchat_wake_latency_seconds_count") == 2


async def test_metrics_count_rate_limited_requests(make_api: Any, make_settings: Callable[..., Settings]) -> None:
    async with make_api(make_settings(send_rate_limit="1/minute", poll_rate_limit="1/minute")) as api:
        alice = await api.user("alice")
        await api.send(alice, "s1", "hi")
        await api.send(alice, "s1", "no")
        await api.send(alice, "s1", "no")
        await api.poll(alice, "s1")
        await api.poll(alice, "s1")
        text = await scrape(api)
        assert metric(text, "pollchat_rate_limited_total", kind="send") == 2
        assert metric(text, "pollchat_rate_limited_total", kind="poll") == 1
        route = "/api/v1/admin/chat/messages"
        assert metric(text, "pollchat_http_requests_total", method="POST", route=route, status="429") == 2


async def test_metrics_belong_to_one_app(make_api: Any, make_settings: Callable[..., Settings], api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    async with make_api(make_settings()) as other:
        assert metric(await scrape(other), "pollchat_messages_stored_total", type="user") == 0
    assert metric(await scrape(api), "pollchat_messages_stored_total", type="user") == 1


async def test_metrics_have_no_created_series(api: Api) -> None:
    """``/metrics`` doubled its output with ``_created`` series nobody reads."""
    alice = await api.user("alice")
    await api.send(alice, "s1", "hello")
    text = (await api.http.get("/metrics")).text
    assert "pollchat_http_requests_total" in text
    assert "_created" not in text
