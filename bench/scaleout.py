"""Scale-out benchmark: three pollchat instances on one PostgreSQL database behind nginx, against
ONE instance on the same PostgreSQL without nginx, both measured in the same run.

    .venv/bin/python bench/scaleout.py            # about a minute; bounded at two
    .venv/bin/python bench/scaleout.py --quick    # about half a minute

Starts (on free loopback ports, each on a fresh database of the local PostgreSQL) one
``pollchat serve`` alone, and three behind nginx running deploy/nginx.conf, then measures:

1. sends per second held by 16 concurrent senders (each posts, waits for the 201, posts the
   next), through nginx into the pool, against the same senders on the single instance;
2. cross-instance wake latency p50/p99: long polls parked on instances B and C, a send
   committed through instance A (so every wake-up travels by PostgreSQL NOTIFY), from the send
   request being written to each poller's answer being read; against the same with pollers and
   sender on the single instance.

Prints a table and writes ``bench/results/scaleout.json``. The machine is shared and noisy, so
each figure stands next to its same-run baseline, with their ratio; nothing passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

if __package__ in (None, ""):  # run as ``python bench/scaleout.py``
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from tests.scaleout.cluster import API, HOST, Cluster, missing_services

from bench.longpoll import percentile
from bench.rawhttp import Connection
from bench.run import Figure

RESULTS = Path(__file__).resolve().parent / "results" / "scaleout.json"
MESSAGES = f"{API}/messages"
TIME_LIMIT = 115.0  # seconds, everything included
_PARKED = re.compile(r"^pollchat_parked_long_polls ([0-9.e+]+)$", re.MULTILINE)


@dataclass(slots=True)
class Options:
    quick: bool
    senders: int
    duration: float
    warmup: float
    rounds: int
    pollers: int
    wake_sends: int
    output: Path


@dataclass(slots=True)
class SendRun:
    """One timed run of concurrent senders."""

    target: str
    sends_per_s: float
    sends: int
    latencies: list[float]
    failures: int


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="bench/scaleout.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs: about half a minute")
    parser.add_argument("--senders", type=int, default=16, help="concurrent senders [16]")
    parser.add_argument("--duration", type=float, help="seconds measured per send run [5; quick 2]")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of sending before each measured run [1]")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of each measurement [2; quick 1]")
    parser.add_argument("--pollers", type=int, default=8, help="long polls parked per wake-up [8]")
    parser.add_argument("--wake-sends", type=int, help="wake-ups measured per target and round [25; quick 10]")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results file [{RESULTS}]")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    return Options(
        quick=quick,
        senders=args.senders,
        duration=args.duration if args.duration is not None else (2.0 if quick else 5.0),
        warmup=args.warmup,
        rounds=args.rounds if args.rounds is not None else (1 if quick else 2),
        pollers=args.pollers,
        wake_sends=args.wake_sends if args.wake_sends is not None else (10 if quick else 25),
        output=args.output,
    )


def _json_body(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


async def measure_sends(target: str, port: int, token: str, opts: Options) -> SendRun:
    """``opts.senders`` senders, each on its own keep-alive connection and session, for warmup + duration."""
    run = uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    begin = time.monotonic() + opts.warmup
    end = begin + opts.duration
    latencies: list[float] = []
    failures = 0

    async def sender(index: int) -> None:
        nonlocal failures
        conn = await Connection.open(HOST, port)
        try:
            n = 0
            while (now := time.monotonic()) < end:
                n += 1
                body = _json_body(
                    {"content": f"bench {n}", "session_id": f"send-{run}-{index}", "client_message_id": f"{index}-{n}"}
                )
                answer = await conn.request("POST", MESSAGES, headers, body)
                done = time.monotonic()
                if answer.status != 201:
                    failures += 1
                    await asyncio.sleep(0.05)
                elif now >= begin and done <= end:
                    latencies.append(done - now)
        finally:
            await conn.close()

    await asyncio.gather(*(sender(i) for i in range(opts.senders)))
    return SendRun(target, len(latencies) / opts.duration, len(latencies), latencies, failures)


async def parked_total(conns: list[Connection]) -> float:
    total = 0.0
    for conn in conns:
        answer = await conn.request("GET", "/metrics")
        match = _PARKED.search(answer.body.decode())
        total += float(match.group(1)) if match else 0.0
    return total


async def measure_wake(sender_port: int, poller_ports: list[int], token: str, pollers: int, sends: int) -> list[float]:
    """``pollers`` long polls spread over ``poller_ports``; ``sends`` sends through ``sender_port``, one at a
    time once every poller is parked again. Returns every poller's latency of every send."""
    auth = {"Authorization": f"Bearer {token}"}
    post_headers = auth | {"Content-Type": "application/json"}
    session_id = f"wake-{uuid.uuid4().hex[:8]}"
    sender = await Connection.open(HOST, sender_port)
    metrics = [await Connection.open(HOST, port) for port in sorted(set(poller_ports))]
    received: dict[str, list[float]] = {}
    arrived = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        answer = await sender.request(
            "POST", MESSAGES, post_headers, _json_body({"content": "open", "session_id": session_id})
        )
        if answer.status != 201:
            raise RuntimeError(f"opening send answered {answer.status}: {answer.body[:200]!r}")
        answer = await sender.request("GET", f"{MESSAGES}?{urlencode({'session_id': session_id})}", auth)
        start_cursor = json.loads(answer.body)["cursor"]

        async def poller(port: int) -> None:
            conn = await Connection.open(HOST, port)
            cursor = start_cursor
            try:
                while True:
                    query = urlencode({"session_id": session_id, "since": cursor, "wait": 30})
                    answer = await conn.request("GET", f"{MESSAGES}?{query}", auth)
                    now = time.monotonic()
                    if answer.status != 200:
                        raise RuntimeError(f"long poll answered {answer.status}: {answer.body[:200]!r}")
                    body = json.loads(answer.body)
                    for message in body["messages"]:
                        received.setdefault(message["id"], []).append(now)
                    arrived.set()
                    cursor = body["cursor"]
            finally:
                await conn.close()

        tasks = [asyncio.create_task(poller(poller_ports[i % len(poller_ports)])) for i in range(pollers)]
        latencies: list[float] = []
        for n in range(sends):
            deadline = time.monotonic() + 15
            while await parked_total(metrics) < pollers:
                if time.monotonic() > deadline or any(t.done() for t in tasks):
                    raise RuntimeError("the long polls did not all park")
                await asyncio.sleep(0.005)
            sent = time.monotonic()
            answer = await sender.request(
                "POST", MESSAGES, post_headers, _json_body({"content": f"wake {n}", "session_id": session_id})
            )
            if answer.status != 201:
                raise RuntimeError(f"waking send answered {answer.status}: {answer.body[:200]!r}")
            message_id = json.loads(answer.body)["message_id"]
            while len(received.get(message_id, [])) < pollers:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), 15)
            latencies += [t - sent for t in received[message_id]]
        return latencies
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in [sender, *metrics]:
            await conn.close()


