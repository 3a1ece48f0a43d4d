"""Retrieval: cursor paging, ``since`` as a message id, updates, concurrent writers, cursor errors."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from tests.conftest import API, Api
from tests.server.support import assert_error


async def send_many(api: Api, token: str, session_id: str, count: int, prefix: str = "m") -> list[str]:
    ids = []
    for i in range(count):
        r = await api.send(token, session_id, f"{prefix}{i}")
        assert r.status_code == 201, r.text
        ids.append(r.json()["message_id"])
    return ids


async def test_poll_without_since_returns_the_session_from_the_start(api: Api) -> None:
    alice = await api.user("alice")
    ids = await send_many(api, alice, "s1", 3)
    r = await api.poll(alice, "s1")
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    assert [m["id"] for m in body["messages"]] == ids
    assert body["has_more"] is False
    assert isinstance(body["cursor"], str) and body["cursor"]


async def test_poll_cursor_paging_returns_every_message_once_in_order(api: Api) -> None:
    alice = await api.user("alice")
    ids = await send_many(api, alice, "s1", 23)
    seen: list[str] = []
    pages = 0
    since = None
    while True:
        r = await api.poll(alice, "s1", since=since, limit=5)
        body = r.json()
        assert len(body["messages"]) <= 5
        seen += [m["id"] for m in body["messages"]]
        since = body["cursor"]
        pages += 1
        if not body["has_more"]:
            break
        assert len(body["messages"]) == 5
    assert seen == ids
    assert pages == 5


async def test_poll_has_more_is_false_when_the_page_ends_exactly_at_the_head(api: Api) -> None:
    alice = await api.user("alice")
    ids = await send_many(api, alice, "s1", 4)
    first = (await api.poll(alice, "s1", limit=2)).json()
    assert first["has_more"] is True
    second = (await api.poll(alice, "s1", since=first["cursor"], limit=2)).json()
    assert [m["id"] for m in first["messages"] + second["messages"]] == ids
    third = (await api.poll(alice, "s1", since=second["cursor"], limit=2)).json()
    assert third["messages"] == [] and third["has_more"] is False
    assert third["cursor"] == second["cursor"]


async def test_poll_at_the_head_answers_empty_with_the_same_cursor(api: Api) -> None:
    alice = await api.user("alice")
    await send_many(api, alice, "s1", 2)
    _, cursor = await api.drain(alice, "s1")
    for _ in range(2):
        body = (await api.poll(alice, "s1", since=cursor)).json()
        assert body == {"success": True, "messages": [], "has_more": False, "cursor": cursor}


async def test_poll_cursor_of_an_empty_session_is_usable(api: Api) -> None:
    alice = await api.user("alice")
    r = await api.http.post(f"{API}/sessions", json={"id": "empty"}, headers=api.auth(alice))
    assert r.status_code == 201
    body = (await api.poll(alice, "empty")).json()
    assert body["messages"] == [] and body["has_more"] is False
    ids = await send_many(api, alice, "empty", 1)
    after = (await api.poll(alice, "empty", since=body["cursor"])).json()
    assert [m["id"] for m in after["messages"]] == ids


async def test_poll_since_a_message_id_returns_the_messages_after_it(api: Api) -> None:
    alice = await api.user("alice")
    ids = await send_many(api, alice, "s1", 5)
    body = (await api.poll(alice, "s1", since=ids[1])).json()
    assert [m["id"] for m in body["messages"]] == ids[2:]
    last = (await api.poll(alice, "s1", since=ids[-1])).json()
    assert last["messages"] == []
    more = await send_many(api, alice, "s1", 1)
    assert [m["id"] for m in (await api.poll(alice, "s1", since=last["cursor"])).json()["messages"]] == more


async def test_poll_since_a_message_id_pages_with_limit(api: Api) -> None:
    alice = await api.user("alice")
    ids = await send_many(api, alice, "s1", 8)
    messages, _ = await api.drain(alice, "s1", since=ids[2], limit=2)
    assert [m["id"] for m in messages] == ids[3:]


async def test_poll_following_cursors_returns_each_update_once_in_latest_state(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    ids = await send_many(api, alice, "s1", 3)
    messages, cursor = await api.drain(alice, "s1")
    assert [m["status"] for m in messages] == ["sent"] * 3

    # The operator fetches them (delivered), marks the first two read, and alice edits the third.
    await api.drain(op, "s1")
    r = await api.http.post(f"{API}/sessions/s1/read", json={"up_to": ids[1]}, headers=api.auth(op))
    assert r.status_code == 200, r.text
    r = await api.http.patch(f"{API}/messages/{ids[2]}", json={"content": "edited"}, headers=api.auth(alice))
    assert r.status_code == 200, r.text

    changes, cursor2 = await api.drain(alice, "s1", since=cursor)
    by_id = Counter(m["id"] for m in changes)
    assert by_id == Counter(ids), changes
    latest = {m["id"]: m for m in changes}
    assert [latest[i]["status"] for i in ids] == ["read", "read", "delivered"]
    assert latest[ids[2]]["content"] == "edited"
    assert latest[ids[2]]["edited_at"] is not None
    # The changes come in change order: the edit was the last change.
    assert changes[-1]["id"] == ids[2]
    nothing, cursor3 = await api.drain(alice, "s1", since=cursor2)
    assert nothing == [] and cursor3 == cursor2


async def test_poll_following_cursors_through_small_pages_sees_each_change_once(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    ids = await send_many(api, alice, "s1", 6)
    _, cursor = await api.drain(alice, "s1")
    for message_id in ids[::2]:
        r = await api.http.patch(f"{API}/messages/{message_id}", json={"content": "x"}, headers=api.auth(alice))
        assert r.status_code == 200
    await api.drain(op, "s1", limit=1)
    changes, _ = await api.drain(alice, "s1", since=cursor, limit=1)
    assert sorted(m["id"] for m in changes) == sorted(ids)
    assert all(m["delivered"] for m in changes)


async def test_poll_follower_sees_every_message_once_while_many_writers_send(api: Api) -> None:
    alice = await api.user("alice")
    writers, per_writer = 10, 30
    total = writers * per_writer
    done = asyncio.Event()

    async def write(w: int) -> None:
        for i in range(per_writer):
            r = await api.send(alice, "busy", f"{w}:{i}", client_message_id=f"{w}:{i}")
            assert r.status_code == 201, r.text

    async def follow() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        cursor = None
        while len(seen) < total:
            r = await api.poll(alice, "busy", since=cursor, limit=17, wait=0 if not done.is_set() else 1)
            assert r.status_code == 200, r.text
            body = r.json()
            seen += body["messages"]
            cursor = body["cursor"]
            if not body["messages"]:
                await asyncio.sleep(0)
        return seen

    async def write_all() -> None:
        await asyncio.gather(*(write(w) for w in range(writers)))
        done.set()

    await api.http.post(f"{API}/sessions", json={"id": "busy"}, headers=api.auth(alice))
    async with asyncio.timeout(60):
        seen, _ = await asyncio.gather(follow(), write_all())
    ids = [m["id"] for m in seen]
    assert len(ids) == total
    assert len(set(ids)) == total, "a message was seen twice"
    session_order, _ = await api.drain(alice, "busy")
    assert ids == [m["id"] for m in session_order]
    for w in range(writers):
        mine = [m["content"] for m in seen if m["content"].startswith(f"{w}:")]
        assert mine == [f"{w}:{i}" for i in range(per_writer)]


async def test_poll_operator_follower_sees_each_message_once_and_delivers_all(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    writers, per_writer = 5, 20
    total = writers * per_writer

    async def write(w: int) -> None:
        for i in range(per_writer):
            assert (await api.send(alice, "busy", f"{w}:{i}")).status_code == 201

    async def follow() -> tuple[list[dict[str, Any]], str]:
        seen: list[dict[str, Any]] = []
        cursor = None
        while len(seen) < total:
            body = (await api.poll(op, "busy", since=cursor, limit=7)).json()
            seen += body["messages"]
            cursor = body["cursor"]
            await asyncio.sleep(0)
        assert cursor is not None
        return seen, cursor

    await api.http.post(f"{API}/sessions", json={"id": "busy"}, headers=api.auth(alice))
    async with asyncio.timeout(60):
        (seen, cursor), *_ = await asyncio.gather(follow(), *(write(w) for w in range(writers)))
    ids = [m["id"] for m in seen]
    assert len(ids) == total and len(set(ids)) == total
    assert all(m["status"] == "delivered" for m in seen), [m["content"] for m in seen if not m["delivered"]]
    for w in range(writers):
        assert [m["content"] for m in seen if m["content"].startswith(f"{w}:")] == [f"{w}:{i}" for i in range(20)]
    # Nothing more for the operator: its own deliveries were already in the answers it got.
    final = (await api.poll(op, "busy", since=cursor)).json()
    assert final["messages"] == []
    owner_view, _ = await api.drain(alice, "busy")
    assert len(owner_view) == total and all(m["status"] == "delivered" for m in owner_view)


# cursor errors


async def test_poll_garbage_cursors_are_400(api: Api) -> None:
    alice = await api.user("alice")
    await send_many(api, alice, "s1", 1)
    for garbage in ["garbage", "c_", "c_abc_def", "c_1", "c_-1_abcdef12", "c_1_", "c_99999999999999999999_x", "42"]:
        assert_error(await api.poll(alice, "s1", since=garbage), 400, "bad_cursor")


async def test_poll_cursor_of_another_session_is_400(api: Api) -> None:
    alice = await api.user("alice")
    await send_many(api, alice, "s1", 3)
    await send_many(api, alice, "s2", 3)
    _, other = await api.drain(alice, "s2")
    assert_error(await api.poll(alice, "s1", since=other), 400, "cursor_wrong_session")


async def test_poll_cursor_ahead_of_the_session_is_400(api: Api) -> None:
    alice = await api.user("alice")
    await send_many(api, alice, "s1", 5)
    _, ahead = await api.drain(alice, "s1")
    # A cursor of the right session, one change past its head (as a cursor issued by a server
    # on another database would be).
    number = int(ahead.split("_")[1])
    forged = ahead.replace(f"c_{number}_", f"c_{number + 1}_")
    assert_error(await api.poll(alice, "s1", since=forged), 400, "cursor_ahead")
    assert (await api.poll(alice, "s1", since=ahead)).status_code == 200


async def test_poll_unknown_message_id_as_since_is_400(api: Api) -> None:
    alice = await api.user("alice")
    await send_many(api, alice, "s1", 1)
    assert_error(await api.poll(alice, "s1", since="msg_000000000000000000000000"), 400, "unknown_message")


async def test_poll_message_id_of_another_session_as_since_is_400(api: Api) -> None:
    alice = await api.user("alice")
    await send_many(api, alice, "s1", 1)
    (other,) = await send_many(api, alice, "s2", 1)
    assert_error(await api.poll(alice, "s1", since=other), 400, "unknown_message")


async def test_poll_message_id_of_a_hidden_session_is_400_like_an_unknown_one(api: Api) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    (hidden,) = await send_many(api, alice, "alices", 1)
    await send_many(api, bob, "bobs", 1)
    body = assert_error(await api.poll(bob, "bobs", since=hidden), 400, "unknown_message")
    assert "alices" not in body["error"]


async def test_poll_of_a_missing_session_is_404(api: Api) -> None:
    alice = await api.user("alice")
    assert_error(await api.poll(alice, "nowhere"), 404, "session_not_found")


@pytest.mark.parametrize("since", ["", None])
async def test_poll_empty_since_means_from_the_start(api: Api, since: str | None) -> None:
    alice = await api.user("alice")
    ids = await send_many(api, alice, "s1", 2)
    assert [m["id"] for m in (await api.poll(alice, "s1", since=since)).json()["messages"]] == ids
