"""Polls and sends have one path: the plain-ASGI endpoint, whatever the token's age or the query's spelling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from pollchat.server.app import create_app
from pollchat.settings import Settings
from tests.conftest import API, Api, FakeClock, running
from tests.server.support import assert_error, metric, wait_parked


def forbid_framework(api: Api) -> list[str]:
    """Make FastAPI's stack refuse every request; returns the paths that reached it."""
    reached: list[str] = []

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])
        raise AssertionError(f"{scope['path']} went through FastAPI")

    api.app._framework_stack = refuse
    return reached


def forbid_storage(api: Api) -> None:
    services = api.app.state.services

    async def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("an idle poll reached storage")

    for name in ("changes", "get_session", "user_by_token_hash", "get_message"):
        setattr(services.storage, name, refuse)


async def warm(api: Api) -> tuple[str, str, str]:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hello")
    r = await api.poll(alice, "s1")
    return alice, r.json()["cursor"], r.headers["etag"]


async def test_hot_path_answers_idle_polls_without_storage_or_framework(api: Api) -> None:
    alice, cursor, etag = await warm(api)
    forbid_storage(api)
    reached = forbid_framework(api)
    r = await api.poll(alice, "s1", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.headers["etag"] == etag and r.content == b""
    empty = await api.poll(alice, "s1", since=cursor)
    assert empty.json() == {"success": True, "messages": [], "has_more": False, "cursor": cursor}
    assert reached == []
    api.app._framework_stack = api.app.framework
    metrics = (await api.http.get("/metrics")).text
    assert metric(metrics, "pollchat_http_requests_total", route=f"{API}/messages", status="304") == 1


async def test_hot_path_takes_a_long_poll_from_a_token_last_seen_30_s_ago(
    make_settings: Callable[..., Settings],
) -> None:
    """The poll front only knew tokens seen in the last 5 s and never refreshed them, so a
    client long-polling every 25-30 s always took the slow route."""
    clock = FakeClock()
    async with running(create_app(make_settings(), clock=clock)) as api:
        alice, cursor, _ = await warm(api)
        storage = api.app.state.services.storage
        lookups: list[str] = []
        lookup = storage.user_by_token_hash

        async def counted(token_hash: str) -> Any:
            lookups.append(token_hash)
            return await lookup(token_hash)

        storage.user_by_token_hash = counted
        clock.advance(30)
        reached = forbid_framework(api)
        poll = asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=5))
        await wait_parked(api, 1)
        clock.advance(1)
        assert (await api.send(alice, "s1", "wake up")).status_code == 201
        r = await poll
        assert [m["content"] for m in r.json()["messages"]] == ["wake up"]
        assert reached == []
        assert len(lookups) == 1  # the lapsed entry was refreshed once, then used


@pytest.mark.parametrize("query", ["limit=100", "limit=0100", "limit=1e2", "wait=0.00", "wait=0"])
async def test_hot_path_reads_every_spelling_of_a_query_the_same_way(api: Api, query: str) -> None:
    alice, _, _ = await warm(api)
    reached = forbid_framework(api)
    r = await api.http.get(f"{API}/messages?session_id=s1&{query}", headers=api.auth(alice))
    if query == "limit=1e2":
        assert_error(r, 400, "invalid_request")
    else:
        assert r.status_code == 200 and [m["content"] for m in r.json()["messages"]] == ["hello"]
    assert reached == []


async def test_hot_path_refuses_a_repeated_parameter(api: Api) -> None:
    alice, _, _ = await warm(api)
    r = await api.http.get(f"{API}/messages?session_id=s1&session_id=s2", headers=api.auth(alice))
    assert "`session_id`" in assert_error(r, 400, "duplicate_parameter")["error"]


async def test_hot_path_refusals_and_news(api: Api) -> None:
    alice, cursor, _ = await warm(api)
    await api.send(alice, "s1", "news")
    r = await api.poll(alice, "s1", since=cursor)
    assert [m["content"] for m in r.json()["messages"]] == ["news"]
    for params in ({"since": cursor, "limit": "0"}, {"since": "c_99_zz"}, {"since": cursor, "wait": "-1"}):
        assert_error(await api.poll(alice, "s1", **params), 400)
    assert_error(await api.poll(alice, "s1", wait="nan"), 400, "invalid_request")
    bob = await api.user("bob")
    assert_error(await api.poll(bob, "s1", since=cursor), 404, "session_not_found")
    assert_error(await api.poll("not-a-token", "s1", since=cursor), 401)
    assert_error(await api.http.delete(f"{API}/messages", headers=api.auth(alice)), 405, "method_not_allowed")


async def test_hot_path_wait_above_the_maximum_names_the_maximum(make_settings: Callable[..., Settings]) -> None:
    async with running(create_app(make_settings(max_wait=20))) as api:
        alice, _, _ = await warm(api)
        body = assert_error(await api.poll(alice, "s1", wait=30), 400, "wait_too_long")
        assert body["max_wait"] == 20


