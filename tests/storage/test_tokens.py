"""Rotating and revoking tokens, and how storage announces token changes, on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pollchat.domain.errors import Conflict, NotFound
from pollchat.server.auth import hash_token
from pollchat.storage import Storage
from tests.storage.conftest import Backend, MakeUser, Tick

Heard = list[str | None]


def listen(storage: Storage) -> Heard:
    """Every token announcement ``storage`` makes from now on."""
    heard: Heard = []
    storage.on_token_change(heard.append)
    return heard


def users_heard(heard: Heard) -> set[str]:
    """The users named, without the "anyone" a listener (re)connecting announces."""
    return {user_id for user_id in heard if user_id is not None}


async def eventually(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (a notification arrived), failing after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_rotate_token_replaces_the_hash(storage: Storage, make_user: MakeUser) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    rotated = await storage.rotate_token(alice.id, token_hash="hash-new")
    assert rotated == alice
    assert await storage.user_by_token_hash("hash-alice") is None
    assert await storage.user_by_token_hash("hash-new") == alice
    assert await storage.user_by_token_hash("hash-bob") == bob
    assert await storage.list_users() == [alice, bob]


async def test_revoke_token_leaves_the_user_without_a_working_token(storage: Storage, make_user: MakeUser) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    assert await storage.revoke_token(alice.id) == alice
    # Two revoked users at once: the marker keeps the UNIQUE constraint on hashes satisfied.
    assert await storage.revoke_token(bob.id) == bob
    assert await storage.revoke_token(bob.id) == bob
    for token_hash in ("hash-alice", "hash-bob", hash_token(""), hash_token("revoked")):
        assert await storage.user_by_token_hash(token_hash) is None
    assert await storage.list_users() == [alice, bob]
    await storage.rotate_token(alice.id, token_hash="hash-again")
    assert await storage.user_by_token_hash("hash-again") == alice


async def test_token_changes_of_an_unknown_user_are_not_found(storage: Storage, make_user: MakeUser) -> None:
    alice = await make_user("alice")
    heard = listen(storage)
    with pytest.raises(NotFound) as rotating:
        await storage.rotate_token("u_0000000000000000", token_hash="hash-x")
    with pytest.raises(NotFound) as revoking:
        await storage.revoke_token("u_0000000000000000")
    assert rotating.value.code == revoking.value.code == "user_not_found"
    assert await storage.user_by_token_hash("hash-x") is None
    assert await storage.user_by_token_hash("hash-alice") == alice
    assert users_heard(heard) == set()


async def test_rotate_token_to_a_hash_another_user_holds_is_a_conflict(storage: Storage, make_user: MakeUser) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    with pytest.raises(Conflict):
        await storage.rotate_token(alice.id, token_hash="hash-bob")
    assert await storage.user_by_token_hash("hash-alice") == alice
    assert await storage.user_by_token_hash("hash-bob") == bob
    # The user's own hash again is no conflict.
    assert await storage.rotate_token(alice.id, token_hash="hash-alice") == alice


async def test_token_changes_are_announced_by_the_time_they_return(storage: Storage, make_user: MakeUser) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    heard = listen(storage)
    await storage.rotate_token(alice.id, token_hash="hash-new")
    assert users_heard(heard) == {alice.id}
    await storage.revoke_token(bob.id)
    assert users_heard(heard) == {alice.id, bob.id}


async def test_put_user_announces_what_it_changes(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    # On PostgreSQL a change is also heard again later, through its own notification: each
    # assertion therefore looks at everything heard so far.
    admin = await storage.put_user(name="admin", role="admin", token_hash="hash-admin", now=tick())
    bob = await make_user("bob")
    heard = listen(storage)
    # The same role and token again (every start with POLLCHAT_ADMIN_TOKEN): nothing to forget.
    await storage.put_user(name="admin", role="admin", token_hash="hash-admin", now=tick())
    assert users_heard(heard) == set()
    await storage.put_user(name="admin", role="admin", token_hash="hash-admin-2", now=tick())
    assert users_heard(heard) == {admin.id}
    # A new user taking bob's token: bob loses it, and that is announced too.
    carol = await storage.put_user(name="carol", role="member", token_hash="hash-bob", now=tick())
    assert await storage.user_by_token_hash("hash-bob") == carol
    assert users_heard(heard) == {admin.id, bob.id}


async def test_put_user_announces_a_role_change(storage: Storage, tick: Tick) -> None:
    """A remembered token carries its user's role: a demotion must reach the caches too."""
    admin = await storage.put_user(name="admin", role="admin", token_hash="hash-admin", now=tick())
    heard = listen(storage)
    await storage.put_user(name="admin", role="operator", token_hash="hash-admin", now=tick())
    assert users_heard(heard) == {admin.id}


# announcements across instances: PostgreSQL only (one SQLite file has one server)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_another_instance_hears_token_changes_at_once(backend: Backend, tick: Tick) -> None:
    one = await backend.open()
    two = await backend.open()
    # Before anything awaits: the listening task has not run yet, so its first "anyone" is heard.
    heard = listen(two)
    alice = await one.create_user(name="alice", role="member", token_hash="hash-alice", now=tick())
    bob = await one.create_user(name="bob", role="member", token_hash="hash-bob", now=tick())
    await eventually(lambda: None in heard)  # listening: what commits from now on is heard
    await one.rotate_token(alice.id, token_hash="hash-new")
    await eventually(lambda: alice.id in heard)
    assert await two.user_by_token_hash("hash-alice") is None
    assert await two.user_by_token_hash("hash-new") == alice
    await one.revoke_token(bob.id)
    await eventually(lambda: bob.id in heard)
    await one.put_user(name="alice", role="admin", token_hash="hash-new", now=tick())
    await eventually(lambda: heard.count(alice.id) == 2)
    assert users_heard(heard) == {alice.id, bob.id}


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_reconnected_listener_announces_that_anyone_may_have_changed(backend: Backend) -> None:
    """Notifications sent while the listening connection was down are lost: every cached token must go."""
    import asyncpg

    storage = await backend.open()
    heard = listen(storage)  # before anything awaits, as above
    await eventually(lambda: None in heard)  # the first connection
    heard.clear()
    conn = await asyncpg.connect(backend.url)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    assert killed >= 1
    await eventually(lambda: None in heard)
    await storage.ping()
