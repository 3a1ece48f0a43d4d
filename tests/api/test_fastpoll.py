"""Polls are answered before FastAPI (idle ones from memory), exactly as the full route would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from pollchat.app import create_app
from pollchat.chat import SendItem
from pollchat.settings import Settings
from tests.api.support import assert_error, wait_parked
from tests.conftest import Api, running


def forbid_storage_and_full_route(api: Api) -> None:
    services = api.app.state.services

    async def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("an idle poll reached storage or the full route")

    for name in ("changes", "get_session", "user_by_token_hash", "get_message"):
        setattr(services.storage, name, refuse)
    # The full route authenticates through its dependency; the fast path only asks what it remembers.
    services.auth.authenticate = refuse


async def warm(api: Api) -> tuple[str, str, str]:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hello")
    r = await api.poll(alice, "s1")
    return alice, r.json()["cursor"], r.headers["etag"]


async def test_fast_poll_answers_304_and_empty_pages_without_storage(api: Api) -> None:
    alice, cursor, etag = await warm(api)
    full = await api.poll(alice, "s1", since=cursor)
    forbid_storage_and_full_route(api)
    r = await api.poll(alice, "s1", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.headers["etag"] == etag and r.content == b""
    fast = await api.poll(alice, "s1", since=cursor)
    assert fast.status_code == 200
    assert fast.json() == full.json() == {"success": True, "messages": [], "has_more": False, "cursor": cursor}
    assert fast.headers["etag"] == full.headers["etag"]
    metrics = (await api.http.get("/metrics")).text
    assert 'route="/api/v1/admin/chat/messages",status="304"' in metrics


async def test_fast_poll_parks_and_wakes_long_polls_without_the_full_route(api: Api) -> None:
    alice, cursor, _ = await warm(api)
    services = api.app.state.services

    async def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a plain poll went through the full route")

    services.auth.authenticate = refuse
    poll = asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=5))
    await wait_parked(api, 1)
    # Sent through the service: the full route's authentication is switched off above.
    await services.chat.send_one(
        services.auth.remembered(f"Bearer {alice}"), SendItem(content="wake up", session_id="s1")
    )
    r = await poll
    assert r.status_code == 200 and [m["content"] for m in r.json()["messages"]] == ["wake up"]


async def test_fast_poll_leaves_news_and_odd_requests_to_the_full_route(api: Api) -> None:
    alice, cursor, _ = await warm(api)
    await api.send(alice, "s1", "news")
    r = await api.poll(alice, "s1", since=cursor)
    assert [m["content"] for m in r.json()["messages"]] == ["news"]
    for params in ({"since": cursor, "limit": "0"}, {"since": "c_99_zz"}, {"since": cursor, "wait": "-1"}):
        assert_error(await api.poll(alice, "s1", **params), 400)
    bob = await api.user("bob")
    assert_error(await api.poll(bob, "s1", since=cursor), 404)
    assert_error(await api.poll("not-a-token", "s1", since=cursor), 401)


async def test_fast_poll_is_rate_limited_once_per_request(make_settings: Callable[..., Settings]) -> None:
    async with running(create_app(make_settings(poll_rate_limit="4/minute"))) as api:
        alice, cursor, _ = await warm(api)  # one poll spent
        forbid_storage_and_full_route(api)
        codes = [(await api.poll(alice, "s1", since=cursor)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = await api.poll(alice, "s1", since=cursor)
        assert_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1


@pytest.mark.parametrize("query", ["limit=05", "wait=0.00", "session_id=s1&session_id=s1"])
async def test_fast_poll_declines_unusual_spellings(api: Api, query: str) -> None:
    alice, _, _ = await warm(api)
    r = await api.http.get(f"/api/v1/admin/chat/messages?session_id=s1&{query}", headers=api.auth(alice))
    assert r.status_code == 200


async def test_fast_poll_turns_a_failure_into_the_error_shape(api: Api) -> None:
    alice, cursor, _ = await warm(api)

    async def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom")

    api.app.state.services.chat.poll = fail
    assert_error(await api.poll(alice, "s1", since=cursor), 500, "internal_error")
    metrics = (await api.http.get("/metrics")).text
    assert 'method="GET",route="/api/v1/admin/chat/messages",status="500"} 1.0' in metrics