def figures_from(sends: dict[str, list[SendRun]], wakes: dict[str, list[float]], opts: Options) -> list[Figure]:
    def rates(runs: list[SendRun]) -> float:
        return statistics.median(r.sends_per_s for r in runs)

    def send_details(runs: list[SendRun]) -> dict[str, Any]:
        lat = [x * 1000 for r in runs for x in r.latencies]
        return {
            "samples_sends_per_s": [round(r.sends_per_s, 1) for r in runs],
            "sends": [r.sends for r in runs],
            "failures": sum(r.failures for r in runs),
            "send_latency_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99)},
        }

    pool_ms = [x * 1000 for x in wakes["pool"]]
    single_ms = [x * 1000 for x in wakes["single"]]
    wake_details = {
        "pollers": opts.pollers,
        "samples": {"pool": len(pool_ms), "single": len(single_ms)},
        "pool_ms": {"min": min(pool_ms), "max": max(pool_ms)},
        "single_ms": {"min": min(single_ms), "max": max(single_ms)},
    }
    return [
        Figure(
            key="sends_per_s",
            label=f"sends held by {opts.senders} concurrent senders",
            unit="sends/s",
            value=rates(sends["pool"]),
            baseline=rates(sends["single"]),
            baseline_label="one instance, no nginx",
            ratio_meaning="pool / one instance (above 1: the pool holds more sends)",
            details={"pool": send_details(sends["pool"]), "single": send_details(sends["single"])},
        ),
        Figure(
            key="wake_p50_ms",
            label=f"wake p50, {opts.pollers} polls parked on B+C, send via A",
            unit="ms",
            value=percentile(pool_ms, 50),
            baseline=percentile(single_ms, 50),
            baseline_label="same on one instance",
            ratio_meaning="cross-instance wake / same-instance wake",
            details=wake_details,
        ),
        Figure(
            key="wake_p99_ms",
            label=f"wake p99, {opts.pollers} polls parked on B+C, send via A",
            unit="ms",
            value=percentile(pool_ms, 99),
            baseline=percentile(single_ms, 99),
            baseline_label="same on one instance",
            ratio_meaning="cross-instance wake / same-instance wake",
            details=wake_details,
        ),
    ]


