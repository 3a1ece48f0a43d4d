"""One chat workload, two systems: a sender and R receivers, M messages, measured end to end.

The workload: R receivers follow one conversation; one sender posts M messages into it one at a
time, each after the previous one was acknowledged (a closed loop, as a person or a bot waiting
for "sent" would). The first W messages are a warm-up: the sender waits until every receiver has
them before the measured M start. For every receiver and every measured message, the latency
runs from just before the sender wrote that message to the moment the receiver had parsed it
(all clients live in this process, so they share one clock). Deliveries per second is R x M over
the time from the first measured send to the last measured delivery. Every receiver must see
every message exactly once and in order; anything else is counted and reported.

- pollchat (here): user ``admin`` owns the session; the sender ``POST``s each message and waits for
  its 201 (stored with ``synchronous=FULL``); each receiver long-polls ``since=<cursor>&wait=30``
  on its own keep-alive connection (``bench.rawhttp``) and passes each answer's cursor back.
  All are the same user: the owner's fetches mark nothing delivered, so the session changes only
  by the sends (receivers as operators would also mark each message delivered: a second change
  and wake-up per message).
- python-socketio: ``bench.socketio_chat`` drives the same workload over its polling transport.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from bench import rawhttp
from bench.longpoll import percentile
from bench.servers import HOST, ServerProcess

MESSAGES = "/api/v1/admin/chat/messages"
PADDING = "x" * 48  # message content: a 6-digit index, a space and this, 55 characters in all


def content(i: int) -> str:
    """The text of message ``i``."""
    return f"{i:06d} {PADDING}"


def index_of(text: str) -> int:
    """The index a message's text carries."""
    return int(text[:6])


@dataclass(frozen=True, slots=True)
class ChatSpec:
    """How big the workload is."""

    receivers: int
    messages: int
    warmup: int

    @property
    def total(self) -> int:
        """Messages sent, warm-up included."""
        return self.warmup + self.messages

    @property
    def timeout(self) -> float:
        """A bound on the whole run: it fails rather than hang."""
        return 60.0 + self.total * 0.1


@dataclass(slots=True)
class Receiver:
    """What one receiver got: each message's index and when it was parsed."""

    received: list[tuple[int, float]] = field(default_factory=list)
    polls: int = 0

    def count(self) -> int:
        """Messages received so far."""
        return len(self.received)


