"""Long polls: woken by a commit, empty after ``wait``, and capped per user."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pollchat.settings import Settings
from tests.conftest import API, Api
from tests.server.support import assert_error, metric, wait_parked


async def scrape(api: Api) -> str:
    return (await api.http.get("/metrics")).text


async def test_long_poll_wakes_when_a_message_is_sent(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "first")
    _, cursor = await api.drain(alice, "s1")
    started = time.monotonic()
    poll = asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=5))
    await wait_parked(api, 1)
    assert not poll.done()
    sent = await api.send(alice, "s1", "second")
    r = await poll
    elapsed = time.monotonic() - started
    assert r.status_code == 200
    body = r.json()
    assert [m["id"] for m in body["messages"]] == [sent.json()["message_id"]]
    assert body["cursor"] != cursor
    assert elapsed < 3, elapsed
    assert api.app.state.services.notifier.parked == 0


async def test_long_poll_answers_at_once_when_something_is_already_newer(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "already there")
    started = time.monotonic()
    r = await api.poll(alice, "s1", wait=5)
    assert [m["content"] for m in r.json()["messages"]] == ["already there"]
    assert time.monotonic() - started < 3


async def test_long_poll_times_out_empty_with_the_same_cursor(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "first")
    _, cursor = await api.drain(alice, "s1")
    started = time.monotonic()
    r = await api.poll(alice, "s1", since=cursor, wait=0.5)
    assert time.monotonic() - started >= 0.4
    assert r.status_code == 200
    assert r.json() == {"success": True, "messages": [], "has_more": False, "cursor": cursor}
    assert "etag" in r.headers
    assert api.app.state.services.notifier.parked == 0


async def test_long_poll_is_not_woken_by_another_session(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "first")
    _, cursor = await api.drain(alice, "s1")
    poll = asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=0.5))
    await wait_parked(api, 1)
    await api.send(alice, "s2", "elsewhere")
    r = await poll
    assert r.json()["messages"] == [] and r.json()["cursor"] == cursor


async def test_long_poll_wakes_every_poller_of_the_session(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "first")
    _, op_cursor = await api.drain(op, "s1")  # delivers "first": alice's cursor must come after
    _, alice_cursor = await api.drain(alice, "s1")
    polls = [
        asyncio.create_task(api.poll(alice, "s1", since=alice_cursor, wait=5)),
        asyncio.create_task(api.poll(op, "s1", since=op_cursor, wait=5)),
    ]
    await wait_parked(api, 2)
    await api.send(op, "s1", "reply", type="assistant")
    for r in await asyncio.gather(*polls):
        assert "reply" in [m["content"] for m in r.json()["messages"]]


async def test_long_poll_wakes_the_author_when_its_message_is_delivered(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    sent = (await api.send(alice, "s1", "hello")).json()["message_id"]
    _, cursor = await api.drain(alice, "s1")
    poll = asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=5))
    await wait_parked(api, 1)
    await api.drain(op, "s1")
    body = (await poll).json()
    assert [(m["id"], m["status"]) for m in body["messages"]] == [(sent, "delivered")]


async def test_long_poll_per_user_cap_answers_429_with_retry_after(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    async with make_api(make_settings(max_parked_polls_per_user=2)) as api:
        alice = await api.user("alice")
        bob = await api.user("bob")
        await api.send(alice, "s1", "first")
        await api.send(bob, "b1", "first")
        _, cursor = await api.drain(alice, "s1")
        parked = [asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=5)) for _ in range(2)]
        await wait_parked(api, 2)
        third = await api.poll(alice, "s1", since=cursor, wait=5)
        assert_error(third, 429, "too_many_long_polls")
        assert int(third.headers["retry-after"]) >= 1
        # Short polls are not parked, and another user has a cap of its own.
        assert (await api.poll(alice, "s1", since=cursor)).status_code == 200
        _, bob_cursor = await api.drain(bob, "b1")
        bobs = asyncio.create_task(api.poll(bob, "b1", since=bob_cursor, wait=5))
        await wait_parked(api, 3)
        await api.send(alice, "s1", "wake")
        await api.send(bob, "b1", "wake")
        for r in [*await asyncio.gather(*parked), await bobs]:
            assert r.status_code == 200
            assert [m["content"] for m in r.json()["messages"]] == ["wake"]
        # The slots are free again once the polls answered.
        _, cursor = await api.drain(alice, "s1")
        again = [asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=5)) for _ in range(2)]
        await wait_parked(api, 2)
        await api.send(alice, "s1", "again")
        assert all(r.status_code == 200 for r in await asyncio.gather(*again))


async def test_long_poll_woken_by_a_session_change_without_messages_keeps_waiting(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "first")
    _, cursor = await api.drain(alice, "s1")
    poll = asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=5))
    await wait_parked(api, 1)
    # Renaming the session notifies its pollers but changes no message: the poll goes on waiting.
    r = await api.http.patch(f"{API}/sessions/s1", json={"client_name": "renamed"}, headers=api.auth(alice))
    assert r.status_code == 200
    await asyncio.sleep(0.05)
    assert not poll.done()
    await api.send(alice, "s1", "now")
    assert [m["content"] for m in (await poll).json()["messages"]] == ["now"]


async def test_long_poll_wait_zero_is_a_short_poll(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "first")
    _, cursor = await api.drain(alice, "s1")
    r = await api.poll(alice, "s1", since=cursor, wait=0)
    assert r.json() == {"success": True, "messages": [], "has_more": False, "cursor": cursor}
    assert metric(await scrape(api), "pollchat_wake_latency_seconds_count") == 0
    assert api.app.state.services.notifier.parked == 0


async def test_long_poll_ends_at_once_when_the_app_shuts_down(make_api: Any) -> None:
    async with make_api() as api:
        alice = await api.user("alice")
        await api.send(alice, "s1", "first")
        _, cursor = await api.drain(alice, "s1")
        poll = asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=30))
        await wait_parked(api, 1)
        started = time.monotonic()
        api.app.state.services.notifier.close()
        r = await poll
        assert r.status_code == 200 and r.json()["messages"] == []
        assert time.monotonic() - started < 3


async def test_long_poll_fan_out_shares_one_read_and_one_body(make_settings: Callable[..., Settings]) -> None:
    """Forty polls woken by one commit read storage once and serialise the page once."""
    from pollchat.server.app import create_app
    from tests.conftest import running

    async with running(create_app(make_settings(max_parked_polls_per_user=100))) as api:
        alice = await api.user("alice")
        await api.send(alice, "s1", "first")
        _, cursor = await api.drain(alice, "s1")
        services = api.app.state.services
        reads: list[int] = []
        changes = services.storage.changes

        async def counting_changes(session_id: str, *, after: int, limit: int) -> Any:
            reads.append(after)
            return await changes(session_id, after=after, limit=limit)

        services.storage.changes = counting_changes
        polls = [asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=10)) for _ in range(40)]
        await wait_parked(api, 40)
        assert reads == [], "parked polls at the head must not read storage"
        sent = (await api.send(alice, "s1", "for everyone")).json()["message_id"]
        answers = await asyncio.gather(*polls)
        assert all([m["id"] for m in r.json()["messages"]] == [sent] for r in answers)
        assert len({r.content for r in answers}) == 1
        assert len({r.headers["etag"] for r in answers}) == 1
        assert len(reads) <= 2, reads
