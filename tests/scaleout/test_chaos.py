"""Three instances behind nginx, under load, while one instance is SIGKILLed and restarted and
PostgreSQL itself restarts: no acknowledged message is lost, doubled or reordered for any poller.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.scaleout.cluster import API, Cluster, restart_postgres
from tests.scaleout.conftest import MakeCluster

pytestmark = pytest.mark.integration

SESSIONS = ("chaos-a", "chaos-b", "chaos-c")
SENDERS = 6
FOLLOWERS = 6
DURATION = 20.0  # seconds of sending
KILL_AT, RESTART_AT, PG_RESTART_AT = 4.0, 7.0, 11.0
WAIT = 5  # the followers' long-poll wait
GIVE_UP = 60.0  # a send still unacknowledged this long after it began is a failure
CATCH_UP = 30.0  # after the last ack, followers must have everything within this


@dataclass
class Ack:
    sender: int
    seq: int
    session_id: str
    client_message_id: str
    message_id: str
    acked_at: float
    attempts: int


@dataclass
class Tally:
    """Failures seen by the clients, by kind (HTTP status or exception name)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str) -> None:
        self.counts[kind] += 1

    def client_errors(self) -> dict[str, int]:
        """4xx answers: a correct server never gives these to these clients."""
        return {k: v for k, v in self.counts.items() if k.startswith("4")}


@dataclass
class Follower:
    index: int
    session_id: str
    received: list[tuple[str, float]] = field(default_factory=list)  # (message id, when)
    polls: int = 0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def send_until_acked(
    http: httpx.AsyncClient, body: dict[str, Any], tally: Tally, deadline: float
) -> tuple[dict[str, Any], int]:
    """POST until 200/201, always with the same client_message_id; returns the answer and attempts."""
    attempts = 0
    while True:
        attempts += 1
        try:
            r = await http.post(f"{API}/messages", json=body)
            if r.status_code in (200, 201):
                return r.json(), attempts
            tally.add(str(r.status_code))
        except httpx.HTTPError as exc:
            tally.add(type(exc).__name__)
        if time.monotonic() > deadline:
            raise AssertionError(f"{body['client_message_id']} not acknowledged after {attempts} attempts")
        await asyncio.sleep(0.05)


async def sender(cluster: Cluster, index: int, stop_at: float, acks: list[Ack], tally: Tally) -> None:
    session_id = SESSIONS[index % len(SESSIONS)]
    rng = random.Random(index)
    async with httpx.AsyncClient(base_url=cluster.url, headers=cluster.headers, timeout=10.0) as http:
        seq = 0
        while time.monotonic() < stop_at:
            seq += 1
            cmid = f"sender{index}-{seq}"
            body = {"content": f"{cmid} says hello", "session_id": session_id, "client_message_id": cmid}
            answer, attempts = await send_until_acked(http, body, tally, time.monotonic() + GIVE_UP)
            acks.append(Ack(index, seq, session_id, cmid, answer["message_id"], time.monotonic(), attempts))
            assert answer["message"]["content"] == body["content"]
            await asyncio.sleep(rng.uniform(0.02, 0.08))


async def follow(
    cluster: Cluster, follower: Follower, expected: dict[str, int], deadline: list[float], tally: Tally
) -> None:
    """Long-poll one session through nginx, following cursors, until it has all ``expected`` messages."""
    cursor: str | None = None
    async with httpx.AsyncClient(base_url=cluster.url, headers=cluster.headers, timeout=WAIT + 10.0) as http:
        while True:
            target = expected.get(follower.session_id)
            if target is not None and len(follower.received) >= target:
                return
            if time.monotonic() > deadline[0]:
                return
            params: dict[str, Any] = {"session_id": follower.session_id, "wait": WAIT}
            if cursor is not None:
                params["since"] = cursor
            try:
                r = await http.get(f"{API}/messages", params=params)
            except httpx.HTTPError as exc:
                tally.add(type(exc).__name__)
                await asyncio.sleep(0.05)
                continue
            follower.polls += 1
            if r.status_code != 200:
                tally.add(str(r.status_code))
                await asyncio.sleep(0.05)
                continue
            now = time.monotonic()
            body = r.json()
            follower.received += [(m["id"], now) for m in body["messages"]]
            cursor = body["cursor"]