@dataclass(slots=True)
class ChatResult:
    """One run of the workload against one system."""

    system: str
    spec: ChatSpec
    latencies: list[float]
    seconds: float
    send_rtts: list[float]
    duplicates: int
    out_of_order: int
    missing: int
    client_cpu_seconds: float
    server_cpu_seconds: float
    receiver_requests: int | None

    @property
    def deliveries(self) -> int:
        """Measured deliveries: receivers x measured messages."""
        return self.spec.receivers * self.spec.messages

    @property
    def deliveries_per_second(self) -> float:
        """Measured deliveries over the time from the first measured send to the last delivery."""
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The details kept in the JSON results."""
        ms = [x * 1000 for x in self.latencies]
        sends = [x * 1000 for x in self.send_rtts]
        return {
            "system": self.system,
            "receivers": self.spec.receivers,
            "messages": self.spec.messages,
            "warmup_messages": self.spec.warmup,
            "seconds": round(self.seconds, 3),
            "deliveries_per_s": round(self.deliveries_per_second, 1),
            "sends_per_s": round(self.spec.messages / self.seconds, 1) if self.seconds > 0 else None,
            "latency_ms": {"p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99)}
            | {"max": max(ms, default=float("nan"))},
            "deliveries_over_1s": sum(1 for x in self.latencies if x > 1.0),
            "send_ack_ms": {"p50": percentile(sends, 50), "p99": percentile(sends, 99)},
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "missing": self.missing,
            "client_cpu_s": round(self.client_cpu_seconds, 2),
            "server_cpu_s": round(self.server_cpu_seconds, 2),
            "receiver_requests": self.receiver_requests,
            "messages_per_receiver_request": (
                round(self.spec.receivers * self.spec.total / self.receiver_requests, 2)
                if self.receiver_requests
                else None
            ),
        }


def process_cpu_seconds() -> float:
    """CPU time (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tally(
    system: str,
    spec: ChatSpec,
    receivers: list[Receiver],
    sent_at: list[float],
    send_rtts: list[float],
    cpu: tuple[float, float],
    receiver_requests: int | None,
) -> ChatResult:
    """Latencies, throughput and order checks from what the receivers recorded."""
    latencies: list[float] = []
    last = sent_at[spec.warmup]
    duplicates = out_of_order = missing = 0
    for r in receivers:
        seen: set[int] = set()
        previous = -1
        for i, t in r.received:
            if i in seen:
                duplicates += 1
                continue
            seen.add(i)
            if i < previous:
                out_of_order += 1
            previous = max(previous, i)
            if i >= spec.warmup:
                latencies.append(t - sent_at[i])
                last = max(last, t)
        missing += spec.total - len(seen)
    return ChatResult(
        system,
        spec,
        latencies,
        last - sent_at[spec.warmup],
        send_rtts[spec.warmup :],
        duplicates,
        out_of_order,
        missing,
        cpu[0],
        cpu[1],
        receiver_requests,
    )


async def drive(
    spec: ChatSpec,
    receivers: list[Receiver],
    send: Callable[[int], Awaitable[None]],
    sent_at: list[float],
    send_rtts: list[float],
) -> None:
    """Send the warm-up, wait until every receiver has it, then send the measured messages."""

    async def all_have(n: int) -> None:
        while any(r.count() < n for r in receivers):
            await asyncio.sleep(0.002)

    for i in range(spec.total):
        if i == spec.warmup:
            await all_have(spec.warmup)
        sent_at[i] = time.perf_counter()
        await send(i)
        send_rtts[i] = time.perf_counter() - sent_at[i]
    await all_have(spec.total)


async def _pollchat(port: int, token: str, session_id: str, spec: ChatSpec, server: ServerProcess) -> ChatResult:
    auth = {"Authorization": f"Bearer {token}"}
    json_headers = auth | {"Content-Type": "application/json"}
    setup = await rawhttp.Connection.open(HOST, port)
    body = json.dumps({"id": session_id}).encode()
    created = await setup.request("POST", "/api/v1/admin/chat/sessions", json_headers, body)
    if created.status != 201:
        raise RuntimeError(f"creating session {session_id} answered {created.status}: {created.body[:200]!r}")
    first = await setup.request("GET", f"{MESSAGES}?{urlencode({'session_id': session_id})}", auth)
    start_cursor = str(json.loads(first.body)["cursor"])
    receivers = [Receiver() for _ in range(spec.receivers)]
    conns = [await rawhttp.Connection.open(HOST, port) for _ in receivers]
    sender = await rawhttp.Connection.open(HOST, port)
    sent_at = [0.0] * spec.total
    send_rtts = [0.0] * spec.total

    async def receive(r: Receiver, conn: rawhttp.Connection) -> None:
        cursor = start_cursor
        while r.count() < spec.total:
            path = f"{MESSAGES}?{urlencode({'session_id': session_id, 'since': cursor, 'wait': 30})}"
            await conn.send_raw(rawhttp.build_request("GET", HOST, port, path, auth))
            answer = await conn.read_response()
            now = time.perf_counter()
            r.polls += 1
            if answer.status != 200:
                raise RuntimeError(f"poll answered {answer.status}: {answer.body[:200]!r}")
            payload = json.loads(answer.body)
            r.received.extend((index_of(m["content"]), now) for m in payload["messages"])
            cursor = payload["cursor"]

    async def send(i: int) -> None:
        item = {"content": content(i), "session_id": session_id, "client_message_id": f"chat-{i}"}
        await sender.send_raw(
            rawhttp.build_request("POST", HOST, port, MESSAGES, json_headers, json.dumps(item).encode())
        )
        answer = await sender.read_response()
        if answer.status != 201:
            raise RuntimeError(f"send {i} answered {answer.status}: {answer.body[:200]!r}")

    tasks = [asyncio.create_task(receive(r, c)) for r, c in zip(receivers, conns, strict=True)]
    try:
        deadline = time.perf_counter() + 20
        while (parked := await _parked(setup)) < spec.receivers:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {parked} of {spec.receivers} receivers' long polls parked")
            await asyncio.sleep(0.02)
        cpu_client, cpu_server = process_cpu_seconds(), server.cpu_seconds()
        async with asyncio.timeout(spec.timeout):
            await drive(spec, receivers, send, sent_at, send_rtts)
            await asyncio.gather(*tasks)
        cpu = (process_cpu_seconds() - cpu_client, server.cpu_seconds() - cpu_server)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in [*conns, sender, setup]))
    polls = sum(r.polls for r in receivers)
    return tally("pollchat", spec, receivers, sent_at, send_rtts, cpu, polls)


async def _parked(conn: rawhttp.Connection) -> int:
    answer = await conn.request("GET", "/metrics")
    for line in answer.body.splitlines():
        if line.startswith(b"pollchat_parked_long_polls "):
            return int(float(line.split()[1]))
    return -1


def run_pollchat(server: ServerProcess, token: str, session_id: str, spec: ChatSpec) -> ChatResult:
    """The workload on pollchat: one sender posting, ``spec.receivers`` long-polling with cursors."""
    return rawhttp.run(_pollchat(server.port, token, session_id, spec, server))
