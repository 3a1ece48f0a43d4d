"""Long-poll wake latency: N polls parked on one session, then one send wakes them all.

Each poller's latency runs from just before the send request is written to the moment its
own answer has been read in full; the send's own round trip is recorded beside it. The
baseline is the round trip of a plain short poll on the same server, one request at a time.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from bench import rawhttp

MESSAGES = "/api/v1/admin/chat/messages"
_PARKED = re.compile(rb"^pollchat_parked_long_polls ([0-9.e+]+)$", re.MULTILINE)
_WAKE_HISTOGRAM = re.compile(rb"^pollchat_wake_latency_seconds_(sum|count) ([0-9.e+]+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class WakeRound:
    """One send waking ``pollers`` parked polls."""

    pollers: int
    latencies: list[float]
    send_rtt: float
    failures: int


@dataclass(frozen=True, slots=True)
class WakeResult:
    """Every round for one N, and the short-poll round trips measured before them."""

    pollers: int
    rounds: list[WakeRound]
    rtts: list[float]
    server_wake_mean: float | None

    @property
    def latencies(self) -> list[float]:
        """Every poller's latency of every round."""
        return [x for r in self.rounds for x in r.latencies]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, by linear interpolation between ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _poll_path(session_id: str, **params: str | float) -> str:
    return f"{MESSAGES}?{urlencode({'session_id': session_id, **params})}"


async def _wake_histogram(conn: rawhttp.Connection) -> dict[bytes, float]:
    """The server's own wake-latency histogram: sum and count (from wake-up to answer)."""
    answer = await conn.request("GET", "/metrics")
    return {name: float(value) for name, value in _WAKE_HISTOGRAM.findall(answer.body)}


async def _parked(conn: rawhttp.Connection) -> int:
    answer = await conn.request("GET", "/metrics")
    match = _PARKED.search(answer.body)
    return int(float(match.group(1))) if match else -1


async def _open_many(host: str, port: int, n: int, at_once: int = 100) -> list[rawhttp.Connection]:
    gate = asyncio.Semaphore(at_once)

    async def one() -> rawhttp.Connection:
        async with gate:
            return await rawhttp.Connection.open(host, port)

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def short_poll_rtts(
    host: str, port: int, token: str, session_id: str, cursor: str, count: int, warmup: int = 20
) -> list[float]:
    """Round trips of ``count`` sequential empty short polls (after ``warmup`` more) on one keep-alive connection."""
    conn = await rawhttp.Connection.open(host, port)
    headers = {"Authorization": f"Bearer {token}"}
    request = rawhttp.build_request("GET", host, port, _poll_path(session_id, since=cursor), headers)
    rtts: list[float] = []
    try:
        for i in range(warmup + count):
            t0 = time.perf_counter()
            await conn.send_raw(request)
            answer = await conn.read_response()
            elapsed = time.perf_counter() - t0
            if answer.status != 200:
                raise RuntimeError(f"short poll answered {answer.status}: {answer.body[:200]!r}")
            if i >= warmup:
                rtts.append(elapsed)
    finally:
        await conn.close()
    return rtts


async def _wake_round(
    host: str,
    port: int,
    token: str,
    session_id: str,
    cursor: str,
    pollers: list[rawhttp.Connection],
    sender: rawhttp.Connection,
    monitor: rawhttp.Connection,
    label: str,
    park_timeout: float,
    wake_timeout: float,
) -> tuple[WakeRound, str]:
    auth = {"Authorization": f"Bearer {token}"}
    poll = rawhttp.build_request("GET", host, port, _poll_path(session_id, since=cursor, wait=30), auth)
    done_at: list[float] = []
    cursors: set[str] = set()
    failures = 0

    async def park(conn: rawhttp.Connection) -> None:
        nonlocal failures
        await conn.send_raw(poll)
        answer = await conn.read_response()
        done_at.append(time.perf_counter())
        payload = json.loads(answer.body) if answer.status == 200 else {}
        if answer.status != 200 or len(payload.get("messages", [])) != 1:
            failures += 1
        else:
            cursors.add(payload["cursor"])

    tasks = [asyncio.create_task(park(c)) for c in pollers]
    deadline = time.perf_counter() + park_timeout
    while await _parked(monitor) < len(pollers):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {await _parked(monitor)} of {len(pollers)} long polls parked")
        if done_at:
            raise RuntimeError("a long poll answered before any send: is the session empty after the cursor?")
        await asyncio.sleep(0.02)
    # Registered polls still do their first (empty) read before they park; let them settle.
    await asyncio.sleep(0.3)
    if done_at:
        raise RuntimeError("a long poll answered before the send")
    body = json.dumps({"content": f"wake {label}", "session_id": session_id, "client_message_id": label}).encode()
    send = rawhttp.build_request("POST", host, port, MESSAGES, auth | {"Content-Type": "application/json"}, body)
    t0 = time.perf_counter()
    await sender.send_raw(send)
    sent = await sender.read_response()
    send_rtt = time.perf_counter() - t0
    if sent.status != 201:
        raise RuntimeError(f"send answered {sent.status}: {sent.body[:200]!r}")
    await asyncio.wait_for(asyncio.gather(*tasks), wake_timeout)
    if len(cursors) > 1:
        raise RuntimeError(f"pollers were answered with different cursors: {sorted(cursors)}")
    latencies = [t - t0 for t in done_at]
    return WakeRound(len(pollers), latencies, send_rtt, failures), (cursors.pop() if cursors else cursor)


async def _measure(
    host: str, port: int, token: str, session_id: str, n: int, rounds: int, rtt_count: int
) -> WakeResult:
    setup = await rawhttp.Connection.open(host, port)
    auth = {"Authorization": f"Bearer {token}"}
    created = await setup.request(
        "POST",
        "/api/v1/admin/chat/sessions",
        auth | {"Content-Type": "application/json"},
        json.dumps({"id": session_id}).encode(),
    )
    if created.status != 201:
        raise RuntimeError(f"creating session {session_id} answered {created.status}: {created.body[:200]!r}")
    first = await setup.request("GET", _poll_path(session_id), auth)
    cursor = str(json.loads(first.body)["cursor"])
    rtts: list[float] = []
    pollers = await _open_many(host, port, n)
    sender = await rawhttp.Connection.open(host, port)
    done: list[WakeRound] = []
    before = await _wake_histogram(setup)
    try:
        for i in range(rounds):
            # The baseline is sampled right before each wake-up, so both see the same machine.
            rtts += await short_poll_rtts(host, port, token, session_id, cursor, max(1, rtt_count // rounds))
            result, cursor = await _wake_round(
                host,
                port,
                token,
                session_id,
                cursor,
                pollers,
                sender,
                setup,
                f"{session_id}-{i}",
                park_timeout=20.0,
                wake_timeout=25.0,
            )
            done.append(result)
        after = await _wake_histogram(setup)
    finally:
        await asyncio.gather(*(c.close() for c in [*pollers, sender, setup]))
    woken = after.get(b"count", 0.0) - before.get(b"count", 0.0)
    mean = (after.get(b"sum", 0.0) - before.get(b"sum", 0.0)) / woken if woken > 0 else None
    return WakeResult(n, done, rtts, mean)


def measure_wake(host: str, port: int, token: str, *, pollers: int, rounds: int, rtt_count: int) -> WakeResult:
    """Park ``pollers`` long polls on a fresh session ``rounds`` times, waking them with one send each."""
    return rawhttp.run(_measure(host, port, token, f"bench-wake-{pollers}", pollers, rounds, rtt_count))
