"""The authenticator's cache of token lookups."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from pollchat.domain.errors import Unauthorized
from pollchat.domain.records import User
from pollchat.server.auth import Authenticator, hash_token


class CountingUsers:
    """Just enough storage for the authenticator, counting lookups."""

    def __init__(self) -> None:
        self.by_hash: dict[str, User] = {}
        self.lookups = 0

    async def user_by_token_hash(self, token_hash: str) -> User | None:
        self.lookups += 1
        return self.by_hash.get(token_hash)


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


ALICE = User(id="u_alice", name="alice", role="member", created_at=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture
def setup() -> tuple[Authenticator, CountingUsers, Ticks]:
    users, ticks = CountingUsers(), Ticks()
    users.by_hash[hash_token("alice-token")] = ALICE
    return Authenticator(users, monotonic=ticks, ttl=5.0), users, ticks  # type: ignore[arg-type]


async def test_authenticator_remembers_a_found_token_for_its_ttl(
    setup: tuple[Authenticator, CountingUsers, Ticks],
) -> None:
    auth, users, ticks = setup
    assert await auth.authenticate("Bearer alice-token") == ALICE
    assert await auth.authenticate("Bearer alice-token") == ALICE
    assert users.lookups == 1
    ticks.now += 5.1
    assert await auth.authenticate("Bearer alice-token") == ALICE
    assert users.lookups == 2


async def test_authenticator_sees_a_revoked_token_after_the_ttl(
    setup: tuple[Authenticator, CountingUsers, Ticks],
) -> None:
    auth, users, ticks = setup
    await auth.authenticate("Bearer alice-token")
    users.by_hash.clear()
    ticks.now += 5.1
    with pytest.raises(Unauthorized):
        await auth.authenticate("Bearer alice-token")


async def test_authenticator_forget_drops_remembered_tokens_at_once(
    setup: tuple[Authenticator, CountingUsers, Ticks],
) -> None:
    auth, users, _ = setup
    await auth.authenticate("Bearer alice-token")
    users.by_hash.clear()
    auth.forget()
    with pytest.raises(Unauthorized):
        await auth.authenticate("Bearer alice-token")


async def test_authenticator_does_not_remember_unknown_tokens(
    setup: tuple[Authenticator, CountingUsers, Ticks],
) -> None:
    """A token minted on another instance must work there at once, not after a cached refusal expires."""
    auth, users, _ = setup
    with pytest.raises(Unauthorized):
        await auth.authenticate("Bearer bob-token")
    users.by_hash[hash_token("bob-token")] = ALICE
    assert await auth.authenticate("Bearer bob-token") == ALICE


BOB = User(id="u_bob", name="bob", role="member", created_at=datetime(2026, 1, 1, tzinfo=UTC))


async def test_authenticator_forget_user_drops_only_that_users_tokens(
    setup: tuple[Authenticator, CountingUsers, Ticks],
) -> None:
    auth, users, _ = setup
    users.by_hash[hash_token("alice-second")] = ALICE
    users.by_hash[hash_token("bob-token")] = BOB
    for token in ("alice-token", "alice-second", "bob-token"):
        await auth.authenticate(f"Bearer {token}")
    del users.by_hash[hash_token("alice-token")]
    auth.token_changed(ALICE.id)
    assert auth.remembered("Bearer alice-token") is None
    assert auth.remembered("Bearer alice-second") is None
    assert auth.remembered("Bearer bob-token") == BOB
    with pytest.raises(Unauthorized):
        await auth.authenticate("Bearer alice-token")
    assert await auth.authenticate("Bearer alice-second") == ALICE


async def test_authenticator_token_changed_for_anyone_forgets_everything(
    setup: tuple[Authenticator, CountingUsers, Ticks],
) -> None:
    auth, users, _ = setup
    users.by_hash[hash_token("bob-token")] = BOB
    await auth.authenticate("Bearer alice-token")
    await auth.authenticate("Bearer bob-token")
    auth.token_changed(None)
    assert auth.remembered("Bearer alice-token") is None
    assert auth.remembered("Bearer bob-token") is None


async def test_authenticator_does_not_remember_a_lookup_that_spanned_a_token_change() -> None:
    """A lookup that read the row before a revocation committed must not cache the revoked token
    after the revocation's announcement has already been handled."""
    ticks = Ticks()
    read, answer = asyncio.Event(), asyncio.Event()

    class SlowUsers:
        async def user_by_token_hash(self, token_hash: str) -> User | None:
            read.set()
            await answer.wait()
            return ALICE  # the row as it was before the revocation

    auth = Authenticator(SlowUsers(), monotonic=ticks, ttl=5.0)  # type: ignore[arg-type]
    lookup = asyncio.create_task(auth.authenticate("Bearer alice-token"))
    await read.wait()
    auth.token_changed(ALICE.id)  # the revocation commits and is announced meanwhile
    answer.set()
    assert await lookup == ALICE  # this request raced the revocation; it may pass
    assert auth.remembered("Bearer alice-token") is None
