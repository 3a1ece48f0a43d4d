"""Property tests of the cursor invariant: random interleavings of sends, edits, delivered and
read marks and polls with random limits.

A poller that follows the cursors it is given sees each change exactly once, and folding what it
saw reproduces exactly the final state of every message. Each example runs on a fresh database
in a temporary directory, under ``asyncio.run`` (hypothesis and async fixtures do not mix).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pollchat.domain.records import Message, NewMessage, User
from pollchat.server.app import create_app
from pollchat.server.models import ChatMessage
from pollchat.settings import Settings
from pollchat.storage import Storage, create_storage
from tests.conftest import ADMIN_TOKEN, API, FakeClock, running

# Each example writes a fresh database with synchronous=FULL; on tmpfs its fsyncs cost nothing.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # No "explain" phase: each example opens a database, so explaining a failure takes minutes.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)

SESSIONS = ("s1", "s2")
texts = st.text(alphabet="abcxyz é", min_size=1, max_size=6).filter(str.strip)

# Storage level: the pages must be exactly what a model of the change sequence predicts.

appends = st.tuples(
    st.just("append"),
    st.sampled_from(SESSIONS),
    st.sampled_from(["member", "staff"]),
    texts,
    st.none() | st.sampled_from(["k1", "k2", "k3"]),
)
storage_ops = st.lists(
    st.one_of(
        appends,
        appends,  # twice: sessions grow long enough for pages to fill and `has_more` to matter
        st.tuples(st.just("edit"), st.integers(0, 50), texts),
        st.tuples(st.just("deliver"), st.sampled_from(SESSIONS), st.lists(st.integers(0, 50), max_size=4)),
        st.tuples(
            st.just("read"), st.sampled_from(SESSIONS), st.sampled_from(["user", "assistant"]), st.integers(0, 30)
        ),
        st.tuples(st.just("poll"), st.sampled_from(SESSIONS), st.integers(1, 4)),
    ),
    min_size=5,
    max_size=60,
)


class Model:
    """What storage should hold: every message's latest state and each session's head."""

    def __init__(self) -> None:
        self.messages: dict[str, Message] = {}
        self.heads: dict[str, int] = dict.fromkeys(SESSIONS, 0)

    def bump(self, message: Message, **changes: Any) -> None:
        self.heads[message.session_id] += 1
        self.messages[message.id] = dataclasses.replace(message, change_seq=self.heads[message.session_id], **changes)

    def of(self, session_id: str) -> list[Message]:
        return [m for m in self.messages.values() if m.session_id == session_id]

    def page(self, session_id: str, after: int, limit: int) -> list[Message]:
        later = sorted((m for m in self.of(session_id) if m.change_seq > after), key=lambda m: m.change_seq)
        return later[:limit]


async def run_storage_ops(storage: Storage, ops: list[tuple[Any, ...]]) -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)

    def now() -> datetime:
        nonlocal moment
        moment += timedelta(milliseconds=1)
        return moment

    member = await storage.create_user(name="member", role="member", token_hash="m", now=now())
    staff = await storage.create_user(name="staff", role="operator", token_hash="s", now=now())
    authors: dict[str, User] = {"member": member, "staff": staff}
    for session_id in SESSIONS:  # owned by the member; the operator may write anywhere
        await storage.create_session(session_id=session_id, owner_id=member.id, client_name=None, now=now())
    model = Model()
    order: list[str] = []  # message ids in creation order, for picking one by index
    cursors = dict.fromkeys(SESSIONS, 0)
    seen: dict[str, dict[str, Message]] = {s: {} for s in SESSIONS}
    seen_changes: dict[str, list[int]] = {s: [] for s in SESSIONS}

    async def poll(session_id: str, limit: int) -> bool:
        after = cursors[session_id]
        page = await storage.changes(session_id, after=after, limit=limit)
        expected = model.page(session_id, after, limit)
        assert page.messages == expected
        assert page.head == model.heads[session_id]
        assert page.has_more == (len(model.page(session_id, after, limit + 1)) > limit)
        assert page.upto == (expected[-1].change_seq if page.has_more else model.heads[session_id])
        for message in page.messages:
            seen[session_id][message.id] = message
            seen_changes[session_id].append(message.change_seq)
        cursors[session_id] = page.upto
        return page.has_more

    for op in ops:
        kind = op[0]
        if kind == "append":
            _, session_id, who, text, key = op
            author = authors[who]
            kind_of = "user" if who == "member" else "assistant"
            item = NewMessage(session_id=session_id, type=kind_of, content=text, client_message_id=key)
            (result,) = await storage.append([item], author=author, now=now())
            stored = next(
                (
                    m
                    for m in model.messages.values()
                    if key is not None
                    and (m.client_message_id, m.user_id, m.session_id) == (key, author.id, session_id)
                ),
                None,
            )
            if stored is not None and stored.content != text and stored.edited_at is None:
                # The key of another message (its type is the author's, so the same): refused.
                assert result.message is None and getattr(result.error, "code", None) == "idempotency_conflict"
                continue
            assert result.error is None
            assert result.message is not None
            replay = stored is not None
            assert result.created is not replay
            if replay:
                assert result.message == model.messages[result.message.id]
            else:
                model.heads[session_id] += 1
                assert result.message.created_seq == result.message.change_seq == model.heads[session_id]
                model.messages[result.message.id] = result.message
                order.append(result.message.id)
        elif kind == "edit" and order:
            _, index, text = op
            target = model.messages[order[index % len(order)]]
            edited = await storage.edit(target.id, content=text, now=now())
            model.bump(target, content=text, edited_at=edited.edited_at)
            assert edited == model.messages[target.id]
        elif kind == "deliver" and order:
            _, session_id, indexes = op
            ids = [order[i % len(order)] for i in indexes]
            head = await storage.mark_delivered(session_id, ids, now=now())
            for message_id in ids:
                message = model.messages[message_id]
                if message.session_id == session_id and not message.delivered:
                    model.bump(message, delivered=True)
            assert head == model.heads[session_id]
        elif kind == "read":
            _, session_id, message_type, up_to = op
            head = await storage.mark_read(session_id, message_type=message_type, up_to_seq=up_to, now=now())
            for message in sorted(model.of(session_id), key=lambda m: m.created_seq):
                if message.type == message_type and message.created_seq <= up_to and not message.read:
                    model.bump(message, delivered=True, read=True)
            assert head == model.heads[session_id]
        elif kind == "poll":
            _, session_id, limit = op
            await poll(session_id, limit)

    for session_id in SESSIONS:
        while await poll(session_id, 3):
            pass
        changes = seen_changes[session_id]
        assert changes == sorted(set(changes)), "a change seen twice or out of order"
        final = await storage.changes(session_id, after=0, limit=10_000)
        assert {m.id: m for m in final.messages} == seen[session_id] == {m.id: m for m in model.of(session_id)}


@PROPERTY_SETTINGS
@given(ops=storage_ops)
def test_storage_cursor_follower_matches_the_model(ops: list[tuple[Any, ...]]) -> None:
    async def body(directory: str) -> None:
        storage = create_storage(f"sqlite:///{Path(directory) / 'chat.db'}")
        await storage.open()
        try:
            await run_storage_ops(storage, ops)
        finally:
            await storage.close()

    with tempfile.TemporaryDirectory(dir=SCRATCH) as directory:
        asyncio.run(body(directory))


# HTTP level: two pollers (the session's owner and an admin answering as assistant) whose polls
# themselves mark messages delivered.

api_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("send"), st.sampled_from(["alice", "admin"]), texts, st.none() | st.sampled_from(["k1", "k2"])
        ),
        st.tuples(st.just("edit"), st.sampled_from(["alice", "admin"]), st.integers(0, 50), texts),
        st.tuples(st.just("read"), st.sampled_from(["alice", "admin"]), st.integers(0, 50)),
        st.tuples(st.just("poll"), st.sampled_from(["alice", "admin"]), st.integers(1, 4)),
    ),
    max_size=40,
)

Visible = tuple[Any, ...]


def visible(message: dict[str, Any]) -> Visible:
    return tuple(
        message[k]
        for k in ("id", "type", "content", "user_id", "status", "delivered", "read", "edited_at", "timestamp")
    )


async def run_api_ops(directory: str, ops: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    app_settings = Settings(
        database_url=f"sqlite:///{Path(directory) / 'chat.db'}",
        assistant="none",
        admin_token=ADMIN_TOKEN,
        send_rate_limit="off",
        poll_rate_limit="off",
    )
    async with running(create_app(app_settings, clock=clock)) as api:
        tokens = {"alice": await api.user("alice"), "admin": ADMIN_TOKEN}
        sent: dict[str, list[str]] = {"alice": [], "admin": []}
        keyed: dict[tuple[str, str], tuple[str, str]] = {}  # (who, key) -> (message id, text)
        edited: set[str] = set()
        every: list[str] = []
        cursors: dict[str, str | None] = {"alice": None, "admin": None}
        folded: dict[str, dict[str, Visible]] = {"alice": {}, "admin": {}}

        async def send(who: str, text: str, key: str | None) -> None:
            extra: dict[str, Any] = {"type": "user" if who == "alice" else "assistant"}
            if key is not None:
                extra["client_message_id"] = key
            r = await api.send(tokens[who], "s1", text, **extra)
            first = keyed.get((who, key)) if key is not None else None
            if first is not None and first[1] != text and first[0] not in edited:
                assert r.status_code == 409 and r.json()["code"] == "idempotency_conflict", r.text
                return
            assert r.status_code in (200, 201), r.text
            message_id = r.json()["message_id"]
            if r.status_code == 201:
                sent[who].append(message_id)
                every.append(message_id)
                if key is not None:
                    keyed[(who, key)] = (message_id, text)
            else:
                assert key is not None and message_id in sent[who]

        async def poll(who: str, limit: int) -> bool:
            r = await api.poll(tokens[who], "s1", since=cursors[who], limit=limit)
            assert r.status_code == 200, r.text
            body = r.json()
            ids = [m["id"] for m in body["messages"]]
            assert len(ids) == len(set(ids)), "a message twice in one answer"
            assert len(ids) <= limit
            for message in body["messages"]:
                state = visible(message)
                # Every change is visible, so a message that comes again must have changed.
                assert folded[who].get(message["id"]) != state, f"{who} saw the same change twice: {state}"
                folded[who][message["id"]] = state
            cursors[who] = body["cursor"]
            return bool(body["has_more"])

        await send("alice", "hello", None)
        for op in ops:
            clock.advance(0.001)
            kind, who = op[0], op[1]
            if kind == "send":
                await send(who, op[2], op[3])
            elif kind == "edit" and sent[who]:
                target = sent[who][op[2] % len(sent[who])]
                r = await api.http.patch(
                    f"{API}/messages/{target}", json={"content": op[3]}, headers=api.auth(tokens[who])
                )
                assert r.status_code == 200, r.text
                edited.add(target)
            elif kind == "read":
                up_to = every[op[2] % len(every)]
                r = await api.http.post(f"{API}/sessions/s1/read", json={"up_to": up_to}, headers=api.auth(tokens[who]))
                assert r.status_code == 200, r.text
            elif kind == "poll":
                await poll(who, op[2])

        # Drain both until neither sees anything: a poll by one side can mark the other's
        # messages delivered, which the other must then see.
        while True:
            before = {w: dict(f) for w, f in folded.items()}
            for who in ("alice", "admin"):
                while await poll(who, 3):
                    pass
            if before == folded:
                break

        storage = api.app.state.services.storage
        page = await storage.changes("s1", after=0, limit=10_000)
        final = {m.id: visible(ChatMessage.of(m).model_dump()) for m in page.messages}
        assert set(final) == set(every)
        assert folded["alice"] == final
        assert folded["admin"] == final


@PROPERTY_SETTINGS
@given(ops=api_ops)
def test_api_cursor_followers_fold_to_the_final_state(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as directory:
        asyncio.run(run_api_ops(directory, ops))
