"""``kill -9`` under load: every acknowledged message survives, once, in order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, API
from tests.servers import ServerFactory, auth

pytestmark = pytest.mark.integration

SENDERS = 8
SHARED = "shared"
LOAD_BEFORE_KILL = 1.5
LOAD_AFTER_RESTART = 1.0
# On a slow or busy machine the load runs on until each sender has this many acknowledgements.
MIN_ACKS_PER_PHASE = 3
RETRY_PAUSE = 0.02


@dataclass
class Ack:
    session_id: str
    number: int
    message_id: str
    status: int
    after_crash: bool


@dataclass
class Sender:
    """Sends numbered messages one after another, each retried with its own id until acknowledged."""

    index: int
    token: str
    acks: dict[str, Ack] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    retries: int = 0

    @property
    def own_session(self) -> str:
        return f"own-{self.index}"

    def session_for(self, number: int) -> str:
        # Every third message goes to the session all senders share.
        return SHARED if number % 3 == 2 else self.own_session

    def content(self, number: int) -> str:
        return f"sender {self.index} message {number}"

    def client_message_id(self, number: int) -> str:
        return f"s{self.index}-m{number}"

    def body(self, number: int) -> dict[str, str]:
        session_id = self.session_for(number)
        return {
            "content": self.content(number),
            "session_id": session_id,
            "client_message_id": self.client_message_id(number),
            # In the admin's session the operators answer, as operators may only there.
            "type": "assistant" if session_id == SHARED else "user",
        }

    async def run(self, url: str, stop: asyncio.Event, crashed: asyncio.Event) -> None:
        number = 0
        async with httpx.AsyncClient(base_url=url, headers=auth(self.token), timeout=5.0) as http:
            while not stop.is_set():
                await self.send(http, number, crashed)
                number += 1

    async def send(self, http: httpx.AsyncClient, number: int, crashed: asyncio.Event) -> None:
        body = self.body(number)
        while True:
            try:
                r = await http.post(f"{API}/messages", json=body)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code in (200, 201):
                payload = r.json()
                assert payload["message"]["content"] == body["content"], payload
                cmid = body["client_message_id"]
                self.acks[cmid] = Ack(
                    body["session_id"], number, payload["message_id"], r.status_code, crashed.is_set()
                )
                self.order.append(cmid)
                return
            assert r is None or r.status_code >= 500, f"refused: {r.status_code} {r.text}"
            self.retries += 1
            await asyncio.sleep(RETRY_PAUSE)


async def drain(http: httpx.AsyncClient, token: str, session_id: str) -> list[dict[str, Any]]:
    """Every message of a session, following cursors from the start."""
    out: list[dict[str, Any]] = []
    since: str | None = None
    while True:
        params: dict[str, Any] = {"session_id": session_id, "limit": 500}
        if since is not None:
            params["since"] = since
        r = await http.get(f"{API}/messages", params=params, headers=auth(token))
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["messages"]
        since = body["cursor"]
        if not body["has_more"]:
            return out


async def test_kill_9_under_load_loses_doubles_and_reorders_nothing(servers: ServerFactory) -> None:
    server = await servers.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        senders = []
        for i in range(SENDERS):
            r = await http.post(
                "/api/v1/admin/users", json={"name": f"sender{i}", "role": "operator"}, headers=auth(ADMIN_TOKEN)
            )
            assert r.status_code == 201, r.text
            senders.append(Sender(i, r.json()["token"]))
        # The shared session belongs to the admin; operators may answer in any session.
        r = await http.post(f"{API}/sessions", json={"id": SHARED}, headers=auth(ADMIN_TOKEN))
        assert r.status_code == 201, r.text

    stop, crashed = asyncio.Event(), asyncio.Event()

    async def load(seconds: float, *, after_crash: bool) -> None:
        await asyncio.sleep(seconds)
        while any(sum(a.after_crash == after_crash for a in s.acks.values()) < MIN_ACKS_PER_PHASE for s in senders):
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(s.run(server.url, stop, crashed)) for s in senders]
    try:
        async with asyncio.timeout(40):
            await load(LOAD_BEFORE_KILL, after_crash=False)
            server.kill_group()
            crashed.set()
            assert await server.wait_exit(5) is not None, "the server survived SIGKILL"
            restarted = await servers.start(port=server.port)
            await load(LOAD_AFTER_RESTART, after_crash=True)
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    acked = {cmid: ack for s in senders for cmid, ack in s.acks.items()}
    assert sum(s.retries for s in senders) > 0, "the kill interrupted no send"

    async with httpx.AsyncClient(base_url=restarted.url, timeout=10.0) as http:
        stored: dict[str, list[dict[str, Any]]] = {SHARED: await drain(http, ADMIN_TOKEN, SHARED)}
        for s in senders:
            stored[s.own_session] = await drain(http, s.token, s.own_session)

        # Present exactly once, with the acknowledged id, in the session it was sent to.
        by_id: dict[str, dict[str, Any]] = {}
        for session_id, messages in stored.items():
            for m in messages:
                assert m["id"] not in by_id, f"message {m['id']} delivered twice by the cursors"
                assert m["session_id"] == session_id
                by_id[m["id"]] = m
        counts: dict[tuple[str, str], int] = {}
        for m in by_id.values():
            key = (m["user_id"], m["client_message_id"])
            counts[key] = counts.get(key, 0) + 1
        assert all(n == 1 for n in counts.values()), "a retry stored a second copy"
        for cmid, ack in acked.items():
            assert ack.message_id in by_id, f"acknowledged message {cmid} ({ack.message_id}) is lost"
            message = by_id[ack.message_id]
            assert message["client_message_id"] == cmid
            assert message["session_id"] == ack.session_id
        # Nothing stored that was never sent, and no gap: each sender's numbers are 0..n-1.
        assert len(by_id) == len(acked)
        for s in senders:
            assert sorted(a.number for a in s.acks.values()) == list(range(len(s.acks)))

        # Per-sender order: in every session, a sender's messages come in the order it sent them.
        for session_id, messages in stored.items():
            for s in senders:
                mine = [m["content"] for m in messages if m["client_message_id"] in s.acks]
                expected = [s.content(s.acks[c].number) for c in s.order if s.acks[c].session_id == session_id]
                assert mine == expected, f"sender {s.index} reordered in {session_id}"

        # A replay of any acknowledged send, before or after the crash, answers the first message's id.
        semaphore = asyncio.Semaphore(16)

        async def replay(s: Sender, cmid: str) -> None:
            ack = s.acks[cmid]
            body = s.body(ack.number)
            async with semaphore:
                r = await http.post(f"{API}/messages", json=body, headers=auth(s.token))
            assert r.status_code == 200, r.text
            assert r.json()["message_id"] == ack.message_id, f"replay of {cmid} answered another message"

        await asyncio.gather(*(replay(s, cmid) for s in senders for cmid in s.order))
        for session_id, messages in stored.items():
            token = ADMIN_TOKEN if session_id == SHARED else senders[int(session_id.split("-")[1])].token
            assert len(await drain(http, token, session_id)) == len(messages), "a replay stored something"
