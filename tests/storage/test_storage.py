"""The storage contract, run against every backend in ``tests/storage/conftest.py::BACKENDS``.

Everything here goes through the ``Storage`` protocol only, so a new backend passes or fails
the same suite.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pollchat.domain.errors import ConfigurationError, Conflict, Forbidden, NotFound
from pollchat.domain.records import Message, NewMessage, User
from pollchat.domain.rules import is_staff
from pollchat.storage import Storage, create_storage
from pollchat.storage.schema import MIGRATIONS
from tests.storage.conftest import Backend, MakeUser, Tick, empty_database

# helpers


def new(session_id: str, content: str = "hi", **kwargs: Any) -> NewMessage:
    return NewMessage(session_id=session_id, type=kwargs.pop("type", "user"), content=content, **kwargs)


async def append_one(storage: Storage, author: User, item: NewMessage, tick: Tick) -> Message:
    (result,) = await storage.append([item], author=author, now=tick())
    assert result.error is None, result.error
    assert result.message is not None
    return result.message


async def everything(storage: Storage, session_id: str) -> list[Message]:
    """Every message of a session in its latest state, in change order (one big page)."""
    page = await storage.changes(session_id, after=0, limit=10_000)
    assert not page.has_more
    return page.messages


def state(message: Message) -> tuple[Any, ...]:
    """What a client can see of a message, without its position in the change sequence."""
    return (
        message.id,
        message.session_id,
        message.user_id,
        message.type,
        message.content,
        message.client_message_id,
        message.metadata,
        message.delivered,
        message.read,
        message.created_seq,
        message.edited_at,
    )


# opening and migrations


async def test_open_migrates_an_empty_database(backend: Backend) -> None:
    storage = await backend.open()
    await storage.ping()
    assert await storage.list_users() == []
    assert not await storage.has_admin()
    assert await storage.get_session("nope") is None
    version = await backend.schema_version()
    assert version in (None, len(MIGRATIONS))


async def test_reopen_keeps_data_and_schema_version(backend: Backend, tick: Tick) -> None:
    first = await backend.open()
    alice = await first.create_user(name="alice", role="member", token_hash="hash-alice", now=tick())
    message = await append_one(first, alice, new("s1", "kept", client_message_id="c1", metadata={"k": [1, 2]}), tick)
    await first.mark_delivered("s1", [message.id], now=tick())
    version = await backend.schema_version()
    await first.close()

    second = await backend.open()
    assert await backend.schema_version() == version
    assert await second.user_by_token_hash("hash-alice") == alice
    session = await second.get_session("s1")
    assert session is not None
    assert (session.owner_id, session.message_count, session.last_message_id, session.head) == (
        alice.id,
        1,
        message.id,
        2,
    )
    (stored,) = await everything(second, "s1")
    assert stored == replace(message, delivered=True, change_seq=2)
    # The sequence carries on where it stopped, and idempotency survives the restart.
    (replayed,) = await second.append([new("s1", "kept", client_message_id="c1")], author=alice, now=tick())
    assert (replayed.created, replayed.message) == (False, stored)
    later = await append_one(second, alice, new("s1", "after restart"), tick)
    assert later.created_seq == 3


async def test_open_twice_on_one_database(backend: Backend) -> None:
    """Two storages on one database (say, a restart while the old process drains) both work."""
    one = await backend.open()
    two = await backend.open()
    await one.create_user(name="alice", role="admin", token_hash="h", now=Tick()())
    assert await two.has_admin()
    assert await backend.schema_version() in (None, len(MIGRATIONS))


async def test_server_secret_is_32_bytes_stable_across_calls(storage: Storage) -> None:
    secret = await storage.server_secret()
    assert isinstance(secret, bytes) and len(secret) == 32
    assert await storage.server_secret() == secret


async def test_server_secret_survives_reopen(backend: Backend) -> None:
    first = await backend.open()
    secret = await first.server_secret()
    await first.close()
    assert await (await backend.open()).server_secret() == secret


async def test_server_secret_is_shared_by_storages_on_one_database(backend: Backend) -> None:
    """Instances behind one load balancer must key their tags alike, even when they ask at once."""
    one, two, three = await backend.open(), await backend.open(), await backend.open()
    secrets = await asyncio.gather(one.server_secret(), two.server_secret(), three.server_secret())
    assert len(set(secrets)) == 1
    assert await (await backend.open()).server_secret() == secrets[0]


async def test_server_secrets_differ_between_databases(backend: Backend, tmp_path: Path) -> None:
    storage = await backend.open()
    async with empty_database(backend.name, tmp_path / "other") as url:
        other = create_storage(url)
        await other.open()
        try:
            assert await other.server_secret() != await storage.server_secret()
        finally:
            await other.close()


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("mysql://localhost/db", "bad_database_url"),
        ("sqlite://", "bad_database_url"),
        ("sqlite:///", "bad_database_url"),
        ("", "bad_database_url"),
    ],
)
def test_create_storage_refuses_bad_urls(url: str, code: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        create_storage(url)
    assert info.value.code == code


# users


async def test_create_user_and_find_it_by_token_hash(storage: Storage, tick: Tick) -> None:
    now = tick()
    user = await storage.create_user(name="alice", role="operator", token_hash="hash-a", now=now)
    assert (user.name, user.role, user.created_at) == ("alice", "operator", now)
    assert is_staff(user)
    assert await storage.user_by_token_hash("hash-a") == user
    assert await storage.user_by_token_hash("hash-b") is None
    assert await storage.list_users() == [user]


async def test_duplicate_user_name_is_a_conflict(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice = await make_user("alice")
    with pytest.raises(Conflict) as info:
        await storage.create_user(name="alice", role="admin", token_hash="other", now=tick())
    assert info.value.code == "user_exists"
    assert await storage.list_users() == [alice]
    assert await storage.user_by_token_hash("other") is None


async def test_list_users_oldest_first(storage: Storage, make_user: MakeUser) -> None:
    users = [await make_user(name) for name in ("carol", "alice", "bob")]
    assert await storage.list_users() == users


async def test_put_user_creates_then_updates_in_place(storage: Storage, tick: Tick) -> None:
    created = await storage.put_user(name="admin", role="member", token_hash="t1", now=tick())
    assert await storage.user_by_token_hash("t1") == created
    updated = await storage.put_user(name="admin", role="admin", token_hash="t2", now=tick())
    assert (updated.id, updated.created_at, updated.role) == (created.id, created.created_at, "admin")
    assert await storage.user_by_token_hash("t1") is None
    assert await storage.user_by_token_hash("t2") == updated
    assert await storage.list_users() == [updated]
    # Same token again: nothing changes.
    assert await storage.put_user(name="admin", role="admin", token_hash="t2", now=tick()) == updated


async def test_put_user_takes_a_token_from_its_old_holder(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    bob = await make_user("bob")
    admin = await storage.put_user(name="admin", role="admin", token_hash="hash-bob", now=tick())
    assert await storage.user_by_token_hash("hash-bob") == admin
    carol = await make_user("carol")
    again = await storage.put_user(name="admin", role="admin", token_hash="hash-carol", now=tick())
    assert again.id == admin.id
    assert await storage.user_by_token_hash("hash-carol") == again
    assert {u.id for u in await storage.list_users()} == {bob.id, admin.id, carol.id}


async def test_has_admin(storage: Storage, make_user: MakeUser) -> None:
    assert not await storage.has_admin()
    await make_user("op", "operator")
    await make_user("mem", "member")
    assert not await storage.has_admin()
    await make_user("root", "admin")
    assert await storage.has_admin()


# sessions


async def test_create_and_get_session(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice = await make_user("alice")
    now = tick()
    session = await storage.create_session(session_id="s1", owner_id=alice.id, client_name="web", now=now)
    assert session.id == "s1"
    assert (session.owner_id, session.client_name, session.created_at, session.last_activity) == (
        alice.id,
        "web",
        now,
        now,
    )
    assert (session.closed, session.message_count, session.last_message_id, session.head) == (False, 0, None, 0)
    assert await storage.get_session("s1") == session
    assert await storage.get_session("s2") is None


async def test_duplicate_session_id_is_a_conflict(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    first = await storage.create_session(session_id="s1", owner_id=alice.id, client_name=None, now=tick())
    with pytest.raises(Conflict) as info:
        await storage.create_session(session_id="s1", owner_id=bob.id, client_name="x", now=tick())
    assert info.value.code == "session_exists"
    assert await storage.get_session("s1") == first


async def test_list_sessions_by_owner_newest_activity_first(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    for sid, owner in (("a1", alice), ("b1", bob), ("a2", alice), ("a3", alice)):
        await storage.create_session(session_id=sid, owner_id=owner.id, client_name=None, now=tick())
    await append_one(storage, alice, new("a1", "bump"), tick)  # a1 is now the most recent
    cutoff = tick() - timedelta(days=1)

    def ids(sessions: list[Any]) -> list[str]:
        return [s.id for s in sessions]

    assert ids(await storage.list_sessions(owner_id=alice.id, status=None, inactive_before=cutoff, limit=10)) == [
        "a1",
        "a3",
        "a2",
    ]
    assert ids(await storage.list_sessions(owner_id=bob.id, status=None, inactive_before=cutoff, limit=10)) == ["b1"]
    assert ids(await storage.list_sessions(owner_id=None, status=None, inactive_before=cutoff, limit=10)) == [
        "a1",
        "a3",
        "a2",
        "b1",
    ]
    assert ids(await storage.list_sessions(owner_id=None, status=None, inactive_before=cutoff, limit=2)) == [
        "a1",
        "a3",
    ]


async def test_list_sessions_by_status(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice = await make_user("alice")
    await storage.create_session(session_id="old", owner_id=alice.id, client_name=None, now=tick())
    await storage.create_session(session_id="gone", owner_id=alice.id, client_name=None, now=tick())
    cutoff = tick()
    await storage.create_session(session_id="new", owner_id=alice.id, client_name=None, now=tick())
    await storage.update_session("gone", closed=True, client_name=None, now=tick())  # recent, but closed

    async def listed(status: str | None) -> set[str]:
        sessions = await storage.list_sessions(owner_id=alice.id, status=status, inactive_before=cutoff, limit=10)
        return {s.id for s in sessions}

    assert await listed("active") == {"new"}
    assert await listed("inactive") == {"old"}
    assert await listed("closed") == {"gone"}
    assert await listed(None) == {"old", "new", "gone"}
    # Activity brings an inactive session back.
    await append_one(storage, alice, new("old", "wake up"), tick)
    assert await listed("active") == {"new", "old"}
    assert await listed("inactive") == set()


async def test_update_session(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice = await make_user("alice")
    created = await storage.create_session(session_id="s1", owner_id=alice.id, client_name="web", now=tick())
    now = tick()
    closed = await storage.update_session("s1", closed=True, client_name=None, now=now)
    assert (closed.closed, closed.client_name, closed.last_activity, closed.created_at) == (
        True,
        "web",
        now,
        created.created_at,
    )
    renamed = await storage.update_session("s1", closed=None, client_name="cli", now=tick())
    assert (renamed.closed, renamed.client_name) == (True, "cli")
    reopened = await storage.update_session("s1", closed=False, client_name=None, now=tick())
    assert (reopened.closed, reopened.client_name) == (False, "cli")
    assert await storage.get_session("s1") == reopened
    with pytest.raises(NotFound):
        await storage.update_session("nope", closed=True, client_name=None, now=tick())


# append


async def test_append_creates_a_missing_session_for_the_author(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    alice = await make_user("alice")
    now = tick()
    (result,) = await storage.append([new("s1", "hello", client_name="web", metadata={"a": 1})], author=alice, now=now)
    assert result.created and result.error is None and result.message is not None
    message = result.message
    assert (message.session_id, message.user_id, message.type, message.content, message.metadata) == (
        "s1",
        alice.id,
        "user",
        "hello",
        {"a": 1},
    )
    assert (message.delivered, message.read, message.created_seq, message.change_seq) == (False, False, 1, 1)
    assert message.timestamp == now
    assert message.id.startswith("msg_")
    session = await storage.get_session("s1")
    assert session is not None
    assert (session.owner_id, session.client_name, session.message_count, session.last_message_id, session.head) == (
        alice.id,
        "web",
        1,
        message.id,
        1,
    )
    assert session.last_activity == now
    assert await storage.get_message(message.id) == message
    assert await storage.get_message("msg_nope") is None


async def test_append_to_another_members_session_is_not_found(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    alice, mallory = await make_user("alice"), await make_user("mallory")
    await append_one(storage, alice, new("s1", "mine"), tick)
    (result,) = await storage.append([new("s1", "intrusion")], author=mallory, now=tick())
    assert result.message is None and not result.created
    assert isinstance(result.error, NotFound)
    assert [m.content for m in await everything(storage, "s1")] == ["mine"]
    session = await storage.get_session("s1")
    assert session is not None and (session.message_count, session.head) == (1, 1)


@pytest.mark.parametrize("role", ["operator", "admin"])
async def test_operators_may_append_anywhere(storage: Storage, make_user: MakeUser, tick: Tick, role: str) -> None:
    alice, staff = await make_user("alice"), await make_user("staff", role)
    await append_one(storage, alice, new("s1", "question"), tick)
    answer = await append_one(storage, staff, new("s1", "answer", type="assistant"), tick)
    assert (answer.user_id, answer.type, answer.created_seq) == (staff.id, "assistant", 2)
    session = await storage.get_session("s1")
    assert session is not None
    assert (session.owner_id, session.message_count, session.last_message_id) == (alice.id, 2, answer.id)


async def test_append_to_a_closed_session_is_a_conflict(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice, staff = await make_user("alice"), await make_user("staff", "operator")
    await append_one(storage, alice, new("s1", "before"), tick)
    await storage.update_session("s1", closed=True, client_name=None, now=tick())
    for author, kind in ((alice, "user"), (staff, "assistant")):
        (result,) = await storage.append([new("s1", "after", type=kind)], author=author, now=tick())
        assert result.message is None and isinstance(result.error, Conflict)
        assert result.error.code == "session_closed"
    assert [m.content for m in await everything(storage, "s1")] == ["before"]
    await storage.update_session("s1", closed=False, client_name=None, now=tick())
    await append_one(storage, alice, new("s1", "reopened"), tick)
    assert [m.content for m in await everything(storage, "s1")] == ["before", "reopened"]


async def test_staff_post_into_another_users_session_as_assistant_only(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    alice, staff = await make_user("alice"), await make_user("staff", "operator")
    await append_one(storage, alice, new("s1", "hello"), tick)
    (result,) = await storage.append([new("s1", "as alice", type="user")], author=staff, now=tick())
    assert result.message is None and isinstance(result.error, Forbidden) and result.error.code == "type_not_allowed"
    await append_one(storage, staff, new("s1", "as the assistant", type="assistant"), tick)
    assert [m.content for m in await everything(storage, "s1")] == ["hello", "as the assistant"]


async def test_replay_of_a_client_message_id_returns_the_first(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    alice = await make_user("alice")
    first = await append_one(storage, alice, new("s1", "once", client_message_id="c1"), tick)
    (replay,) = await storage.append([new("s1", "once", client_message_id="c1")], author=alice, now=tick())
    assert not replay.created and replay.error is None
    assert replay.message == first
    assert [m.id for m in await everything(storage, "s1")] == [first.id]
    session = await storage.get_session("s1")
    assert session is not None and (session.message_count, session.head) == (1, 1)


@pytest.mark.parametrize(
    "changed", [{"content": "different text"}, {"type": "assistant"}, {"content": "other", "type": "assistant"}]
)
async def test_a_client_message_id_reused_for_another_message_is_an_idempotency_conflict(
    storage: Storage, make_user: MakeUser, tick: Tick, changed: dict[str, str]
) -> None:
    """Bug: a reused ``client_message_id`` with another content or type was answered with the
    first message, as if the new text had been stored; the contract says 409, nothing stored."""
    staff = await make_user("staff", "operator")
    first = await append_one(storage, staff, new("s1", "once", client_message_id="c1"), tick)
    (reused,) = await storage.append(
        [new("s1", client_message_id="c1", **({"content": "once"} | changed))], author=staff, now=tick()
    )
    assert (reused.created, reused.message) == (False, None)
    assert isinstance(reused.error, Conflict) and reused.error.code == "idempotency_conflict"
    assert reused.error.status_code == 409
    assert await everything(storage, "s1") == [first]
    session = await storage.get_session("s1")
    assert session is not None and (session.message_count, session.head, session.last_message_id) == (1, 1, first.id)
    # The first send's true replay still answers with it.
    (replay,) = await storage.append([new("s1", "once", client_message_id="c1")], author=staff, now=tick())
    assert (replay.created, replay.error, replay.message) == (False, None, first)


async def test_a_retry_of_a_send_edited_since_is_still_a_replay(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    """A reply is stored, then edited as it grows; the retry of its lost acknowledgement carries
    the first content and must be answered with the message, not refused as a conflict."""
    staff = await make_user("staff", "operator")
    first = await append_one(storage, staff, new("s1", "", type="assistant", client_message_id="reply:1"), tick)
    edited = await storage.edit(first.id, content="the full answer", now=tick())
    (retry,) = await storage.append(
        [new("s1", "", type="assistant", client_message_id="reply:1")], author=staff, now=tick()
    )
    assert (retry.created, retry.error, retry.message) == (False, None, edited)
    (other_type,) = await storage.append([new("s1", "", client_message_id="reply:1")], author=staff, now=tick())
    assert isinstance(other_type.error, Conflict) and other_type.error.code == "idempotency_conflict"


async def test_an_idempotency_conflict_in_a_batch_fails_that_item_alone(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    alice = await make_user("alice")
    results = await storage.append(
        [
            new("s1", "one", client_message_id="c1"),
            new("s1", "not one", client_message_id="c1"),
            new("s1", "two", client_message_id="c2"),
            new("s1", "one", client_message_id="c1"),
        ],
        author=alice,
        now=tick(),
    )
    assert [(r.created, getattr(r.error, "code", None)) for r in results] == [
        (True, None),
        (False, "idempotency_conflict"),
        (True, None),
        (False, None),
    ]
    assert results[3].message == results[0].message
    assert [m.content for m in await everything(storage, "s1")] == ["one", "two"]


async def test_racing_copies_with_different_content_store_one_and_refuse_the_rest(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    """Bug: copies of one ``client_message_id`` racing with different content were all answered
    with whichever stored first; now the ones that differ from the stored one are refused."""
    alice = await make_user("alice")
    now = tick()
    contents = [f"copy {i % 3}" for i in range(18)]
    outcomes = await asyncio.gather(
        *(storage.append([new("s1", content, client_message_id="c1")], author=alice, now=now) for content in contents)
    )
    results = [r for (r,) in outcomes]
    (stored,) = await everything(storage, "s1")
    assert sum(r.created for r in results) == 1
    for content, result in zip(contents, results, strict=True):
        if content == stored.content:
            assert (result.error, result.message) == (None, stored)
        else:
            assert result.message is None
            assert isinstance(result.error, Conflict) and result.error.code == "idempotency_conflict"
    session = await storage.get_session("s1")
    assert session is not None and (session.message_count, session.head) == (1, 1)


async def test_replay_into_a_session_closed_since_returns_the_first(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    """A lost acknowledgement is retried after the session closed: the retry still gets its message."""
    alice = await make_user("alice")
    first = await append_one(storage, alice, new("s1", "once", client_message_id="c1"), tick)
    await storage.update_session("s1", closed=True, client_name=None, now=tick())
    replay, fresh = await storage.append(
        [new("s1", "once", client_message_id="c1"), new("s1", "new", client_message_id="c2")], author=alice, now=tick()
    )
    assert (replay.created, replay.error, replay.message) == (False, None, first)
    assert fresh.message is None and isinstance(fresh.error, Conflict)


async def test_client_message_id_is_scoped_to_author_and_session(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    alice, staff = await make_user("alice"), await make_user("staff", "operator")
    a = await append_one(storage, alice, new("s1", "a", client_message_id="same"), tick)
    b = await append_one(storage, staff, new("s1", "b", client_message_id="same", type="assistant"), tick)
    c = await append_one(storage, alice, new("s2", "c", client_message_id="same"), tick)
    d = await append_one(storage, alice, new("s1", "d"), tick)  # no id: never deduplicated
    e = await append_one(storage, alice, new("s1", "d"), tick)
    assert len({a.id, b.id, c.id, d.id, e.id}) == 5


async def test_batch_with_mixed_outcomes_is_stored_in_order(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    await append_one(storage, bob, new("bobs", "bob's"), tick)
    await append_one(storage, alice, new("shut", "x"), tick)
    await storage.update_session("shut", closed=True, client_name=None, now=tick())
    earlier = await append_one(storage, alice, new("s1", "earlier", client_message_id="c0"), tick)

    results = await storage.append(
        [
            new("s1", "one", client_message_id="c1"),
            new("bobs", "not yours"),
            new("s1", "two"),
            new("shut", "closed"),
            new("s1", "earlier", client_message_id="c0"),
            new("s1", "one", client_message_id="c1"),  # a replay of the first item of this batch
            new("new-session", "four"),
        ],
        author=alice,
        now=tick(),
    )
    assert [(r.created, type(r.error).__name__ if r.error else None) for r in results] == [
        (True, None),
        (False, "NotFound"),
        (True, None),
        (False, "Conflict"),
        (False, None),
        (False, None),
        (True, None),
    ]
    assert results[4].message == earlier
    assert results[0].message is not None and results[5].message == results[0].message
    stored = await everything(storage, "s1")
    assert [m.content for m in stored] == ["earlier", "one", "two"]
    assert [m.created_seq for m in stored] == [1, 2, 3]
    assert [m.content for m in await everything(storage, "bobs")] == ["bob's"]
    assert [m.content for m in await everything(storage, "shut")] == ["x"]
    new_session = await storage.get_session("new-session")
    assert new_session is not None and new_session.owner_id == alice.id


async def test_empty_append(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice = await make_user("alice")
    assert await storage.append([], author=alice, now=tick()) == []


async def test_concurrent_appends_of_one_client_message_id_store_one_row(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    alice = await make_user("alice")
    now = tick()
    outcomes = await asyncio.gather(
        *(storage.append([new("s1", "copy", client_message_id="c1")], author=alice, now=now) for _ in range(20))
    )
    results = [r for (r,) in outcomes]
    assert all(r.error is None for r in results)
    assert len({r.message.id if r.message else None for r in results}) == 1
    assert sum(r.created for r in results) == 1
    stored = await everything(storage, "s1")
    assert len(stored) == 1
    session = await storage.get_session("s1")
    assert session is not None and (session.message_count, session.head) == (1, 1)


async def test_concurrent_appends_to_one_new_session(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    """Racing first sends both create the session: one creates it, all messages land in it."""
    alice = await make_user("alice")
    now = tick()
    outcomes = await asyncio.gather(
        *(storage.append([new("fresh", f"m{i}")], author=alice, now=now) for i in range(20))
    )
    assert all(r.created for (r,) in outcomes)
    stored = await everything(storage, "fresh")
    assert sorted(m.created_seq for m in stored) == list(range(1, 21))
    session = await storage.get_session("fresh")
    assert session is not None and (session.message_count, session.head) == (20, 20)


# changes


async def test_changes_of_a_missing_or_empty_session(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice = await make_user("alice")
    for after in (0, 5):
        page = await storage.changes("nope", after=after, limit=10)
        assert (page.messages, page.head, page.has_more) == ([], 0, False)
    await storage.create_session(session_id="s1", owner_id=alice.id, client_name=None, now=tick())
    page = await storage.changes("s1", after=0, limit=10)
    assert (page.messages, page.head, page.has_more, page.upto) == ([], 0, False, 0)


async def test_changes_are_strictly_increasing_and_page_by_upto(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    alice = await make_user("alice")
    sent = [await append_one(storage, alice, new("s1", f"m{i}"), tick) for i in range(7)]
    await append_one(storage, alice, new("other", "elsewhere"), tick)
    all_changes = await everything(storage, "s1")
    assert [m.id for m in all_changes] == [m.id for m in sent]
    seqs = [m.change_seq for m in all_changes]
    assert seqs == sorted(set(seqs)) == list(range(1, 8))

    seen: list[str] = []
    after, pages = 0, []
    while True:
        page = await storage.changes("s1", after=after, limit=3)
        pages.append((len(page.messages), page.has_more, page.upto))
        assert page.head == 7
        assert all(m.change_seq > after for m in page.messages)
        seen += [m.id for m in page.messages]
        after = page.upto
        if not page.has_more:
            break
    assert pages == [(3, True, 3), (3, True, 6), (1, False, 7)]
    assert seen == [m.id for m in sent]
    # At the head: nothing, and the cursor stays.
    page = await storage.changes("s1", after=7, limit=3)
    assert (page.messages, page.has_more, page.upto) == ([], False, 7)
    # An exact fit is not "more".
    page = await storage.changes("s1", after=4, limit=3)
    assert ([m.content for m in page.messages], page.has_more, page.upto) == (["m4", "m5", "m6"], False, 7)


async def test_mark_delivered_bumps_and_moves_to_the_end(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice = await make_user("alice")
    a, b, c = [await append_one(storage, alice, new("s1", x), tick) for x in "abc"]
    head = await storage.mark_delivered("s1", [a.id, "msg_unknown"], now=tick())
    assert head == 4
    assert [(m.id, m.change_seq, m.delivered) for m in await everything(storage, "s1")] == [
        (b.id, 2, False),
        (c.id, 3, False),
        (a.id, 4, True),
    ]
    # Only the change is returned after the old head, and in its new state.
    page = await storage.changes("s1", after=3, limit=10)
    assert [(m.id, m.delivered, m.created_seq) for m in page.messages] == [(a.id, True, 1)]
    # Already delivered: no bump. A message of another session: ignored.
    await append_one(storage, alice, new("s2", "elsewhere"), tick)
    other = (await everything(storage, "s2"))[0]
    assert await storage.mark_delivered("s1", [a.id, other.id], now=tick()) == 4
    assert not (await everything(storage, "s2"))[0].delivered
    assert await storage.mark_delivered("s1", [], now=tick()) == 4


async def test_mark_read_sets_read_and_delivered_up_to_a_message(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    alice, staff = await make_user("alice"), await make_user("staff", "operator")
    u1 = await append_one(storage, alice, new("s1", "u1"), tick)
    a1 = await append_one(storage, staff, new("s1", "a1", type="assistant"), tick)
    u2 = await append_one(storage, alice, new("s1", "u2"), tick)
    a2 = await append_one(storage, staff, new("s1", "a2", type="assistant"), tick)
    u3 = await append_one(storage, alice, new("s1", "u3"), tick)

    # The owner reads the assistant's messages up to a2; user messages stay unread.
    head = await storage.mark_read("s1", message_type="assistant", up_to_seq=a2.created_seq, now=tick())
    assert head == 7
    by_id = {m.id: m for m in await everything(storage, "s1")}
    assert [(by_id[m.id].read, by_id[m.id].delivered) for m in (u1, a1, u2, a2, u3)] == [
        (False, False),
        (True, True),
        (False, False),
        (True, True),
        (False, False),
    ]
    assert [m.id for m in await everything(storage, "s1")][-2:] == [a1.id, a2.id]
    # The operator reads user messages up to u2: u3 stays unread.
    head = await storage.mark_read("s1", message_type="user", up_to_seq=u2.created_seq, now=tick())
    assert head == 9
    page = await storage.changes("s1", after=7, limit=10)
    assert [(m.id, m.read, m.delivered, m.change_seq) for m in page.messages] == [
        (u1.id, True, True, 8),
        (u2.id, True, True, 9),
    ]
    # Again: nothing left to mark, no bump.
    assert await storage.mark_read("s1", message_type="user", up_to_seq=u2.created_seq, now=tick()) == 9
    # Delivered but unread messages are bumped once more when read.
    await storage.mark_delivered("s1", [u3.id], now=tick())
    assert await storage.mark_read("s1", message_type="user", up_to_seq=u3.created_seq, now=tick()) == 11


async def test_edit_bumps_and_moves_to_the_end(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice = await make_user("alice")
    a, b = [await append_one(storage, alice, new("s1", x), tick) for x in "ab"]
    now = tick()
    edited = await storage.edit(a.id, content="a, edited", now=now)
    assert (edited.id, edited.content, edited.edited_at, edited.change_seq, edited.created_seq) == (
        a.id,
        "a, edited",
        now,
        3,
        1,
    )
    assert edited.timestamp == a.timestamp
    assert await storage.get_message(a.id) == edited
    assert [(m.id, m.content) for m in await everything(storage, "s1")] == [(b.id, "b"), (a.id, "a, edited")]
    session = await storage.get_session("s1")
    assert session is not None and (session.head, session.message_count, session.last_message_id) == (3, 2, b.id)
    with pytest.raises(NotFound):
        await storage.edit("msg_unknown", content="x", now=tick())


async def test_each_message_appears_once_in_its_latest_state(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice, staff = await make_user("alice"), await make_user("staff", "operator")
    u = await append_one(storage, alice, new("s1", "u"), tick)
    a = await append_one(storage, staff, new("s1", "a", type="assistant"), tick)
    await storage.edit(u.id, content="u2", now=tick())
    await storage.mark_delivered("s1", [u.id, a.id], now=tick())
    await storage.edit(u.id, content="u3", now=tick())
    await storage.mark_read("s1", message_type="assistant", up_to_seq=a.created_seq, now=tick())
    stored = await everything(storage, "s1")
    assert [(m.id, m.content, m.delivered, m.read) for m in stored] == [
        (u.id, "u3", True, False),
        (a.id, "a", True, True),
    ]
    seqs = [m.change_seq for m in stored]
    session = await storage.get_session("s1")
    assert session is not None
    assert seqs == sorted(seqs) and seqs[-1] == session.head
    # From a cursor in the middle, only what changed after it, still once each.
    page = await storage.changes("s1", after=2, limit=100)
    assert [m.id for m in page.messages] == [u.id, a.id]


# concurrency


async def test_concurrent_writers_and_a_cursor_follower_see_each_change_once(
    storage: Storage, make_user: MakeUser, tick: Tick
) -> None:
    """N writers append, edit and mark while a reader follows ``upto``; nothing is skipped or repeated."""
    alice, staff = await make_user("alice"), await make_user("staff", "operator")
    await storage.create_session(session_id="s1", owner_id=alice.id, client_name=None, now=tick())
    rng = random.Random(1234)
    writers_done = asyncio.Event()

    async def writer(n: int) -> None:
        author = alice if n % 2 else staff
        kind = "user" if n % 2 else "assistant"
        mine: list[Message] = []
        for i in range(25):
            roll = rng.random()
            if roll < 0.5 or not mine:
                mine.append(await append_one(storage, author, new("s1", f"w{n}-{i}", type=kind), tick))
            elif roll < 0.7:
                await storage.edit(rng.choice(mine).id, content=f"w{n}-{i} edited", now=tick())
            elif roll < 0.85:
                await storage.mark_delivered("s1", [m.id for m in rng.sample(mine, min(3, len(mine)))], now=tick())
            else:
                other = "assistant" if kind == "user" else "user"
                await storage.mark_read("s1", message_type=other, up_to_seq=rng.randint(1, 60), now=tick())
            await asyncio.sleep(0)

    seen: dict[str, Message] = {}
    seqs: list[int] = []

    async def reader() -> None:
        after = 0
        while True:
            finished = writers_done.is_set()
            page = await storage.changes("s1", after=after, limit=rng.randint(1, 6))
            ids = [m.id for m in page.messages]
            assert len(ids) == len(set(ids)), "a message twice in one page"
            for message in page.messages:
                assert message.change_seq > after
                assert message.change_seq <= page.upto
                seqs.append(message.change_seq)
                seen[message.id] = message
            assert page.upto >= after
            after = page.upto
            if finished and not page.has_more:
                return
            # Now and then fall behind, so pages fill up and ``has_more`` paging is exercised.
            await asyncio.sleep(0.003 if rng.random() < 0.2 else 0)

    async def writers() -> None:
        await asyncio.gather(*(writer(n) for n in range(6)))
        writers_done.set()

    await asyncio.gather(writers(), reader())
    assert seqs == sorted(set(seqs)), "a change seen twice or out of order"
    final = await everything(storage, "s1")
    assert {m.id: m for m in final} == seen
    session = await storage.get_session("s1")
    assert session is not None
    assert session.message_count == len(final)
    assert seqs[-1] == session.head == max(m.change_seq for m in final)


# the assistant's queue


async def test_pending_user_messages(storage: Storage, make_user: MakeUser, tick: Tick) -> None:
    alice, bob, staff = await make_user("alice"), await make_user("bob"), await make_user("staff", "operator")
    too_old = await append_one(storage, alice, new("s1", "too old"), tick)
    since = tick()
    first = await append_one(storage, alice, new("s1", "first"), tick)
    await append_one(storage, staff, new("s1", "an answer", type="assistant"), tick)
    delivered = await append_one(storage, alice, new("s1", "delivered"), tick)
    await storage.mark_delivered("s1", [delivered.id], now=tick())
    read = await append_one(storage, bob, new("s3", "read"), tick)
    await storage.mark_read("s3", message_type="user", up_to_seq=read.created_seq, now=tick())
    await append_one(storage, bob, new("closed", "in a closed session"), tick)
    await storage.update_session("closed", closed=True, client_name=None, now=tick())
    second = await append_one(storage, bob, new("s2", "second"), tick)
    third = await append_one(storage, alice, new("s1", "third"), tick)

    pending = await storage.pending_user_messages(since=since, limit=10)
    assert [m.id for m in pending] == [first.id, second.id, third.id]
    assert [m.id for m in await storage.pending_user_messages(since=since, limit=2)] == [first.id, second.id]
    assert too_old.id in {m.id for m in await storage.pending_user_messages(since=too_old.timestamp, limit=10)}
    await storage.mark_delivered("s2", [second.id], now=tick())
    assert [m.id for m in await storage.pending_user_messages(since=since, limit=10)] == [first.id, third.id]
