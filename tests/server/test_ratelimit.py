"""Per-user rate limits on sends and polls: 429 with Retry-After, in the error shape."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from pollchat.settings import Settings
from tests.conftest import API, Api
from tests.server.support import assert_error


def assert_limited(r: Any, code: str) -> None:
    assert_error(r, 429, code)
    assert r.headers["retry-after"].isdigit()
    assert 1 <= int(r.headers["retry-after"]) <= 60


async def test_ratelimit_sends_past_the_budget_are_429_and_store_nothing(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    async with make_api(make_settings(send_rate_limit="3/minute")) as api:
        alice = await api.user("alice")
        for i in range(3):
            assert (await api.send(alice, "s1", f"m{i}")).status_code == 201
        assert_limited(await api.send(alice, "s1", "one too many"), "send_rate_limited")
        assert_limited(await api.send(alice, "s2", "new session"), "send_rate_limited")
        messages, _ = await api.drain(alice, "s1")
        assert [m["content"] for m in messages] == ["m0", "m1", "m2"]
        assert (await api.http.get(f"{API}/sessions/s2", headers=api.auth(alice))).status_code == 404


async def test_ratelimit_is_per_user(make_api: Any, make_settings: Callable[..., Settings]) -> None:
    async with make_api(make_settings(send_rate_limit="3/minute")) as api:
        alice = await api.user("alice")
        bob = await api.user("bob")
        for _ in range(3):
            await api.send(alice, "s1", "x")
        assert_limited(await api.send(alice, "s1", "x"), "send_rate_limited")
        for _ in range(3):
            assert (await api.send(bob, "b1", "x")).status_code == 201
        assert_limited(await api.send(bob, "b1", "x"), "send_rate_limited")


async def test_ratelimit_per_second_budget_comes_back(make_api: Any, make_settings: Callable[..., Settings]) -> None:
    async with make_api(make_settings(send_rate_limit="3/second")) as api:
        alice = await api.user("alice")
        results = await asyncio.gather(*(api.send(alice, "s1", f"m{i}") for i in range(6)))
        assert sorted(r.status_code for r in results) == [201] * 3 + [429] * 3
        limited = next(r for r in results if r.status_code == 429)
        assert_limited(limited, "send_rate_limited")
        assert limited.headers["retry-after"] == "1"
        await asyncio.sleep(1.1)
        assert (await api.send(alice, "s1", "later")).status_code == 201
        messages, _ = await api.drain(alice, "s1")
        assert len(messages) == 4


async def test_ratelimit_batch_spends_one_send_per_message(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    """A batch was charged as one send: 59 batches of 100 stored 5,900 messages under 60 a minute."""
    async with make_api(make_settings(send_rate_limit="5/minute")) as api:
        alice = await api.user("alice")
        pair = [{"content": f"m{i}", "session_id": "s1"} for i in range(2)]
        for _ in range(2):
            r = await api.http.post(f"{API}/messages/batch", json={"messages": pair}, headers=api.auth(alice))
            assert r.status_code == 200
        r = await api.http.post(f"{API}/messages/batch", json={"messages": pair}, headers=api.auth(alice))
        assert_limited(r, "send_rate_limited")
        messages, _ = await api.drain(alice, "s1")
        assert len(messages) == 4


async def test_ratelimit_batch_larger_than_the_whole_budget_is_413(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    """Waiting cannot help a batch larger than the budget: 413, so clients send one by one."""
    async with make_api(make_settings(send_rate_limit="5/minute")) as api:
        alice = await api.user("alice")
        items = [{"content": f"m{i}", "session_id": "s1"} for i in range(6)]
        r = await api.http.post(f"{API}/messages/batch", json={"messages": items}, headers=api.auth(alice))
        assert_error(r, 413, "send_budget_exceeded")
        assert (await api.send(alice, "s1", "one")).status_code == 201  # the budget was not spent


async def test_ratelimit_session_creation_is_limited(make_api: Any, make_settings: Callable[..., Settings]) -> None:
    """Sessions were not limited at all: one member created 50,000."""
    async with make_api(make_settings(session_rate_limit="3/minute")) as api:
        alice = await api.user("alice")
        for i in range(3):
            r = await api.http.post(f"{API}/sessions", json={"id": f"s{i}"}, headers=api.auth(alice))
            assert r.status_code == 201
        r = await api.http.post(f"{API}/sessions", json={"id": "s9"}, headers=api.auth(alice))
        assert_limited(r, "session_rate_limited")
        assert (await api.http.get(f"{API}/sessions/s9", headers=api.auth(alice))).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/sessions", None),
        ("GET", "/sessions/s1", None),
        ("PATCH", "/sessions/s1", {"client_name": "x"}),
        ("POST", "/sessions/s1/read", {"up_to": "msg_000000000000000000000000"}),
        ("GET", "/api/v1/admin/users/me", None),
    ],
)
async def test_ratelimit_every_other_request_spends_the_action_budget(
    make_api: Any, make_settings: Callable[..., Settings], method: str, path: str, body: Any
) -> None:
    """Session changes, read marks and the session list were not limited at all."""
    async with make_api(make_settings(action_rate_limit="2/minute")) as api:
        alice = await api.user("alice")
        assert (await api.send(alice, "s1", "hello")).status_code == 201
        url = path if path.startswith("/api") else f"{API}{path}"
        for _ in range(2):
            r = await api.http.request(method, url, json=body, headers=api.auth(alice))
            assert r.status_code != 429, r.text
        assert_limited(await api.http.request(method, url, json=body, headers=api.auth(alice)), "action_rate_limited")


async def test_ratelimit_edits_spend_the_send_budget(make_api: Any, make_settings: Callable[..., Settings]) -> None:
    async with make_api(make_settings(send_rate_limit="2/minute")) as api:
        alice = await api.user("alice")
        sent = (await api.send(alice, "s1", "hi")).json()["message_id"]
        edit = {"content": "edited"}
        assert (await api.http.patch(f"{API}/messages/{sent}", json=edit, headers=api.auth(alice))).status_code == 200
        r = await api.http.patch(f"{API}/messages/{sent}", json={"content": "again"}, headers=api.auth(alice))
        assert_limited(r, "send_rate_limited")
        messages, _ = await api.drain(alice, "s1")
        assert [m["content"] for m in messages] == ["edited"]


async def test_ratelimit_polls_past_the_budget_are_429(make_api: Any, make_settings: Callable[..., Settings]) -> None:
    async with make_api(make_settings(poll_rate_limit="3/minute")) as api:
        alice = await api.user("alice")
        bob = await api.user("bob")
        await api.send(alice, "s1", "hi")
        await api.send(bob, "b1", "hi")
        for _ in range(3):
            assert (await api.poll(alice, "s1")).status_code == 200
        assert_limited(await api.poll(alice, "s1"), "poll_rate_limited")
        assert_limited(await api.poll(alice, "s1", wait=5), "poll_rate_limited")
        # Sends have their own budget, and bob his own.
        assert (await api.send(alice, "s1", "still sending")).status_code == 201
        assert (await api.poll(bob, "b1")).status_code == 200


async def test_ratelimit_refused_poll_delivers_nothing(make_api: Any, make_settings: Callable[..., Settings]) -> None:
    async with make_api(make_settings(poll_rate_limit="1/minute")) as api:
        alice = await api.user("alice")
        op = await api.user("op", "operator")
        await api.send(alice, "s1", "hi")
        await api.send(op, "elsewhere", "spend the budget", type="assistant")
        assert (await api.poll(op, "elsewhere")).status_code == 200
        assert_limited(await api.poll(op, "s1"), "poll_rate_limited")
        r = await api.poll(alice, "s1")
        assert [m["status"] for m in r.json()["messages"]] == ["sent"]


async def test_ratelimit_off_allows_bursts(api: Api) -> None:
    alice = await api.user("alice")
    results = await asyncio.gather(*(api.send(alice, "s1", f"m{i}") for i in range(40)))
    assert all(r.status_code == 201 for r in results)
    for _ in range(40):
        assert (await api.poll(alice, "s1")).status_code == 200


async def test_ratelimit_default_lets_a_person_chat(make_api: Any, make_settings: Callable[..., Settings]) -> None:
    async with make_api(make_settings(send_rate_limit="60/minute", poll_rate_limit="600/minute")) as api:
        alice = await api.user("alice")
        for i in range(10):
            assert (await api.send(alice, "s1", f"m{i}")).status_code == 201
            assert (await api.poll(alice, "s1")).status_code == 200
