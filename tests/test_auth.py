"""The authenticator's cache of token lookups."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pollchat.auth import Authenticator, hash_token
from pollchat.errors import Unauthorized
from pollchat.storage.base import User


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
