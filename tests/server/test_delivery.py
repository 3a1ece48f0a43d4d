"""Delivery status: delivered when the other side fetches, read through the read endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pollchat.settings import Settings
from tests.conftest import API, Api
from tests.server.support import assert_error, wait_parked


async def read(api: Api, token: str, session_id: str, up_to: str) -> Any:
    return await api.http.post(f"{API}/sessions/{session_id}/read", json={"up_to": up_to}, headers=api.auth(token))


def states(messages: list[dict[str, Any]]) -> list[tuple[str, str, bool, bool]]:
    return [(m["content"], m["status"], m["delivered"], m["read"]) for m in messages]


async def test_delivery_user_message_is_delivered_when_an_operator_polls_it(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "hello")
    own, cursor = await api.drain(alice, "s1")
    assert states(own) == [("hello", "sent", False, False)]
    # The owner's own fetch is no delivery.
    assert states((await api.poll(alice, "s1")).json()["messages"]) == [("hello", "sent", False, False)]

    fetched = (await api.poll(op, "s1")).json()["messages"]
    assert states(fetched) == [("hello", "delivered", True, False)]

    changed, _ = await api.drain(alice, "s1", since=cursor)
    assert states(changed) == [("hello", "delivered", True, False)]


async def test_delivery_user_message_is_not_delivered_by_another_member(api: Api) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    await api.send(alice, "s1", "hello")
    assert (await api.poll(bob, "s1")).status_code == 404
    own, _ = await api.drain(alice, "s1")
    assert states(own) == [("hello", "sent", False, False)]


async def test_delivery_assistant_message_is_delivered_when_the_owner_polls_it(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "question")
    _, op_cursor = await api.drain(op, "s1")
    await api.send(op, "s1", "answer", type="assistant")
    # Another operator's fetch is no delivery of an assistant message.
    other = await api.user("op2", "operator")
    await api.drain(other, "s1")
    seen, after_answer = await api.drain(op, "s1", since=op_cursor)
    assert states(seen) == [("answer", "sent", False, False)]

    fetched, _ = await api.drain(alice, "s1")
    assert states(fetched) == [("question", "delivered", True, False), ("answer", "delivered", True, False)]

    changed, _ = await api.drain(op, "s1", since=after_answer)
    assert states(changed) == [("answer", "delivered", True, False)]


async def test_delivery_every_message_of_a_paged_fetch_is_delivered(api: Api) -> None:
    """Regression: messages fetched on a limited page stayed ``sent``.

    Marking the first page delivered moved it to the end of the change order, so the page
    re-read for the answer held later messages that were answered undelivered and never
    marked, although the operator had fetched them.
    """
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    for i in range(7):
        await api.send(alice, "s1", f"m{i}")
    _, cursor = await api.drain(alice, "s1")
    fetched, _ = await api.drain(op, "s1", limit=2)
    assert sorted(m["content"] for m in fetched) == [f"m{i}" for i in range(7)]
    assert [m["content"] for m in fetched] == [f"m{i}" for i in range(7)]
    assert all(m["status"] == "delivered" for m in fetched), states(fetched)
    changed, _ = await api.drain(alice, "s1", since=cursor)
    assert sorted(states(changed)) == [(f"m{i}", "delivered", True, False) for i in range(7)]


async def test_delivery_single_message_pages_are_each_delivered(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    for i in range(3):
        await api.send(alice, "s1", f"m{i}")
    first = (await api.poll(op, "s1", limit=1)).json()
    assert states(first["messages"]) == [("m0", "delivered", True, False)]
    assert first["has_more"] is True
    rest, _ = await api.drain(op, "s1", since=first["cursor"], limit=1)
    assert states(rest) == [("m1", "delivered", True, False), ("m2", "delivered", True, False)]


async def test_delivery_read_marks_the_other_sides_messages_up_to_one(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    ids = [(await api.send(alice, "s1", f"m{i}")).json()["message_id"] for i in range(3)]
    _, cursor = await api.drain(alice, "s1")
    await api.drain(op, "s1")
    _, cursor = await api.drain(alice, "s1", since=cursor)

    r = await read(api, op, "s1", ids[1])
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True and r.json()["cursor"]

    changed, cursor2 = await api.drain(alice, "s1", since=cursor)
    assert states(changed) == [("m0", "read", True, True), ("m1", "read", True, True)]
    # Reading again is idempotent: no new change.
    assert (await read(api, op, "s1", ids[1])).status_code == 200
    assert (await api.drain(alice, "s1", since=cursor2))[0] == []


async def test_delivery_read_of_an_undelivered_message_also_delivers_it(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    sent = (await api.send(alice, "s1", "hi")).json()["message_id"]
    _, cursor = await api.drain(alice, "s1")
    assert (await read(api, op, "s1", sent)).status_code == 200
    changed, _ = await api.drain(alice, "s1", since=cursor)
    assert states(changed) == [("hi", "read", True, True)]


async def test_delivery_owner_reads_assistant_messages_not_its_own(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "question")
    answer = (await api.send(op, "s1", "answer", type="assistant")).json()["message_id"]
    await api.send(alice, "s1", "thanks")
    _, op_cursor = await api.drain(op, "s1")
    assert (await read(api, alice, "s1", answer)).status_code == 200
    changed, _ = await api.drain(op, "s1", since=op_cursor)
    assert states(changed) == [("answer", "read", True, True)]
    everything, _ = await api.drain(alice, "s1")
    by_content = {m["content"]: m for m in everything}
    assert by_content["question"]["read"] is False
    assert by_content["thanks"]["read"] is False


async def test_delivery_read_with_unknown_or_foreign_message_is_404(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    other = (await api.send(alice, "s2", "elsewhere")).json()["message_id"]
    assert_error(await read(api, alice, "s1", "msg_000000000000000000000000"), 404, "message_not_found")
    assert_error(await read(api, alice, "s1", other), 404, "message_not_found")
    assert_error(await read(api, alice, "nope", other), 404, "session_not_found")


async def test_delivery_author_long_poll_sees_read_mark(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    sent = (await api.send(alice, "s1", "hi")).json()["message_id"]
    await api.drain(op, "s1")
    _, cursor = await api.drain(alice, "s1")
    poll = asyncio.create_task(api.poll(alice, "s1", since=cursor, wait=5))
    await wait_parked(api, 1)
    assert (await read(api, op, "s1", sent)).status_code == 200
    assert states((await poll).json()["messages"]) == [("hi", "read", True, True)]


# the echo assistant


async def test_delivery_echo_assistant_replies_and_delivers(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    async with make_api(make_settings(assistant="echo")) as api:
        alice = await api.user("alice")
        sent = (await api.send(alice, "s1", "hello there")).json()["message_id"]
        await api.app.state.assistant.drain()
        messages, _ = await api.drain(alice, "s1")
        assert [(m["type"], m["content"]) for m in messages] == [
            ("user", "hello there"),
            ("assistant", "Echo: hello there"),
        ]
        mine = next(m for m in messages if m["id"] == sent)
        assert mine["status"] == "delivered"
        reply = next(m for m in messages if m["type"] == "assistant")
        assert reply["client_message_id"] == f"reply:{sent}"
        assert reply["user_id"] != mine["user_id"]
        # The owner's fetch delivered the reply.
        again, _ = await api.drain(alice, "s1")
        assert all(m["status"] == "delivered" for m in again)


async def test_delivery_echo_reply_arrives_on_a_long_poll(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    async with make_api(make_settings(assistant="echo")) as api:
        alice = await api.user("alice")
        await api.send(alice, "s1", "ping")
        seen: dict[str, dict[str, Any]] = {}
        cursor = None
        async with asyncio.timeout(10):
            while not (
                any(m["content"] == "Echo: ping" for m in seen.values())
                and seen.get("ping", {}).get("status") == "delivered"
            ):
                body = (await api.poll(alice, "s1", since=cursor, wait=5)).json()
                for m in body["messages"]:
                    seen[m["content"]] = m
                cursor = body["cursor"]
        assert seen["Echo: ping"]["type"] == "assistant"


async def test_delivery_echo_answers_each_message_once(make_api: Any, make_settings: Callable[..., Settings]) -> None:
    async with make_api(make_settings(assistant="echo")) as api:
        alice = await api.user("alice")
        for i in range(5):
            await api.send(alice, "s1", f"m{i}", client_message_id=f"k{i}")
            await api.send(alice, "s1", f"m{i}", client_message_id=f"k{i}")  # a replay is not answered again
        await api.app.state.assistant.drain()
        messages, _ = await api.drain(alice, "s1")
        replies = [m["content"] for m in messages if m["type"] == "assistant"]
        assert sorted(replies) == [f"Echo: m{i}" for i in range(5)]


async def test_delivery_echo_does_not_answer_assistant_messages(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    async with make_api(make_settings(assistant="echo")) as api:
        alice = await api.user("alice")
        op = await api.user("op", "operator")
        await api.send(alice, "s1", "hi")
        await api.app.state.assistant.drain()
        await api.send(op, "s1", "operator note", type="assistant")
        await api.app.state.assistant.drain()
        messages, _ = await api.drain(alice, "s1")
        assert [m["content"] for m in messages if m["type"] == "assistant"] == ["Echo: hi", "operator note"]


async def test_delivery_without_assistant_nothing_replies(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hello")
    assert api.app.state.assistant is None
    messages, _ = await api.drain(alice, "s1")
    assert states(messages) == [("hello", "sent", False, False)]


async def test_delivery_echo_reply_names_the_message_it_answers(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    """A reply is an assistant message with ``reply_to`` and ``generation``; others have neither."""
    async with make_api(make_settings(assistant="echo")) as api:
        alice = await api.user("alice")
        sent = (await api.send(alice, "s1", "hello there")).json()["message"]
        assert (sent["reply_to"], sent["generation"], sent["error"]) == (None, None, None)
        await api.app.state.assistant.drain()
        messages, _ = await api.drain(alice, "s1")
        reply = next(m for m in messages if m["type"] == "assistant")
        assert (reply["reply_to"], reply["generation"], reply["error"]) == (sent["id"], "done", None)


async def test_delivery_clients_cannot_claim_to_be_a_generated_reply(api: Api) -> None:
    operator = await api.user("olga", "operator")
    r = await api.send(operator, "s1", "fake", type="assistant", reply_to="msg_x", generation="done")
    body = assert_error(r, 400, "invalid_request")
    assert "`reply_to`" in body["error"] and "`generation`" in body["error"]
