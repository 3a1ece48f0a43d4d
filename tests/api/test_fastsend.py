"""Plain sends are stored before FastAPI, exactly as the full route would; anything else goes to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pollchat.app import create_app
from pollchat.settings import Settings
from tests.api.support import assert_error
from tests.conftest import API, Api, running


def forbid_full_route(api: Api) -> None:
    async def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a plain send went through the full route")

    # The full route authenticates through its dependency; the front only asks what it remembers.
    api.app.state.services.auth.authenticate = refuse


async def contents(api: Api, token: str, session_id: str) -> list[str]:
    r = await api.poll(token, session_id)
    assert r.status_code == 200, r.text
    return [m["content"] for m in r.json()["messages"]]


async def test_fast_send_stores_and_answers_like_the_full_route(api: Api) -> None:
    alice = await api.user("alice")
    full = await api.send(alice, "s1", "first", client_message_id="k1")  # this one authenticates
    forbid_full_route(api)
    fast = await api.send(alice, "s1", "second", client_message_id="k2", metadata={"n": 1})
    assert (full.status_code, fast.status_code) == (201, 201)
    assert fast.json().keys() == full.json().keys()
    message = fast.json()["message"]
    assert fast.json()["success"] is True and fast.json()["message_id"] == message["id"]
    assert (message["content"], message["type"], message["metadata"]) == ("second", "user", {"n": 1})
    replay = await api.send(alice, "s1", "second", client_message_id="k2", metadata={"n": 1})
    assert replay.status_code == 200 and replay.json()["message_id"] == message["id"]
    assert await contents(api, alice, "s1") == ["first", "second"]
    metrics = (await api.http.get("/metrics")).text
    assert 'method="POST",route="/api/v1/admin/chat/messages",status="201"} 2.0' in metrics
    assert 'method="POST",route="/api/v1/admin/chat/messages",status="200"} 1.0' in metrics


async def test_fast_send_refusals_of_the_chat_service_keep_the_error_shape(api: Api) -> None:
    alice = await api.user("alice")
    assert (await api.send(alice, "s1", "hello")).status_code == 201
    forbid_full_route(api)
    assert_error(await api.send(alice, "s1", "   "), 400, "empty_content")
    assert_error(await api.send(alice, "s1", "hi", type="assistant"), 403, "type_not_allowed")
    assert await contents(api, alice, "s1") == ["hello"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"content": "x", "session_id": "s1"', "application/json", 400),  # not JSON
        (b'{"content": NaN, "session_id": "s1"}', "application/json", 400),
        (b'{"session_id": "s1"}', "application/json", 400),
        (b'{"content": "x", "session_id": "no spaces"}', "application/json", 400),
        (b'["x"]', "application/json", 400),
        (b'{"content": "\\ud800", "session_id": "s1"}', "application/json", 400),
        (b'{"content": "x", "session_id": "s1"}', "text/plain", 400),
    ],
)
async def test_fast_send_leaves_bad_input_to_the_full_route(
    api: Api, body: bytes, content_type: str, status: int
) -> None:
    alice = await api.user("alice")
    assert (await api.send(alice, "s1", "hello")).status_code == 201  # alice's token is remembered now
    r = await api.http.post(f"{API}/messages", content=body, headers={**api.auth(alice), "Content-Type": content_type})
    assert_error(r, status)
    assert await contents(api, alice, "s1") == ["hello"]


async def test_fast_send_is_rate_limited(make_settings: Callable[..., Settings]) -> None:
    async with running(create_app(make_settings(send_rate_limit="3/minute"))) as api:
        alice = await api.user("alice")
        assert (await api.send(alice, "s1", "one")).status_code == 201
        forbid_full_route(api)
        codes = [(await api.send(alice, "s1", f"m{i}")).status_code for i in range(3)]
        assert codes == [201, 201, 429]
        r = await api.send(alice, "s1", "again")
        assert_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1


async def test_fast_send_turns_a_failure_into_the_error_shape(api: Api) -> None:
    alice = await api.user("alice")
    assert (await api.send(alice, "s1", "hello")).status_code == 201

    async def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom")

    api.app.state.services.chat.send_one = fail
    assert_error(await api.send(alice, "s1", "again"), 500, "internal_error")
