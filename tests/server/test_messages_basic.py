from __future__ import annotations

from tests.conftest import Api


async def test_send_then_poll_returns_the_message(api: Api) -> None:
    alice = await api.user("alice")
    r = await api.send(alice, "s1", "hello")
    assert r.status_code == 201
    message_id = r.json()["message_id"]
    messages, cursor = await api.drain(alice, "s1")
    assert [(m["id"], m["content"], m["type"], m["status"]) for m in messages] == [
        (message_id, "hello", "user", "sent")
    ]
    assert cursor.startswith("c_")
