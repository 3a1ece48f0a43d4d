"""Sessions: create, list, filter, inactivity, get, close and reopen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pollchat.server.app import create_app
from pollchat.settings import Settings
from tests.conftest import ADMIN_TOKEN, API, Api, FakeClock, running
from tests.server.support import assert_error, close_session, create_session


async def list_ids(api: Api, token: str, **params: str) -> list[str]:
    r = await api.http.get(f"{API}/sessions", params=params, headers=api.auth(token))
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    return [s["id"] for s in r.json()["sessions"]]


async def test_sessions_create_with_an_id_answers_201_with_the_session(api: Api) -> None:
    alice = await api.user("alice")
    me = (await api.http.get("/api/v1/admin/users/me", headers=api.auth(alice))).json()["user"]
    r = await api.http.post(f"{API}/sessions", json={"id": "chat-1", "client_name": "web"}, headers=api.auth(alice))
    assert r.status_code == 201, r.text
    assert r.json()["success"] is True
    session = r.json()["session"]
    assert session["id"] == "chat-1"
    assert session["client_name"] == "web"
    assert session["status"] == "active"
    assert session["message_count"] == 0
    assert session["last_message_id"] is None
    assert session["owner_id"] == me["id"]
    assert session["created_at"] == session["last_activity"]


async def test_sessions_create_without_a_body_mints_an_id(api: Api) -> None:
    alice = await api.user("alice")
    a = await api.http.post(f"{API}/sessions", headers=api.auth(alice))
    b = await api.http.post(f"{API}/sessions", json={}, headers=api.auth(alice))
    c = await api.http.post(f"{API}/sessions", json={"client_name": "cli"}, headers=api.auth(alice))
    assert (a.status_code, b.status_code, c.status_code) == (201, 201, 201)
    ids = {r.json()["session"]["id"] for r in (a, b, c)}
    assert len(ids) == 3
    assert sorted(await list_ids(api, alice)) == sorted(ids)
    # A minted id is usable wherever a session id is.
    minted = c.json()["session"]["id"]
    assert (await api.send(alice, minted, "hi")).status_code == 201


async def test_sessions_create_with_a_taken_id_is_409(api: Api) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    await create_session(api, alice, "taken")
    assert_error(
        await api.http.post(f"{API}/sessions", json={"id": "taken"}, headers=api.auth(alice)), 409, "session_exists"
    )
    assert_error(
        await api.http.post(f"{API}/sessions", json={"id": "taken"}, headers=api.auth(bob)), 409, "session_exists"
    )
    # The owner is unchanged: bob still cannot see it.
    assert_error(await api.http.get(f"{API}/sessions/taken", headers=api.auth(bob)), 404)


async def test_sessions_list_shows_a_member_only_its_own(api: Api) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    op = await api.user("op", "operator")
    await create_session(api, alice, "a1")
    await api.send(alice, "a2", "hi")
    await create_session(api, bob, "b1")
    assert sorted(await list_ids(api, alice)) == ["a1", "a2"]
    assert await list_ids(api, bob) == ["b1"]
    assert sorted(await list_ids(api, op)) == ["a1", "a2", "b1"]
    assert sorted(await list_ids(api, ADMIN_TOKEN)) == ["a1", "a2", "b1"]


async def test_sessions_list_is_newest_activity_first(make_api: Any, settings: Settings) -> None:
    clock = FakeClock()
    async with make_api(settings, clock=clock) as api:
        alice = await api.user("alice")
        for name in ("old", "middle", "new"):
            await create_session(api, alice, name)
            clock.advance(1)
        assert await list_ids(api, alice) == ["new", "middle", "old"]
        await api.send(alice, "old", "revived")
        assert await list_ids(api, alice) == ["old", "new", "middle"]


async def test_sessions_list_limit(api: Api) -> None:
    alice = await api.user("alice")
    for i in range(5):
        await create_session(api, alice, f"s{i}")
    assert len(await list_ids(api, alice, limit="2")) == 2
    assert_error(await api.http.get(f"{API}/sessions", params={"limit": "0"}, headers=api.auth(alice)), 400)


async def test_sessions_become_inactive_after_the_configured_time(
    make_settings: Callable[..., Settings],
) -> None:
    clock = FakeClock()
    async with running(create_app(make_settings(inactive_after=60), clock=clock)) as api:
        alice = await api.user("alice")
        await create_session(api, alice, "quiet")
        await create_session(api, alice, "busy")
        await create_session(api, alice, "done")
        assert (await close_session(api, alice, "done")).status_code == 200
        clock.advance(59)
        await api.send(alice, "busy", "still here")
        assert sorted(await list_ids(api, alice, status="active")) == ["busy", "quiet"]
        clock.advance(2)
        assert await list_ids(api, alice, status="active") == ["busy"]
        assert await list_ids(api, alice, status="inactive") == ["quiet"]
        assert await list_ids(api, alice, status="closed") == ["done"]
        quiet = (await api.http.get(f"{API}/sessions/quiet", headers=api.auth(alice))).json()["session"]
        assert quiet["status"] == "inactive"
        statuses = {
            s["id"]: s["status"]
            for s in (await api.http.get(f"{API}/sessions", headers=api.auth(alice))).json()["sessions"]
        }
        assert statuses == {"quiet": "inactive", "busy": "active", "done": "closed"}
        # A new message makes it active again.
        await api.send(alice, "quiet", "back")
        assert sorted(await list_ids(api, alice, status="active")) == ["busy", "quiet"]
        assert await list_ids(api, alice, status="inactive") == []


async def test_sessions_closed_stays_closed_however_old(make_settings: Callable[..., Settings]) -> None:
    clock = FakeClock()
    async with running(create_app(make_settings(inactive_after=60), clock=clock)) as api:
        alice = await api.user("alice")
        await create_session(api, alice, "done")
        await close_session(api, alice, "done")
        clock.advance(3600)
        assert await list_ids(api, alice, status="closed") == ["done"]
        assert await list_ids(api, alice, status="inactive") == []


async def test_sessions_get_reports_counts_and_last_message(make_api: Any, settings: Settings) -> None:
    clock = FakeClock()
    async with make_api(settings, clock=clock) as api:
        alice = await api.user("alice")
        created = await create_session(api, alice, "s1")
        clock.advance(5)
        await api.send(alice, "s1", "one")
        clock.advance(5)
        last = (await api.send(alice, "s1", "two")).json()["message_id"]
        r = await api.http.get(f"{API}/sessions/s1", headers=api.auth(alice))
        assert r.status_code == 200
        session = r.json()["session"]
        assert session["message_count"] == 2
        assert session["last_message_id"] == last
        assert session["created_at"] == created["created_at"] == "2026-01-01T00:00:00.000000Z"
        assert session["last_activity"] == "2026-01-01T00:00:10.000000Z"


async def test_sessions_get_of_a_missing_session_is_404(api: Api) -> None:
    alice = await api.user("alice")
    assert_error(await api.http.get(f"{API}/sessions/nope", headers=api.auth(alice)), 404, "session_not_found")


async def test_sessions_close_refuses_sends_and_reopen_accepts_them(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "before")
    r = await close_session(api, alice, "s1")
    assert r.status_code == 200
    assert r.json()["session"]["status"] == "closed"
    assert (await api.http.get(f"{API}/sessions/s1", headers=api.auth(alice))).json()["session"]["status"] == "closed"
    assert_error(await api.send(alice, "s1", "after"), 409, "session_closed")
    assert_error(await api.send(op, "s1", "reply", type="assistant"), 409, "session_closed")
    # Polling a closed session still works.
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["before"]

    # Closing is final for the member; an operator may reopen.
    assert_error(await close_session(api, alice, "s1", status="active"), 403, "reopen_not_allowed")
    r = await close_session(api, op, "s1", status="active")
    assert r.status_code == 200 and r.json()["session"]["status"] == "active"
    assert (await api.send(alice, "s1", "reopened")).status_code == 201
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["before", "reopened"]


async def test_sessions_operator_may_close_any_session(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "hi")
    assert (await close_session(api, op, "s1")).status_code == 200
    assert_error(await api.send(alice, "s1", "after"), 409, "session_closed")


async def test_sessions_patch_renames_the_client(api: Api) -> None:
    alice = await api.user("alice")
    await create_session(api, alice, "s1", client_name="old")
    r = await api.http.patch(f"{API}/sessions/s1", json={"client_name": "new"}, headers=api.auth(alice))
    assert r.status_code == 200
    assert r.json()["session"]["client_name"] == "new"
    assert r.json()["session"]["status"] == "active"


async def test_sessions_patch_of_a_missing_session_is_404(api: Api) -> None:
    alice = await api.user("alice")
    assert_error(await close_session(api, alice, "nope"), 404, "session_not_found")
    assert await list_ids(api, ADMIN_TOKEN) == []


async def test_sessions_edit_in_a_closed_session_is_409(api: Api) -> None:
    alice = await api.user("alice")
    sent = (await api.send(alice, "s1", "hi")).json()["message_id"]
    await close_session(api, alice, "s1")
    r = await api.http.patch(f"{API}/messages/{sent}", json={"content": "changed"}, headers=api.auth(alice))
    assert_error(r, 409, "session_closed")
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["hi"]


async def test_sessions_member_cannot_reopen_a_session_an_operator_closed(api: Api) -> None:
    """A member could reopen a session an operator had closed."""
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "hello")
    assert (await close_session(api, op, "s1")).status_code == 200
    assert_error(await close_session(api, alice, "s1", status="active"), 403, "reopen_not_allowed")
    assert_error(await api.send(alice, "s1", "still here?"), 409, "session_closed")


async def test_sessions_operator_cannot_speak_as_the_member(api: Api) -> None:
    """An operator could post ``type: "user"`` into a member's session, speaking as the member."""
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "hello")
    assert_error(await api.send(op, "s1", "I agree to everything", type="user"), 403, "type_not_allowed")
    assert (await api.send(op, "s1", "How can I help?", type="assistant")).status_code == 201
    assert (await api.send(op, "own", "a note to myself", type="user")).status_code == 201  # in its own session
    messages, _ = await api.drain(alice, "s1")
    assert [(m["type"], m["content"]) for m in messages] == [("user", "hello"), ("assistant", "How can I help?")]
