"""Long-poll fan-out: N polls parked on one session, one send wakes them all; latency and memory.

For each N a fresh server is started, so its memory holds nothing from a larger N before it.
The server's resident set (``VmRSS``) is read idle (after a warm-up, before the N connections
are opened), with the N keep-alive connections open, and with the N polls parked and the server
quiet again; RSS per parked poll is (parked - idle) / N, so it counts each poll's connection too.

Each poller's wake latency runs from just before the waking request is written to the moment its
own answer has been read in full, as in ``bench.longpoll``. The same client measures the
baseline: ``bench.park_app`` on the same uvicorn, which parks each request on one
``asyncio.Event`` and does nothing else.

The pollers are raw asyncio streams (``bench.rawhttp``), N sockets in this process and N in the
server: the caller raises ``RLIMIT_NOFILE`` first (``bench.run`` does, and the servers are
spawned with their hard limit).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

from bench import rawhttp
from bench.longpoll import percentile
from bench.servers import HOST, ServerProcess, asgi_server, pollchat_server

MESSAGES = "/api/v1/admin/chat/messages"
_PARKED = re.compile(rb"^pollchat_parked_long_polls ([0-9.e+]+)$", re.MULTILINE)
_WAKE_HISTOGRAM = re.compile(rb"^pollchat_wake_latency_seconds_(sum|count) ([0-9.e+]+)$", re.MULTILINE)
# Long enough for the slowest N to park, settle and wake; pollchat refuses more than its max_wait (60).
_POLL_WAIT = 60


@dataclass(slots=True)
class FanoutRound:
    """One waking request answering N parked polls."""

    latencies: list[float]
    send_rtt: float
    failures: int
    park_seconds: float
    rss_parked_kib: int


@dataclass(slots=True)
class FanoutResult:
    """Every round for one server and one N, with the server's memory before and while parked."""

    target: str
    pollers: int
    rss_idle_kib: int
    rss_connected_kib: int
    rounds: list[FanoutRound]
    server_cpu_seconds: float
    server_wake_mean: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def latencies(self) -> list[float]:
        """Every poller's latency of every round."""
        return [x for r in self.rounds for x in r.latencies]

    @property
    def rss_parked_kib(self) -> int:
        """RSS with the N polls parked, in the first round (nothing of an earlier round is reused yet)."""
        return self.rounds[0].rss_parked_kib

    @property
    def rss_per_poll_kib(self) -> float:
        """(RSS parked - RSS idle) / N."""
        return (self.rss_parked_kib - self.rss_idle_kib) / self.pollers

    def summary(self) -> dict[str, object]:
        """The details kept in the JSON results."""
        ms = [x * 1000 for x in self.latencies]
        return {
            "target": self.target,
            "pollers": self.pollers,
            "rounds": len(self.rounds),
            "failures": sum(r.failures for r in self.rounds),
            "wake_ms": {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "min": min(ms), "max": max(ms)},
            "per_round": [
                {
                    "p50_ms": percentile([x * 1000 for x in r.latencies], 50),
                    "p99_ms": percentile([x * 1000 for x in r.latencies], 99),
                    "max_ms": max(r.latencies) * 1000,
                    "waking_request_ms": r.send_rtt * 1000,
                    "park_all_s": round(r.park_seconds, 3),
                    "rss_parked_kib": r.rss_parked_kib,
                }
                for r in self.rounds
            ],
            "rss_kib": {"idle": self.rss_idle_kib, "connected": self.rss_connected_kib, "parked": self.rss_parked_kib},
            "rss_per_connection_kib": (self.rss_connected_kib - self.rss_idle_kib) / self.pollers,
            "rss_per_poll_kib": self.rss_per_poll_kib,
            "server_cpu_s": round(self.server_cpu_seconds, 3),
            "server_side_wake_mean_ms": None if self.server_wake_mean is None else self.server_wake_mean * 1000,
        } | self.extra


class Target(Protocol):
    """What differs between pollchat and the bare parking app."""

    name: str

    async def prepare(self, conn: rawhttp.Connection) -> None:
        """Create what the polls need (a session), on the monitoring connection."""

    def poll_request(self) -> bytes:
        """The bytes of one long poll that parks."""

    def wake_request(self, label: str) -> tuple[bytes, int]:
        """The bytes of the waking request and the status it should be answered with."""

    def accept(self, answer: rawhttp.Response) -> bool:
        """Whether a woken poll's answer is right (and remember its cursor)."""

    def next_round(self) -> None:
        """Move on after a round (pollchat: to the cursor every poller was given)."""

    async def parked(self, conn: rawhttp.Connection) -> int:
        """How many polls the server says are parked now."""


