"""Rotating and revoking tokens through HTTP: who may, and that an old token stops at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pollchat.server.app import create_app
from pollchat.settings import Settings
from tests.conftest import ADMIN_TOKEN, Api, FakeClock, running
from tests.server.support import assert_error
from tests.storage.conftest import empty_database

USERS = "/api/v1/admin/users"


def token_path(user_id: str) -> str:
    return f"{USERS}/{user_id}/token"


async def user_of(api: Api, token: str) -> dict[str, Any]:
    r = await api.http.get(f"{USERS}/me", headers=api.auth(token))
    assert r.status_code == 200, r.text
    user: dict[str, Any] = r.json()["user"]
    return user


async def rotate(api: Api, caller: str, user_id: str) -> httpx.Response:
    return await api.http.post(token_path(user_id), headers=api.auth(caller))


async def revoke(api: Api, caller: str, user_id: str) -> httpx.Response:
    return await api.http.delete(token_path(user_id), headers=api.auth(caller))


async def refused_everywhere(api: Api, token: str) -> None:
    """``token`` gets 401 from the full routes and from the poll (fast path included)."""
    assert_error(await api.http.get(f"{USERS}/me", headers=api.auth(token)), 401, "invalid_token")
    assert_error(await api.poll(token, "s1"), 401, "invalid_token")
    assert_error(await api.send(token, "s1", "still here?"), 401, "invalid_token")
    assert_error(await rotate(api, token, "me"), 401, "invalid_token")


def remembered(api: Api, token: str) -> Any:
    """The user the fast poll path would serve ``token`` as, without asking storage."""
    return api.app.state.services.auth.remembered(f"Bearer {token}")


async def test_tokens_admin_rotates_a_users_token(api: Api) -> None:
    old = await api.user("alice")
    alice = await user_of(api, old)
    await api.send(old, "s1", "before")
    r = await rotate(api, ADMIN_TOKEN, alice["id"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["user"] == alice
    new = body["token"]
    assert isinstance(new, str) and len(new) >= 32 and new != old
    await refused_everywhere(api, old)
    assert await user_of(api, new) == alice
    # The same user: its sessions are still its own.
    messages, _ = await api.drain(new, "s1")
    assert [m["content"] for m in messages] == ["before"]


async def test_tokens_admin_revokes_and_a_later_rotation_restores_access(api: Api) -> None:
    token = await api.user("alice")
    alice = await user_of(api, token)
    r = await revoke(api, ADMIN_TOKEN, alice["id"])
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "user": alice}
    await refused_everywhere(api, token)
    # Revoking again is harmless; the user is still listed.
    assert (await revoke(api, ADMIN_TOKEN, alice["id"])).status_code == 200
    listed = (await api.http.get(USERS, headers=api.auth(ADMIN_TOKEN))).json()["users"]
    assert alice in listed
    new = (await rotate(api, ADMIN_TOKEN, alice["id"])).json()["token"]
    assert await user_of(api, new) == alice
    await refused_everywhere(api, token)


@pytest.mark.parametrize("role", ["member", "operator", "admin"])
@pytest.mark.parametrize("spelling", ["me", "own id"])
async def test_tokens_any_user_rotates_its_own(api: Api, role: str, spelling: str) -> None:
    old = await api.user("someone", role)
    me = await user_of(api, old)
    r = await rotate(api, old, "me" if spelling == "me" else me["id"])
    assert r.status_code == 200, r.text
    assert r.json()["user"] == me
    await refused_everywhere(api, old)
    assert await user_of(api, r.json()["token"]) == me


@pytest.mark.parametrize("role", ["member", "operator", "admin"])
async def test_tokens_any_user_revokes_its_own(api: Api, role: str) -> None:
    token = await api.user("someone", role)
    me = await user_of(api, token)
    r = await revoke(api, token, "me")
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "user": me}
    await refused_everywhere(api, token)
    # Only an admin can give it a token again.
    new = (await rotate(api, ADMIN_TOKEN, me["id"])).json()["token"]
    assert await user_of(api, new) == me


@pytest.mark.parametrize("role", ["member", "operator"])
async def test_tokens_non_admins_may_not_touch_other_users_tokens(api: Api, role: str) -> None:
    """403 for another user and for an id naming nobody alike: a non-admin learns nothing of other users."""
    caller = await api.user("caller", role)
    victim = await api.user("victim")
    victim_id = (await user_of(api, victim))["id"]
    admin_id = (await user_of(api, ADMIN_TOKEN))["id"]
    for target in (victim_id, admin_id, "u_0000000000000000", "nobody", "x" * 300):
        for change in (rotate, revoke):
            assert_error(await change(api, caller, target), 403, "not_your_token")
    assert (await user_of(api, victim))["name"] == "victim"
    assert (await user_of(api, ADMIN_TOKEN))["name"] == "admin"
    assert (await user_of(api, caller))["name"] == "caller"


@pytest.mark.parametrize(
    "user_id", ["u_0000000000000000", "nobody", "U_0000000000000000", "u_" + "0" * 300, "me%00", "%00", "ME", "me "]
)
async def test_tokens_admin_naming_no_user_gets_404_and_nothing_changes(api: Api, user_id: str) -> None:
    alice = await api.user("alice")
    for change in (rotate, revoke):
        assert_error(await change(api, ADMIN_TOKEN, user_id), 404, "user_not_found")
    assert (await user_of(api, alice))["name"] == "alice"
    assert (await user_of(api, ADMIN_TOKEN))["name"] == "admin"


async def test_tokens_refusals_are_json_errors(api: Api) -> None:
    alice = await api.user("alice")
    alice_id = (await user_of(api, alice))["id"]
    assert_error(await api.http.post(token_path(alice_id)), 401, "missing_token")
    assert_error(await api.http.delete(token_path("me"), headers={"Authorization": "Basic x"}), 401)
    assert_error(await api.http.get(token_path("me"), headers=api.auth(alice)), 405)
    assert_error(await api.http.put(token_path("me"), headers=api.auth(alice)), 405)
    # A body is not expected, and one that is not JSON changes nothing about the answer.
    r = await api.http.post(
        token_path("me"), content=b"{not json", headers={**api.auth(alice), "Content-Type": "application/json"}
    )
    assert r.status_code == 200, r.text


async def test_tokens_rotation_reaches_the_fast_poll_path_at_once(api: Api) -> None:
    """The fast poll path serves remembered tokens without FastAPI: a rotation must reach it too."""
    old = await api.user("alice")
    alice_id = (await user_of(api, old))["id"]
    await api.send(old, "s1", "hello")
    cursor = (await api.poll(old, "s1")).json()["cursor"]
    assert remembered(api, old) is not None  # the next poll would be answered before FastAPI
    new = (await rotate(api, ADMIN_TOKEN, alice_id)).json()["token"]
    assert remembered(api, old) is None
    assert_error(await api.poll(old, "s1", since=cursor), 401, "invalid_token")
    assert_error(await api.poll(old, "s1", since=cursor, wait=1), 401, "invalid_token")
    r = await api.poll(new, "s1", since=cursor)
    assert r.status_code == 200 and r.json()["messages"] == []


async def test_tokens_revocation_reaches_the_fast_poll_path_at_once(api: Api) -> None:
    token = await api.user("alice")
    await api.send(token, "s1", "hello")
    etag = (await api.poll(token, "s1")).headers["etag"]
    assert (await api.poll(token, "s1", headers={"If-None-Match": etag})).status_code == 304
    assert remembered(api, token) is not None
    assert (await revoke(api, token, "me")).status_code == 200
    assert_error(await api.poll(token, "s1", headers={"If-None-Match": etag}), 401, "invalid_token")
    assert_error(await api.poll(token, "s1"), 401, "invalid_token")


async def test_tokens_the_admin_of_pollchat_admin_token_gets_it_back_at_the_next_start(
    make_settings: Callable[..., Settings],
) -> None:
    """POLLCHAT_ADMIN_TOKEN is put back at every start: rotating it away lasts until a restart."""
    settings = make_settings()
    async with running(create_app(settings)) as api:
        assert (await revoke(api, ADMIN_TOKEN, "me")).status_code == 200
        await refused_everywhere(api, ADMIN_TOKEN)
    async with running(create_app(settings)) as api:
        assert (await user_of(api, ADMIN_TOKEN))["name"] == "admin"


async def test_tokens_revoked_on_one_instance_are_refused_by_another_at_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Two instances on one PostgreSQL database: the other hears the change through NOTIFY.

    The second instance's clock stands still, so its remembered tokens never expire by time:
    only the notification can make it refuse the revoked token.
    """
    async with empty_database("postgres", tmp_path) as url:
        settings = make_settings(database_url=url)
        async with running(create_app(settings)) as one, running(create_app(settings, clock=FakeClock())) as two:
            token = await one.user("alice")
            alice_id = (await user_of(one, token))["id"]
            await one.send(token, "s1", "hello")
            assert (await two.poll(token, "s1")).status_code == 200
            assert remembered(two, token) is not None

            new = (await rotate(one, ADMIN_TOKEN, alice_id)).json()["token"]
            await until_refused(two, token)
            assert (await two.poll(new, "s1")).status_code == 200
            assert remembered(two, new) is not None

            assert (await revoke(one, new, "me")).status_code == 200
            await until_refused(two, new)
            await refused_everywhere(two, new)


async def until_refused(api: Api, token: str, timeout: float = 10.0) -> None:
    """Poll with ``token`` until the instance answers 401 (its notification arrived)."""
    async with asyncio.timeout(timeout):
        while (await api.poll(token, "s1")).status_code != 401:
            await asyncio.sleep(0.01)
    assert remembered(api, token) is None