def format_table(figures: list[Figure]) -> str:
    rows = [("figure", "3 + nginx", "baseline", "", "ratio")]
    for f in figures:
        rows.append(
            (
                f"{f.label} ({f.unit})",
                f"{f.value:,.1f}",
                f"{f.baseline:,.1f}",
                f.baseline_label,
                f"{f.ratio:.2f}x",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2])]
        cells += [row[3].ljust(widths[3]), row[4].rjust(widths[4])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


async def run(opts: Options, workdir: Path) -> list[Figure]:
    (workdir / "single").mkdir()
    (workdir / "pool").mkdir()
    single = Cluster(workdir / "single", instances=1, nginx=False)
    pool = Cluster(workdir / "pool", instances=3)
    started = time.monotonic()
    results = await asyncio.gather(single.start(), pool.start(), return_exceptions=True)
    try:
        for outcome in results:
            if isinstance(outcome, BaseException):
                raise outcome
        print(f"started 1 + 3 instances and nginx in {time.monotonic() - started:.1f} s", file=sys.stderr)
        assert pool.nginx is not None
        targets = {
            "single": (single.instances[0].port, single.token),
            "pool": (pool.nginx.port, pool.token),
        }
        sends: dict[str, list[SendRun]] = {"single": [], "pool": []}
        wakes: dict[str, list[float]] = {"single": [], "pool": []}
        order = ["single", "pool"]
        for r in range(opts.rounds):
            for name in order[r % 2 :] + order[: r % 2]:
                port, token = targets[name]
                result = await measure_sends(name, port, token, opts)
                sends[name].append(result)
                print(
                    f"  round {r + 1}/{opts.rounds} sends  {name:<6} {result.sends_per_s:8.1f} sends/s"
                    f" ({result.failures} failures)",
                    file=sys.stderr,
                )
        a, b, c = pool.instances
        wake_setups = {
            "single": (single.instances[0].port, [single.instances[0].port], single.token),
            "pool": (a.port, [b.port, c.port], pool.token),
        }
        for r in range(opts.rounds):
            for name in order[r % 2 :] + order[: r % 2]:
                sender_port, poller_ports, token = wake_setups[name]
                latencies = await measure_wake(sender_port, poller_ports, token, opts.pollers, opts.wake_sends)
                wakes[name] += latencies
                ms = [x * 1000 for x in latencies]
                print(
                    f"  round {r + 1}/{opts.rounds} wake   {name:<6} p50 {percentile(ms, 50):6.1f} ms"
                    f"  p99 {percentile(ms, 99):6.1f} ms",
                    file=sys.stderr,
                )
        return figures_from(sends, wakes, opts)
    finally:
        await asyncio.gather(single.close(), pool.close(), return_exceptions=True)


async def main_async(opts: Options) -> int:
    reason = await missing_services()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pollchat-bench-scaleout-") as tmp:
        async with asyncio.timeout(TIME_LIMIT):
            figures = await run(opts, Path(tmp))
    print()
    print(format_table(figures))
    report = {
        "benchmark": "scaleout",
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "setup": "3 x pollchat serve on one PostgreSQL database behind nginx (deploy/nginx.conf); baseline:"
        " 1 x pollchat serve on its own database of the same PostgreSQL, no nginx; all on loopback",
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "figures": [asdict(f) | {"ratio": f.ratio} for f in figures],
    }
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {opts.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    return asyncio.run(main_async(opts))


if __name__ == "__main__":
    sys.exit(main())