async def drain(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    """Every message of a session in cursor order, by short polls."""
    out: list[dict[str, Any]] = []
    since: str | None = None
    while True:
        params: dict[str, Any] = {"session_id": session_id, "limit": 500}
        if since is not None:
            params["since"] = since
        r = await http.get(f"{API}/messages", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["messages"]
        since = body["cursor"]
        if not body["has_more"]:
            return out


async def chaos(cluster: Cluster, started: float, log: list[str]) -> None:
    """Kill one instance with SIGKILL, start it again on its port, then restart PostgreSQL."""
    victim = cluster.instances[1]

    async def at(offset: float) -> None:
        await asyncio.sleep(max(0.0, started + offset - time.monotonic()))

    await at(KILL_AT)
    victim.kill()
    log.append(f"{time.monotonic() - started:5.1f}s SIGKILL {victim.name}")
    await at(RESTART_AT)
    await asyncio.to_thread(victim.start)
    log.append(f"{time.monotonic() - started:5.1f}s {victim.name} serving again on port {victim.port}")
    await at(PG_RESTART_AT)
    took = await restart_postgres()
    log.append(f"{time.monotonic() - started:5.1f}s PostgreSQL restarted (took {took:.1f}s)")


async def test_no_loss_no_duplicates_no_reordering_through_kill_and_postgres_restart(
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(pg_restart=True)
    async with httpx.AsyncClient(base_url=cluster.url, headers=cluster.headers, timeout=10.0) as http:
        for session_id in SESSIONS:
            # A first send creates the session, so followers can start before the senders.
            answer, _ = await send_until_acked(
                http,
                {"content": "start", "session_id": session_id, "client_message_id": "start"},
                Tally(),
                time.monotonic() + 10,
            )
            assert answer["message"]["session_id"] == session_id

    acks: list[Ack] = []
    send_tally, poll_tally = Tally(), Tally()
    followers = [Follower(i, SESSIONS[i % len(SESSIONS)]) for i in range(FOLLOWERS)]
    expected: dict[str, int] = {}
    follow_deadline = [time.monotonic() + DURATION + GIVE_UP + CATCH_UP]
    events: list[str] = []
    started = time.monotonic()
    follower_tasks = [asyncio.create_task(follow(cluster, f, expected, follow_deadline, poll_tally)) for f in followers]
    try:
        await asyncio.sleep(0.5)  # followers parked before the first send
        stop_at = time.monotonic() + DURATION
        await asyncio.gather(
            chaos(cluster, started, events),
            *(sender(cluster, i, stop_at, acks, send_tally) for i in range(SENDERS)),
        )
        sent_done = time.monotonic()
        for session_id in SESSIONS:
            expected[session_id] = 1 + sum(1 for a in acks if a.session_id == session_id)  # +1: "start"
        follow_deadline[0] = sent_done + CATCH_UP
        # Followers parked with everything would sit out their wait: stop them once they have it all.
        while not all(len(f.received) >= expected[f.session_id] for f in followers):
            if all(t.done() for t in follower_tasks):
                break
            await asyncio.sleep(0.05)
    finally:
        for task in follower_tasks:
            task.cancel()
        outcomes = await asyncio.gather(*follower_tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    caught_up = time.monotonic() - sent_done

    async with httpx.AsyncClient(base_url=cluster.instances[0].url, headers=cluster.headers, timeout=10.0) as http:
        drained = {s: await drain(http, s) for s in SESSIONS}

    # The acknowledgements: one distinct message per client_message_id.
    assert len({a.message_id for a in acks}) == len(acks)
    assert len({a.client_message_id for a in acks}) == len(acks)
    by_id = {a.message_id: a for a in acks}

    for session_id in SESSIONS:
        order = [m["id"] for m in drained[session_id]]
        # Stored once each, and exactly what was acknowledged (plus the opening message).
        assert len(order) == len(set(order)), f"{session_id}: a message is stored twice"
        acked_here = {a.message_id for a in acks if a.session_id == session_id}
        assert set(order[1:]) == acked_here, f"{session_id}: stored != acknowledged"
        assert drained[session_id][0]["client_message_id"] == "start"
        assert all(m["content"] == f"{m['client_message_id']} says hello" for m in drained[session_id][1:])
        # Each sender's messages in the order it sent them (it waited for each ack).
        for index in range(SENDERS):
            seqs = [by_id[i].seq for i in order[1:] if by_id[i].sender == index]
            assert seqs == sorted(seqs), f"{session_id}: sender{index}'s messages out of order"

    for follower in followers:
        got = [message_id for message_id, _ in follower.received]
        want = [m["id"] for m in drained[follower.session_id]]
        assert len(got) == len(set(got)), f"follower {follower.index} saw a message twice"
        differs = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
        assert got == want, (
            f"follower {follower.index} ({follower.session_id}) saw {len(got)} messages, the session has"
            f" {len(want)}; first difference at {differs}"
        )

    assert not send_tally.client_errors(), send_tally.counts
    assert not poll_tally.client_errors(), poll_tally.counts

    # Wake latency: from a send's acknowledgement to each of its session's followers receiving it.
    latencies: list[float] = []
    early = 0
    for follower in followers:
        for message_id, when in follower.received:
            ack = by_id.get(message_id)
            if ack is None:
                continue  # the opening message
            if when < ack.acked_at:
                early += 1  # the follower had it before the sender had its acknowledgement
            latencies.append(max(0.0, when - ack.acked_at))
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    retried = sum(1 for a in acks if a.attempts > 1)
    print(
        f"\nchaos: {len(acks)} messages acknowledged in {DURATION:g}s by {SENDERS} senders into {len(SESSIONS)}"
        f" sessions, {FOLLOWERS} followers ({sum(f.polls for f in followers)} polls), caught up"
        f" {caught_up:.1f}s after the last ack\n  "
        + "\n  ".join(events)
        + f"\n  sends needing a retry: {retried}; send failures {dict(send_tally.counts)};"
        f" poll failures {dict(poll_tally.counts)}"
        f"\n  wake latency (ack -> follower) p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
        f" max {max(latencies) * 1000:.0f} ms, mean {statistics.fmean(latencies) * 1000:.1f} ms;"
        f" {early} of {len(latencies)} receipts came before the sender's ack"
    )
    assert len(events) == 3, events  # the chaos really happened
    assert len(acks) > 100
    # Generous sanity bound only: a typical message reaches its followers well within a long poll.
    assert p50 < WAIT
