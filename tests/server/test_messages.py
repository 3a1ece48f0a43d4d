"""Sending: single sends, idempotent replays, racing copies and batches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from pollchat.settings import Settings
from tests.conftest import ADMIN_TOKEN, API, Api
from tests.server.support import all_messages, all_sessions, assert_error, close_session


async def batch(api: Api, token: str, messages: list[dict[str, Any]]) -> Any:
    return await api.http.post(f"{API}/messages/batch", json={"messages": messages}, headers=api.auth(token))


async def test_send_new_message_answers_201_with_the_stored_message(api: Api) -> None:
    alice = await api.user("alice")
    me = (await api.http.get("/api/v1/admin/users/me", headers=api.auth(alice))).json()["user"]
    r = await api.send(alice, "s1", "hello", client_message_id="c1", metadata={"lang": "en"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True
    message = body["message"]
    assert body["message_id"] == message["id"]
    assert message["id"].startswith("msg_")
    assert message["content"] == "hello"
    assert message["type"] == "user"
    assert message["session_id"] == "s1"
    assert message["status"] == "sent"
    assert message["delivered"] is False and message["read"] is False
    assert message["client_message_id"] == "c1"
    assert message["metadata"] == {"lang": "en"}
    assert message["user_id"] == me["id"]
    assert message["timestamp"].endswith("Z")


async def test_send_replay_answers_200_with_the_first_id_and_stores_once(api: Api) -> None:
    alice = await api.user("alice")
    first = await api.send(alice, "s1", "hello", client_message_id="k1")
    assert first.status_code == 201
    again = await api.send(alice, "s1", "hello", client_message_id="k1")
    assert again.status_code == 200, again.text
    assert again.json()["success"] is True
    assert again.json()["message_id"] == first.json()["message_id"]
    assert again.json()["message"] == first.json()["message"]
    messages, _ = await api.drain(alice, "s1")
    assert [m["id"] for m in messages] == [first.json()["message_id"]]
    session = (await api.http.get(f"{API}/sessions/s1", headers=api.auth(alice))).json()["session"]
    assert session["message_count"] == 1


async def test_send_reusing_a_client_message_id_with_other_content_is_a_conflict(api: Api) -> None:
    """Bug: the reused key was answered 200 with the first message; the contract says 409."""
    alice = await api.user("alice")
    first = await api.send(alice, "s1", "original", client_message_id="k1")
    again = await api.send(alice, "s1", "changed", client_message_id="k1")
    assert again.status_code == 409
    assert again.json()["code"] == "idempotency_conflict"
    messages, _ = await api.drain(alice, "s1")
    assert [(m["id"], m["content"]) for m in messages] == [(first.json()["message_id"], "original")]


async def test_send_same_client_message_id_in_another_session_is_a_new_message(api: Api) -> None:
    alice = await api.user("alice")
    a = await api.send(alice, "s1", "one", client_message_id="k1")
    b = await api.send(alice, "s2", "two", client_message_id="k1")
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["message_id"] != b.json()["message_id"]


async def test_send_same_client_message_id_by_another_author_is_a_new_message(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    a = await api.send(alice, "s1", "question", client_message_id="k1")
    b = await api.send(op, "s1", "answer", client_message_id="k1", type="assistant")
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["message_id"] != b.json()["message_id"]
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["question", "answer"]


async def test_send_without_client_message_id_stores_every_copy(api: Api) -> None:
    alice = await api.user("alice")
    ids = {(await api.send(alice, "s1", "same")).json()["message_id"] for _ in range(3)}
    assert len(ids) == 3
    messages, _ = await api.drain(alice, "s1")
    assert len(messages) == 3


async def test_send_racing_copies_store_exactly_one_message(api: Api) -> None:
    alice = await api.user("alice")
    responses = await asyncio.gather(
        *(api.send(alice, "race", "only once", client_message_id="same-key") for _ in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [201], statuses
    ids = {r.json()["message_id"] for r in responses}
    assert len(ids) == 1
    messages, _ = await api.drain(alice, "race")
    assert [m["id"] for m in messages] == list(ids)


async def test_send_racing_distinct_sends_are_all_stored_in_one_new_session(api: Api) -> None:
    alice = await api.user("alice")
    responses = await asyncio.gather(*(api.send(alice, "fresh", f"m{i}", client_message_id=f"k{i}") for i in range(30)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses if r.status_code != 201]
    messages, _ = await api.drain(alice, "fresh")
    assert sorted(m["content"] for m in messages) == sorted(f"m{i}" for i in range(30))
    assert len(await all_sessions(api)) == 1


async def test_send_creates_the_session_for_the_caller(api: Api) -> None:
    alice = await api.user("alice")
    me = (await api.http.get("/api/v1/admin/users/me", headers=api.auth(alice))).json()["user"]
    r = await api.send(alice, "new-session.1:x", "hi", client_name="web")
    assert r.status_code == 201
    session = (await api.http.get(f"{API}/sessions/new-session.1:x", headers=api.auth(alice))).json()["session"]
    assert session["owner_id"] == me["id"]
    assert session["client_name"] == "web"
    assert session["message_count"] == 1
    assert session["last_message_id"] == r.json()["message_id"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("id", "msg_forged"),
        ("user_id", "u_forged"),
        ("status", "read"),
        ("delivered", True),
        ("timestamp", "1999-01-01T00:00:00Z"),
        ("sesion_id", "typo"),
    ],
)
async def test_send_refuses_server_owned_and_unknown_fields_naming_them(api: Api, field: str, value: Any) -> None:
    """Unknown fields were silently ignored, so a typo such as ``sesion_id`` passed unnoticed."""
    alice = await api.user("alice")
    r = await api.send(alice, "s1", "hi", **{field: value})
    body = assert_error(r, 400, "invalid_request")
    assert f"`{field}`" in body["error"]
    assert (await api.poll(ADMIN_TOKEN, "s1")).status_code == 404  # nothing stored, not even the session


async def test_send_unusual_text_round_trips_unchanged(api: Api) -> None:
    alice = await api.user("alice")
    texts = ["emoji 👩‍💻🎉", "\x01control\x7f", "line\nbreaks\r\n\ttabs", "rtl עברית ‮", "  padded  ", "<b>&amp;</b>"]
    for text in texts:
        assert (await api.send(alice, "s1", text)).status_code == 201
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == texts


async def test_send_content_of_exactly_the_limit_is_accepted(api: Api, settings: Settings) -> None:
    alice = await api.user("alice")
    limit = settings.max_content_bytes
    exact = "é" * (limit // 2)  # two bytes each in UTF-8
    assert len(exact.encode()) == limit
    assert (await api.send(alice, "s1", exact)).status_code == 201
    assert_error(await api.send(alice, "s1", exact + "a"), 413, "content_too_large")
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == [exact]


async def test_send_metadata_of_exactly_the_limit_is_accepted(api: Api, settings: Settings) -> None:
    alice = await api.user("alice")
    overhead = len('{"k":""}')
    fits = {"k": "x" * (settings.max_metadata_bytes - overhead)}
    assert (await api.send(alice, "s1", "hi", metadata=fits)).status_code == 201
    too_big = {"k": "x" * (settings.max_metadata_bytes - overhead + 1)}
    assert_error(await api.send(alice, "s1", "hi", metadata=too_big), 413, "metadata_too_large")
    messages, _ = await api.drain(alice, "s1")
    assert [m["metadata"] for m in messages] == [fits]


async def test_send_into_a_closed_session_is_409_and_stores_nothing(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "before")
    assert (await close_session(api, alice, "s1")).status_code == 200
    assert_error(await api.send(alice, "s1", "after"), 409, "session_closed")
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["before"]


async def test_send_replay_after_the_session_closed_still_answers_the_first_message(api: Api) -> None:
    """Regression: a retried send whose first copy was stored got 409 once the session closed.

    The contract says the same (user, session, client_message_id) *always* answers with the
    first message's id; a client whose acknowledgement was lost must be able to learn it.
    """
    alice = await api.user("alice")
    first = await api.send(alice, "s1", "hello", client_message_id="k1")
    assert (await close_session(api, alice, "s1")).status_code == 200
    again = await api.send(alice, "s1", "hello", client_message_id="k1")
    assert again.status_code == 200, again.text
    assert again.json()["message_id"] == first.json()["message_id"]
    assert_error(await api.send(alice, "s1", "hello", client_message_id="k2"), 409, "session_closed")
    messages, _ = await api.drain(alice, "s1")
    assert len(messages) == 1


async def test_batch_stores_messages_in_request_order(api: Api) -> None:
    alice = await api.user("alice")
    items = [{"content": f"m{i}", "session_id": "s1", "client_message_id": f"k{i}"} for i in range(10)]
    r = await batch(api, alice, items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert [res["success"] for res in body["results"]] == [True] * 10
    assert [res["message"]["content"] for res in body["results"]] == [f"m{i}" for i in range(10)]
    messages, _ = await api.drain(alice, "s1")
    assert [m["id"] for m in messages] == [res["message_id"] for res in body["results"]]
    assert [m["content"] for m in messages] == [f"m{i}" for i in range(10)]


async def test_batch_items_fail_on_their_own(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "closed", "x")
    await close_session(api, alice, "closed")
    items = [
        {"content": "first", "session_id": "s1"},
        {"content": "", "session_id": "s1"},
        {"content": "   \n\t", "session_id": "s1"},
        {"content": "x" * 40000, "session_id": "s1"},
        {"content": "as bot", "session_id": "s1", "type": "assistant"},
        {"content": "late", "session_id": "closed"},
        {"content": "big meta", "session_id": "s1", "metadata": {"k": "x" * 5000}},
        {"content": "last", "session_id": "s1"},
    ]
    r = await batch(api, alice, items)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [res["success"] for res in results] == [True, False, False, False, False, False, False, True]
    codes = [res["code"] for res in results[1:7]]
    assert codes == [
        "empty_content",
        "empty_content",
        "content_too_large",
        "type_not_allowed",
        "session_closed",
        "metadata_too_large",
    ]
    for res in results[1:7]:
        assert res["error"] and res["message_id"] is None and res["message"] is None
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["first", "last"]
    closed, _ = await api.drain(alice, "closed")
    assert [m["content"] for m in closed] == ["x"]


async def test_batch_item_into_another_members_session_fails_alone(api: Api) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    await api.send(alice, "alices", "mine")
    r = await batch(api, bob, [{"content": "intrude", "session_id": "alices"}, {"content": "ok", "session_id": "bobs"}])
    assert r.status_code == 200
    results = r.json()["results"]
    assert (results[0]["success"], results[0]["code"]) == (False, "session_not_found")
    assert results[1]["success"] is True
    messages, _ = await api.drain(alice, "alices")
    assert [m["content"] for m in messages] == ["mine"]


async def test_batch_repeated_client_message_id_is_stored_once(api: Api) -> None:
    alice = await api.user("alice")
    items = [
        {"content": "a", "session_id": "s1", "client_message_id": "dup"},
        {"content": "b", "session_id": "s1", "client_message_id": "other"},
        {"content": "a", "session_id": "s1", "client_message_id": "dup"},
    ]
    results = (await batch(api, alice, items)).json()["results"]
    assert all(res["success"] for res in results)
    assert results[0]["message_id"] == results[2]["message_id"]
    assert results[0]["message_id"] != results[1]["message_id"]
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["a", "b"]


async def test_batch_replayed_whole_answers_the_same_ids_and_stores_nothing_new(api: Api) -> None:
    alice = await api.user("alice")
    items = [{"content": f"m{i}", "session_id": "s1", "client_message_id": f"k{i}"} for i in range(5)]
    first = [res["message_id"] for res in (await batch(api, alice, items)).json()["results"]]
    again = [res["message_id"] for res in (await batch(api, alice, items)).json()["results"]]
    assert first == again
    messages, _ = await api.drain(alice, "s1")
    assert len(messages) == 5


async def test_batch_of_exactly_max_batch_is_accepted(make_api: Any, make_settings: Callable[..., Settings]) -> None:
    async with make_api(make_settings(max_batch=3)) as api:
        alice = await api.user("alice")
        r = await batch(api, alice, [{"content": f"m{i}", "session_id": "s1"} for i in range(3)])
        assert r.status_code == 200
        assert all(res["success"] for res in r.json()["results"])


async def test_batch_over_max_batch_is_413_and_stores_nothing(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    async with make_api(make_settings(max_batch=3)) as api:
        alice = await api.user("alice")
        r = await batch(api, alice, [{"content": f"m{i}", "session_id": "s1"} for i in range(4)])
        assert_error(r, 413, "batch_too_large")
        assert await all_sessions(api) == []


async def test_batch_default_limit_is_100(api: Api) -> None:
    alice = await api.user("alice")
    assert (await batch(api, alice, [{"content": "x", "session_id": "s1"}] * 100)).status_code == 200
    assert_error(await batch(api, alice, [{"content": "x", "session_id": "s2"}] * 101), 413, "batch_too_large")
    assert len(await all_messages(api, "s1")) == 100
    assert [s["id"] for s in await all_sessions(api)] == ["s1"]


async def test_batch_into_several_sessions_creates_each(api: Api) -> None:
    alice = await api.user("alice")
    items = [{"content": "a", "session_id": "one"}, {"content": "b", "session_id": "two"}]
    assert all(res["success"] for res in (await batch(api, alice, items)).json()["results"])
    assert sorted(s["id"] for s in await all_sessions(api)) == ["one", "two"]


async def test_send_reused_client_message_id_with_other_content_conflicts_in_a_batch_too(api: Api) -> None:
    alice = await api.user("alice")
    first = await api.send(alice, "s1", "hello", client_message_id="m1")
    assert (await api.send(alice, "s1", "hello", client_message_id="m1")).status_code == 200
    batch = await api.http.post(
        f"{API}/messages/batch",
        json={"messages": [{"content": "other", "session_id": "s1", "client_message_id": "m1"}]},
        headers=api.auth(alice),
    )
    assert batch.json()["results"][0]["code"] == "idempotency_conflict"
    messages, _ = await api.drain(alice, "s1")
    assert [(m["content"], m["id"]) for m in messages] == [("hello", first.json()["message_id"])]


async def test_send_reused_client_message_id_with_another_type_is_a_conflict(api: Api) -> None:
    operator = await api.user("olga", "operator")
    assert (await api.send(operator, "s1", "hello", client_message_id="m1")).status_code == 201
    r = await api.send(operator, "s1", "hello", client_message_id="m1", type="assistant")
    assert_error(r, 409, "idempotency_conflict")


async def test_send_retry_of_an_edited_message_is_still_a_replay(api: Api) -> None:
    """Once edited, the first content is gone: a retry of the first send answers the message."""
    alice = await api.user("alice")
    first = await api.send(alice, "s1", "helo", client_message_id="k1")
    edit = await api.http.patch(
        f"{API}/messages/{first.json()['message_id']}", json={"content": "hello"}, headers=api.auth(alice)
    )
    assert edit.status_code == 200, edit.text
    again = await api.send(alice, "s1", "helo", client_message_id="k1")
    assert again.status_code == 200 and again.json()["message_id"] == first.json()["message_id"]


async def test_every_success_answer_has_one_shape(api: Api) -> None:
    """Sends carried ``error: null, code: null`` and edits did not: a success never names an error."""
    alice = await api.user("alice")
    sent = (await api.send(alice, "s1", "hi")).json()
    edited = (
        await api.http.patch(f"{API}/messages/{sent['message_id']}", json={"content": "hey"}, headers=api.auth(alice))
    ).json()
    batch = (
        await api.http.post(
            f"{API}/messages/batch", json={"messages": [{"content": "b", "session_id": "s1"}]}, headers=api.auth(alice)
        )
    ).json()
    for answer in (sent, edited, batch, batch["results"][0]):
        assert answer["success"] is True
        assert "error" not in answer and "code" not in answer


async def test_send_into_another_users_session_says_ids_are_shared(api: Api) -> None:
    """A member sending to ``demo``, which another user owned, got a bare 404 although a send creates sessions."""
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(alice, "demo", "mine")
    body = assert_error(await api.send(bob, "demo", "hello"), 404, "session_not_found")
    assert "shared by every user" in body["error"]
    missing = assert_error(await api.poll(bob, "nobody-has-this"), 404, "session_not_found")
    assert missing["error"].replace("nobody-has-this", "demo") == body["error"]  # missing and taken alike