class PollchatTarget:
    """Long polls ``wait=60`` on one session of user ``admin``, woken by one send."""

    name = "pollchat"

    def __init__(self, port: int, token: str, session_id: str) -> None:
        self.port = port
        self.session_id = session_id
        self.auth = {"Authorization": f"Bearer {token}"}
        self.cursor = ""
        self.cursors: set[str] = set()
        self.wake_before: dict[bytes, float] = {}

    def _path(self, **params: str | float) -> str:
        return f"{MESSAGES}?{urlencode({'session_id': self.session_id, **params})}"

    async def prepare(self, conn: rawhttp.Connection) -> None:
        body = json.dumps({"id": self.session_id}).encode()
        created = await conn.request(
            "POST", "/api/v1/admin/chat/sessions", self.auth | {"Content-Type": "application/json"}, body
        )
        if created.status != 201:
            raise RuntimeError(f"creating session {self.session_id} answered {created.status}: {created.body[:200]!r}")
        # A few short polls warm the server up before its idle memory is read.
        for _ in range(20):
            first = await conn.request("GET", self._path(), self.auth)
            if first.status != 200:
                raise RuntimeError(f"short poll answered {first.status}: {first.body[:200]!r}")
        self.cursor = str(json.loads(first.body)["cursor"])
        self.wake_before = await self.wake_histogram(conn)

    def poll_request(self) -> bytes:
        return rawhttp.build_request("GET", HOST, self.port, self._path(since=self.cursor, wait=_POLL_WAIT), self.auth)

    def wake_request(self, label: str) -> tuple[bytes, int]:
        body = json.dumps({"content": f"wake {label}", "session_id": self.session_id, "client_message_id": label})
        headers = self.auth | {"Content-Type": "application/json"}
        return rawhttp.build_request("POST", HOST, self.port, MESSAGES, headers, body.encode()), 201

    def accept(self, answer: rawhttp.Response) -> bool:
        if answer.status != 200:
            return False
        payload = json.loads(answer.body)
        if len(payload.get("messages", [])) != 1:
            return False
        self.cursors.add(payload["cursor"])
        return True

    def next_round(self) -> None:
        if len(self.cursors) > 1:
            raise RuntimeError(f"pollers were answered with different cursors: {sorted(self.cursors)[:3]}...")
        if self.cursors:
            self.cursor = self.cursors.pop()

    async def parked(self, conn: rawhttp.Connection) -> int:
        answer = await conn.request("GET", "/metrics")
        match = _PARKED.search(answer.body)
        return int(float(match.group(1))) if match else -1

    async def wake_histogram(self, conn: rawhttp.Connection) -> dict[bytes, float]:
        """The server's own wake-latency histogram: sum and count (from wake-up to answer)."""
        answer = await conn.request("GET", "/metrics")
        return {name: float(value) for name, value in _WAKE_HISTOGRAM.findall(answer.body)}


class ParkTarget:
    """``bench.park_app``: ``GET /park`` woken by ``POST /wake``."""

    name = "bare-park"

    def __init__(self, port: int) -> None:
        self.port = port

    async def prepare(self, conn: rawhttp.Connection) -> None:
        for _ in range(20):
            answer = await conn.request("GET", "/parked")
            if answer.status != 200:
                raise RuntimeError(f"/parked answered {answer.status}")

    def poll_request(self) -> bytes:
        return rawhttp.build_request("GET", HOST, self.port, "/park")

    def wake_request(self, label: str) -> tuple[bytes, int]:
        return rawhttp.build_request("POST", HOST, self.port, "/wake", {"Content-Type": "application/json"}), 201

    def accept(self, answer: rawhttp.Response) -> bool:
        return answer.status == 200 and answer.body.startswith(b'{"messages"')

    def next_round(self) -> None:
        pass

    async def parked(self, conn: rawhttp.Connection) -> int:
        return int((await conn.request("GET", "/parked")).body)