async def test_hot_path_polls_are_rate_limited_once_per_request(make_settings: Callable[..., Settings]) -> None:
    async with running(create_app(make_settings(poll_rate_limit="4/minute"))) as api:
        alice, cursor, _ = await warm(api)  # one poll spent
        codes = [(await api.poll(alice, "s1", since=cursor)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = await api.poll(alice, "s1", since=cursor)
        assert_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1


async def test_hot_path_sends_and_replays(api: Api) -> None:
    alice = await api.user("alice")
    reached = forbid_framework(api)
    first = await api.send(alice, "s1", "second", client_message_id="k2", metadata={"n": 1})
    assert first.status_code == 201
    message = first.json()["message"]
    assert first.json()["success"] is True and first.json()["message_id"] == message["id"]
    assert (message["content"], message["type"], message["metadata"]) == ("second", "user", {"n": 1})
    replay = await api.send(alice, "s1", "second", client_message_id="k2", metadata={"n": 1})
    assert replay.status_code == 200 and replay.json()["message_id"] == message["id"]
    assert reached == []
    api.app._framework_stack = api.app.framework
    metrics = (await api.http.get("/metrics")).text
    assert metric(metrics, "pollchat_http_requests_total", method="POST", route=f"{API}/messages", status="201") == 1
    assert metric(metrics, "pollchat_http_requests_total", method="POST", route=f"{API}/messages", status="200") == 1


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b'{"content": "x", "session_id": "s1"', "application/json", "invalid_json"),
        (b'{"content": NaN, "session_id": "s1"}', "application/json", "invalid_request"),
        (b'{"session_id": "s1"}', "application/json", "invalid_request"),
        (b'{"content": "x", "session_id": "no spaces"}', "application/json", "invalid_request"),
        (b'["x"]', "application/json", "invalid_request"),
        (b'{"content": "\\ud800", "session_id": "s1"}', "application/json", "invalid_request"),
        (b"content=x&session_id=s1", "application/x-www-form-urlencoded", "invalid_json"),
    ],
)
async def test_hot_path_refuses_bad_sends_and_stores_nothing(
    api: Api, body: bytes, content_type: str, code: str
) -> None:
    alice = await api.user("alice")
    assert (await api.send(alice, "s1", "hello")).status_code == 201
    r = await api.http.post(f"{API}/messages", content=body, headers={**api.auth(alice), "Content-Type": content_type})
    assert_error(r, 400, code)
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["hello"]


async def test_hot_path_reads_a_json_body_sent_without_a_content_type(api: Api) -> None:
    """``curl -d`` labels JSON as a form; the body is read as JSON all the same."""
    alice = await api.user("alice")
    for content_type in (None, "application/x-www-form-urlencoded"):
        headers = api.auth(alice) | ({"Content-Type": content_type} if content_type else {})
        r = await api.http.post(f"{API}/messages", content=b'{"content": "hi", "session_id": "s1"}', headers=headers)
        assert r.status_code == 201, r.text


async def test_hot_path_sends_are_rate_limited(make_settings: Callable[..., Settings]) -> None:
    async with running(create_app(make_settings(send_rate_limit="3/minute"))) as api:
        alice = await api.user("alice")
        codes = [(await api.send(alice, "s1", f"m{i}")).status_code for i in range(4)]
        assert codes == [201, 201, 201, 429]
        r = await api.send(alice, "s1", "again")
        assert_error(r, 429, "send_rate_limited")
        assert int(r.headers["retry-after"]) >= 1


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_hot_path_turns_a_failure_into_the_error_shape(api: Api, method: str) -> None:
    alice, cursor, _ = await warm(api)

    async def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom")

    services = api.app.state.services
    services.polling.poll = fail
    services.sending.send_one = fail
    if method == "GET":
        r = await api.poll(alice, "s1", since=cursor)
    else:
        r = await api.send(alice, "s1", "again")
    assert_error(r, 500, "internal_error")
    metrics = (await api.http.get("/metrics")).text
    assert metric(metrics, "pollchat_http_requests_total", method=method, route=f"{API}/messages", status="500") == 1


async def test_hot_path_remembers_nothing_of_unauthenticated_requests(api: Api) -> None:
    """The raw query was cached before the token was checked: 4,090 unauthenticated polls with a
    65 KB ``since`` grew the server by 250 MB."""
    endpoint = api.app._endpoints[f"{API}/messages"]
    for i in range(50):
        r = await api.http.get(f"{API}/messages?session_id=s{i}&since={'x' * 2000}", headers=api.auth("nobody"))
        assert_error(r, 401)
        assert_error(await api.http.get(f"{API}/messages?session_id=s{i}"), 401)
    assert len(endpoint._queries) == 0


async def test_hot_path_names_a_missing_field(api: Api) -> None:
    """ "Field required" did not say which field."""
    alice = await api.user("alice")
    r = await api.http.post(f"{API}/messages", json={"session_id": "s1"}, headers=api.auth(alice))
    assert "`content` is required" in assert_error(r, 400, "invalid_request")["error"]
    r = await api.http.get(f"{API}/messages", headers=api.auth(alice))
    assert "`session_id` is required" in assert_error(r, 400, "invalid_request")["error"]
