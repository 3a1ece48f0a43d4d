"""``PATCH /messages/{id}``: the author edits; pollers see the update once."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import ADMIN_TOKEN, API, Api
from tests.server.support import assert_error, wait_parked


async def edit(api: Api, token: str, message_id: str, content: Any) -> Any:
    return await api.http.patch(f"{API}/messages/{message_id}", json={"content": content}, headers=api.auth(token))


async def test_edit_by_the_author_updates_the_content(api: Api) -> None:
    alice = await api.user("alice")
    sent = (await api.send(alice, "s1", "helo", client_message_id="k1", metadata={"a": 1})).json()["message"]
    r = await edit(api, alice, sent["id"], "hello")
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    edited = r.json()["message"]
    assert edited["content"] == "hello"
    assert edited["edited_at"] is not None
    for kept in ("id", "type", "timestamp", "session_id", "user_id", "client_message_id", "metadata"):
        assert edited[kept] == sent[kept], kept
    messages, _ = await api.drain(alice, "s1")
    assert [(m["id"], m["content"]) for m in messages] == [(sent["id"], "hello")]


async def test_edit_poller_sees_the_update_once_after_its_cursor(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    first = (await api.send(alice, "s1", "one")).json()["message_id"]
    await api.send(alice, "s1", "two")
    _, cursor = await api.drain(op, "s1")
    assert (await edit(api, alice, first, "one, edited")).status_code == 200
    changes, cursor2 = await api.drain(op, "s1", since=cursor)
    assert [(m["id"], m["content"]) for m in changes] == [(first, "one, edited")]
    assert changes[0]["status"] == "delivered"
    assert (await api.drain(op, "s1", since=cursor2))[0] == []


async def test_edit_wakes_a_long_poll(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    sent = (await api.send(alice, "s1", "draft")).json()["message_id"]
    _, cursor = await api.drain(op, "s1")
    poll = asyncio.create_task(api.poll(op, "s1", since=cursor, wait=5))
    await wait_parked(api, 1)
    assert (await edit(api, alice, sent, "final")).status_code == 200
    assert [m["content"] for m in (await poll).json()["messages"]] == ["final"]


async def test_edit_twice_shows_the_latest_content_once(api: Api) -> None:
    alice = await api.user("alice")
    sent = (await api.send(alice, "s1", "v1")).json()["message_id"]
    _, cursor = await api.drain(alice, "s1")
    await edit(api, alice, sent, "v2")
    await edit(api, alice, sent, "v3")
    changes, _ = await api.drain(alice, "s1", since=cursor)
    assert [m["content"] for m in changes] == ["v3"]


async def test_edit_by_an_operator_who_is_not_the_author_is_403(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    sent = (await api.send(alice, "s1", "mine")).json()["message_id"]
    assert_error(await edit(api, op, sent, "theirs"), 403, "not_author")
    assert_error(await edit(api, ADMIN_TOKEN, sent, "theirs"), 403, "not_author")
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["mine"]
    assert messages[0]["edited_at"] is None


async def test_edit_by_the_owner_of_an_assistant_message_is_403(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "question")
    answer = (await api.send(op, "s1", "answer", type="assistant")).json()["message_id"]
    assert_error(await edit(api, alice, answer, "forged answer"), 403, "not_author")
    r = await edit(api, op, answer, "better answer")
    assert r.status_code == 200
    assert r.json()["message"]["type"] == "assistant"


async def test_edit_by_another_member_is_404_like_a_missing_message(api: Api) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    sent = (await api.send(alice, "s1", "private")).json()["message_id"]
    r = assert_error(await edit(api, bob, sent, "hacked"), 404)
    assert "private" not in str(r)
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["private"]


async def test_edit_keeps_delivery_and_read_state(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    sent = (await api.send(alice, "s1", "hi")).json()["message_id"]
    await api.drain(op, "s1")
    r = await api.http.post(f"{API}/sessions/s1/read", json={"up_to": sent}, headers=api.auth(op))
    assert r.status_code == 200
    edited = (await edit(api, alice, sent, "hi!")).json()["message"]
    assert (edited["status"], edited["delivered"], edited["read"]) == ("read", True, True)


async def test_edit_of_another_members_message_answers_as_a_missing_one(api: Api) -> None:
    """Editing another member's message answered "no session '…'" where an unknown id answered
    ``message_not_found``: an oracle of which message ids exist."""
    alice, bob = await api.user("alice"), await api.user("bob")
    sent = (await api.send(alice, "s1", "mine")).json()["message_id"]
    theirs = await api.http.patch(f"{API}/messages/{sent}", json={"content": "x"}, headers=api.auth(bob))
    unknown = await api.http.patch(f"{API}/messages/msg_{'0' * 24}", json={"content": "x"}, headers=api.auth(bob))
    assert assert_error(theirs, 404, "message_not_found") == assert_error(unknown, 404, "message_not_found")