async def _open_many(port: int, n: int, at_once: int = 200) -> list[rawhttp.Connection]:
    gate = asyncio.Semaphore(at_once)

    async def one() -> rawhttp.Connection:
        async with gate:
            return await rawhttp.Connection.open(HOST, port)

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _settle(server: ServerProcess, deadline: float, window: float = 0.25, quiet_cpu: float = 0.02) -> None:
    """Wait until the server spends at most ``quiet_cpu`` seconds of CPU in ``window`` (all polls parked)."""
    before = server.cpu_seconds()
    while time.perf_counter() < deadline:
        await asyncio.sleep(window)
        now = server.cpu_seconds()
        if now - before <= quiet_cpu:
            return
        before = now
    raise RuntimeError(f"{server.name} did not go quiet with the polls parked")


async def _round(
    target: Target,
    server: ServerProcess,
    pollers: list[rawhttp.Connection],
    sender: rawhttp.Connection,
    monitor: rawhttp.Connection,
    label: str,
) -> FanoutRound:
    n = len(pollers)
    poll = target.poll_request()
    done_at: list[float] = []
    failures = 0

    async def park(conn: rawhttp.Connection) -> None:
        nonlocal failures
        await conn.send_raw(poll)
        answer = await conn.read_response()
        done_at.append(time.perf_counter())
        if not target.accept(answer):
            failures += 1

    timeout = 30.0 + n * 0.005
    started = time.perf_counter()
    tasks = [asyncio.create_task(park(c)) for c in pollers]
    deadline = started + timeout
    try:
        while (parked := await target.parked(monitor)) < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{target.name}: only {parked} of {n} long polls parked")
            if done_at:
                raise RuntimeError(f"{target.name}: a long poll answered before the wake-up")
            await asyncio.sleep(0.05)
        # A registered poll may still be reading storage before it parks: wait for a quiet server.
        await _settle(server, deadline)
        park_seconds = time.perf_counter() - started
        if done_at:
            raise RuntimeError(f"{target.name}: a long poll answered before the wake-up")
        rss_parked = server.rss_kib()
        request, status = target.wake_request(label)
        t0 = time.perf_counter()
        await sender.send_raw(request)
        sent = await sender.read_response()
        send_rtt = time.perf_counter() - t0
        if sent.status != status:
            raise RuntimeError(f"{target.name}: waking request answered {sent.status}: {sent.body[:200]!r}")
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    target.next_round()
    return FanoutRound([t - t0 for t in done_at], send_rtt, failures, park_seconds, rss_parked)


async def _measure(target: Target, server: ServerProcess, n: int, rounds: int) -> FanoutResult:
    monitor = await rawhttp.Connection.open(HOST, server.port)
    sender = await rawhttp.Connection.open(HOST, server.port)
    pollers: list[rawhttp.Connection] = []
    try:
        await target.prepare(monitor)
        await asyncio.sleep(0.2)
        rss_idle = server.rss_kib()
        cpu_before = server.cpu_seconds()
        pollers = await _open_many(server.port, n)
        await asyncio.sleep(0.2)
        rss_connected = server.rss_kib()
        done = [await _round(target, server, pollers, sender, monitor, f"fanout-{n}-{i}") for i in range(rounds)]
        cpu = server.cpu_seconds() - cpu_before
        result = FanoutResult(target.name, n, rss_idle, rss_connected, done, cpu)
        if isinstance(target, PollchatTarget):
            after = await target.wake_histogram(monitor)
            woken = after.get(b"count", 0.0) - target.wake_before.get(b"count", 0.0)
            if woken > 0:
                result.server_wake_mean = (after.get(b"sum", 0.0) - target.wake_before.get(b"sum", 0.0)) / woken
    finally:
        await asyncio.gather(*(c.close() for c in [*pollers, sender, monitor]))
    return result


def fanout_bare(workdir: Path, n: int, *, rounds: int) -> FanoutResult:
    """N requests parked on ``bench.park_app`` (a fresh server), woken ``rounds`` times."""
    with asgi_server(workdir, f"park-{n}", "bench.park_app:app", ready_path="/parked") as park:
        return rawhttp.run(_measure(ParkTarget(park.port), park, n, rounds))


def fanout_pollchat(workdir: Path, n: int, *, rounds: int, pollchat_src: Path | None = None) -> FanoutResult:
    """N long polls parked on one session of a fresh ``pollchat serve``, woken by one send ``rounds`` times."""
    server, token = pollchat_server(workdir, max_parked=n + 10, src=pollchat_src, name=f"pollchat-fanout-{n}")
    with server:
        return rawhttp.run(_measure(PollchatTarget(server.port, token, f"fanout-{n}"), server, n, rounds))
