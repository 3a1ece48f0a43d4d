"""Benchmark pollchat on loopback against baselines measured in the same run.

    .venv/bin/python -m bench.run            # about 6 minutes
    .venv/bin/python -m bench.run --quick    # about a minute
    .venv/bin/python -m bench.run --generator python          # without wrk (apt-get install wrk)
    .venv/bin/python -m bench.run --pollchat-src /tmp/old/src  # another checkout's code (A/B)
    .venv/bin/python -m bench.run --sections fanout,chat      # some of the measurements only

Starts ``pollchat serve`` (fresh SQLite file, rate limits off, no assistant) and a bare ASGI app
on the same uvicorn, both on free loopback ports, then measures:

1. empty short polls (200, ``messages: []``) per second, against the bare app's requests per second;
2. idle polls answered 304 (``If-None-Match``) per second, against the same ceiling;
3. the wake latency of N parked long polls after one send (p50, p99), against the round trip
   of one short poll on the same server;
4. fan-out (``bench.fanout``): 1,000 / 5,000 / 10,000 long polls parked on one session, woken by
   one send: wake latency p50/p99 and server RSS per parked poll, each on a fresh server, against
   ``bench.park_app`` (a bare ASGI app parking requests on one ``asyncio.Event``, same uvicorn);
5. a chat (``bench.chatload``): one sender, 50 receivers, 2,000 messages, over pollchat (long
   polls with cursors) and over python-socketio's polling transport (``bench.socketio_app`` on
   the same uvicorn, ``bench.socketio_chat``): deliveries/s and end-to-end latency p50/p99, as
   pollchat / socketio. Needs the ``bench`` extra (``pip install -e '.[bench]'``);
6. durable sends (``bench.durability``): 16 concurrent senders through ``SQLiteStorage.append``
   and through ``pollchat serve``, each against a naive one-commit-per-message ``sqlite3`` loop
   on the same file settings run just before it, and the disk's own group-commit ceiling.

Prints a table and writes ``bench/results/latest.json``. The machine is shared and noisy, so
every figure is reported with its baseline and their ratio; nothing here passes or fails on time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

if __package__ in (None, ""):  # run as ``python bench/run.py``
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import httpx

from bench import durability
from bench.chatload import ChatResult, ChatSpec, run_pollchat
from bench.fanout import FanoutResult, fanout_bare, fanout_pollchat
from bench.loadgen import LoadGenerator, LoadResult, LoadSpec, pick_generator
from bench.longpoll import WakeResult, measure_wake, percentile
from bench.servers import HOST, REPO_ROOT, ServerProcess, asgi_server, bare_server, open_files_limit, pollchat_server

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
MESSAGES = "/api/v1/admin/chat/messages"
EMPTY_SESSION = "bench-empty"
_POLLS_COUNTER = re.compile(r'^pollchat_polls_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE)
SECTIONS = ("throughput", "wake", "fanout", "chat", "durable")
# Sockets a process needs besides its share of the parked polls (files, the load generator's, slack).
_SPARE_FILES = 512


@dataclass(slots=True)
class Options:
    """How long and how hard to measure."""

    quick: bool
    generator: str
    connections: int
    duration: float
    warmup: float
    rounds: int
    pollers: list[int]
    wake_rounds: int
    rtt_count: int
    fanout: list[int]
    fanout_rounds: int
    chat: ChatSpec
    chat_rounds: int
    sections: list[str]
    output: Path
    pollchat_src: Path | None


@dataclass(slots=True)
class Figure:
    """One measured figure, its same-run baseline and their ratio."""

    key: str
    label: str
    unit: str
    value: float
    baseline_label: str
    baseline: float
    ratio_meaning: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """``value / baseline``."""
        return self.value / self.baseline if self.baseline else float("nan")


def parse_options(argv: list[str] | None) -> Options:
    """Command-line options, with ``--quick`` changing the defaults."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter runs, N=200 and fan-out N=1000 only, a shorter chat: about a minute",
    )
    parser.add_argument(
        "--generator", choices=["auto", "wrk", "python"], default="auto", help="load generator (auto: wrk if on PATH)"
    )
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections of the load generator")
    parser.add_argument("--duration", type=float, help="seconds measured per throughput run [5; quick 2]")
    parser.add_argument("--warmup", type=float, help="seconds of load before each measured run [1]")
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds of the throughput runs (median kept) [3; quick 2]"
    )
    parser.add_argument("--pollers", help="comma-separated N of parked long polls [200]")
    parser.add_argument("--wake-rounds", type=int, help="sends (wake-ups) per N [3; quick 2]")
    parser.add_argument(
        "--fanout", help="comma-separated N of the fan-out runs, a fresh server each [1000,5000,10000; quick 1000]"
    )
    parser.add_argument("--fanout-rounds", type=int, help="wake-ups per fan-out N [1]")
    parser.add_argument("--chat-messages", type=int, help="measured messages of the chat [2000; quick 300]")
    parser.add_argument("--chat-receivers", type=int, default=50, help="receivers of the chat [50]")
    parser.add_argument("--chat-warmup", type=int, help="warm-up messages before the measured ones [100; quick 50]")
    parser.add_argument("--chat-rounds", type=int, default=1, help="chat runs per system, alternating [1]")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"what to measure, comma-separated [{','.join(SECTIONS)}]"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results file [{RESULTS}]")
    parser.add_argument(
        "--pollchat-src",
        type=Path,
        help="serve the pollchat package in this directory (e.g. an exported commit's src/), not the installed one",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    pollers = args.pollers or "200"
    fanout = args.fanout or ("1000" if quick else "1000,5000,10000")
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    chat = ChatSpec(
        receivers=args.chat_receivers,
        messages=args.chat_messages if args.chat_messages is not None else (300 if quick else 2000),
        warmup=args.chat_warmup if args.chat_warmup is not None else (50 if quick else 100),
    )
    return Options(
        quick=quick,
        generator=args.generator,
        connections=args.connections,
        duration=args.duration if args.duration is not None else (2.0 if quick else 5.0),
        warmup=args.warmup if args.warmup is not None else 1.0,
        rounds=args.rounds if args.rounds is not None else (2 if quick else 3),
        pollers=[int(n) for n in pollers.split(",") if n.strip()],
        wake_rounds=args.wake_rounds if args.wake_rounds is not None else (2 if quick else 3),
        rtt_count=200 if quick else 400,
        fanout=[int(n) for n in fanout.split(",") if n.strip()],
        fanout_rounds=args.fanout_rounds if args.fanout_rounds is not None else 1,
        chat=chat,
        chat_rounds=args.chat_rounds,
        sections=sections,
        output=args.output,
        pollchat_src=args.pollchat_src,
    )


def describe_source(src: Path | None) -> dict[str, Any]:
    """Which pollchat code was served: a given directory, or the work tree's commit and whether src/ differs."""
    if src is not None:
        return {"pollchat_src": str(src.resolve())}

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "pollchat_src": "installed (work tree)",
        "commit": git("rev-parse", "HEAD"),
        "src_modified": bool(git("status", "--porcelain", "--untracked-files=no", "--", "src")),
    }


def raise_open_files_limit(needed: int) -> None:
    """Lift the soft limit on open files (inherited by the servers) to fit ``needed`` sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def poll_counters(client: httpx.Client) -> dict[str, float]:
    """pollchat's ``pollchat_polls_total`` by outcome."""
    text = client.get("/metrics").text
    return {outcome: float(n) for outcome, n in _POLLS_COUNTER.findall(text)}


@dataclass(frozen=True, slots=True)
class PollTargets:
    """The prepared poll requests: their path and headers, checked once by hand."""

    empty: LoadSpec
    not_modified: LoadSpec
    ceiling: LoadSpec


def prepare_targets(pollchat: ServerProcess, token: str, bare: ServerProcess) -> PollTargets:
    """Create the empty session and check that each target answers as it should."""
    auth = {"Authorization": f"Bearer {token}"}
    path = f"{MESSAGES}?{urlencode({'session_id': EMPTY_SESSION})}"
    with httpx.Client(base_url=f"http://{HOST}:{pollchat.port}", headers=auth, timeout=10) as client:
        client.post("/api/v1/admin/chat/sessions", json={"id": EMPTY_SESSION}).raise_for_status()
        first = client.get(path)
        if first.status_code != 200 or first.json().get("messages") != []:
            raise RuntimeError(f"empty poll answered {first.status_code}: {first.text[:200]}")
        etag = first.headers["etag"]
        again = client.get(path, headers={"If-None-Match": etag})
        if again.status_code != 304:
            raise RuntimeError(f"poll with If-None-Match answered {again.status_code}, not 304")
    ceiling = httpx.get(f"http://{HOST}:{bare.port}/", timeout=10)
    if ceiling.status_code != 200 or ceiling.content != b"ok":
        raise RuntimeError(f"bare app answered {ceiling.status_code} {ceiling.content!r}")
    return PollTargets(
        empty=LoadSpec(HOST, pollchat.port, path, auth),
        not_modified=LoadSpec(HOST, pollchat.port, path, auth | {"If-None-Match": etag}),
        ceiling=LoadSpec(HOST, bare.port, "/"),
    )


def load_all(gen: LoadGenerator, targets: PollTargets, opts: Options) -> dict[str, list[LoadResult]]:
    """Run each target ``rounds`` times, interleaved (and rotated) so drift hits all alike."""
    order = [("ceiling", targets.ceiling), ("empty", targets.empty), ("not_modified", targets.not_modified)]
    results: dict[str, list[LoadResult]] = {name: [] for name, _ in order}
    for r in range(opts.rounds):
        for name, spec in order[r % 3 :] + order[: r % 3]:
            result = gen.run(spec, connections=opts.connections, duration=opts.duration, warmup=opts.warmup)
            if result.errors or result.bad_statuses:
                print(
                    f"  warning: {name}: {result.errors} socket errors, {result.bad_statuses} bad statuses",
                    file=sys.stderr,
                )
            print(f"  round {r + 1}/{opts.rounds} {name:<13} {result.rps:10.0f} req/s", file=sys.stderr)
            results[name].append(result)
    return results


def _rps_details(results: list[LoadResult], ceiling: list[LoadResult] | None = None) -> dict[str, Any]:
    paired = [round(r.rps / c.rps, 4) for r, c in zip(results, ceiling, strict=True) if c.rps] if ceiling else None
    return {
        "paired_ratios": paired,
        "samples_rps": [round(r.rps, 1) for r in results],
        "requests": [r.requests for r in results],
        "socket_errors": sum(r.errors for r in results),
        "bad_statuses": sum(r.bad_statuses for r in results),
        "statuses": [r.statuses for r in results] if any(r.statuses for r in results) else None,
    }


def throughput_figures(results: dict[str, list[LoadResult]], counted: dict[str, float]) -> list[Figure]:
    """Figures 1 and 2: poll throughput as a share of the bare ceiling."""
    ceiling = statistics.median(r.rps for r in results["ceiling"])
    base = _rps_details(results["ceiling"])
    figures = []
    for key, label, outcome in (
        ("empty_poll_rps", "empty short poll (200, messages: [])", "empty"),
        ("not_modified_poll_rps", "idle poll answered 304 (If-None-Match)", "not_modified"),
    ):
        runs = results[outcome]
        details = _rps_details(runs, results["ceiling"]) | {
            "baseline": base,
            "server_counted_polls": counted.get(outcome, 0.0),
        }
        figures.append(
            Figure(
                key=key,
                label=label,
                unit="req/s",
                value=statistics.median(r.rps for r in runs),
                baseline_label="bare ASGI app, same uvicorn",
                baseline=ceiling,
                ratio_meaning="share of the bare ceiling (1.0 = as fast as an app that does nothing)",
                details=details,
            )
        )
    return figures


def wake_figures(wake: WakeResult) -> list[Figure]:
    """Figure 3 for one N: wake latency p50 and p99 (and the waking send), in short-poll round trips."""
    ms = [x * 1000 for x in wake.latencies]
    rtt_ms = [x * 1000 for x in wake.rtts]
    rtt_p50 = percentile(rtt_ms, 50)
    sends_ms = [r.send_rtt * 1000 for r in wake.rounds]
    common = {
        "pollers": wake.pollers,
        "rounds": len(wake.rounds),
        "failures": sum(r.failures for r in wake.rounds),
        "server_side_wake_mean_ms": None if wake.server_wake_mean is None else wake.server_wake_mean * 1000,
        "baseline_rtt_ms": {"p50": rtt_p50, "p99": percentile(rtt_ms, 99), "count": len(rtt_ms)},
    }
    meaning = "multiples of one short-poll round trip (p50)"
    per_round = [
        {"p50_ms": percentile([x * 1000 for x in r.latencies], 50), "max_ms": max(r.latencies) * 1000}
        for r in wake.rounds
    ]
    n = wake.pollers
    return [
        Figure(
            key=f"wake_p50_ms_n{n}",
            label=f"long-poll wake p50, N={n}",
            unit="ms",
            value=percentile(ms, 50),
            baseline_label="short-poll RTT p50",
            baseline=rtt_p50,
            ratio_meaning=meaning,
            details=common | {"per_round": per_round, "min_ms": min(ms), "max_ms": max(ms)},
        ),
        Figure(
            key=f"wake_p99_ms_n{n}",
            label=f"long-poll wake p99, N={n}",
            unit="ms",
            value=percentile(ms, 99),
            baseline_label="short-poll RTT p50",
            baseline=rtt_p50,
            ratio_meaning=meaning,
            details=common,
        ),
        Figure(
            key=f"wake_send_ms_n{n}",
            label=f"the waking send's own RTT, N={n}",
            unit="ms",
            value=statistics.median(sends_ms),
            baseline_label="short-poll RTT p50",
            baseline=rtt_p50,
            ratio_meaning=meaning + "; the send commits with synchronous=FULL",
            details=common | {"samples_ms": sends_ms},
        ),
    ]


_FANOUT_BASELINE = "bare parking app, same uvicorn"
_SOCKETIO = "python-socketio, polling transport"


def _fanout_ms(result: FanoutResult | str, q: float) -> float:
    return percentile([x * 1000 for x in result.latencies], q) if isinstance(result, FanoutResult) else float("nan")


def _fanout_info(result: FanoutResult | str) -> dict[str, Any]:
    return result.summary() if isinstance(result, FanoutResult) else {"error": result}


def fanout_figures(n: int, ours: FanoutResult | str, bare: FanoutResult | str) -> list[Figure]:
    """Figure 4 for one N: wake p50/p99 and RSS per parked poll, against the bare parking app.

    A result that is a string is the error that stopped that measurement; its figures are NaN.
    """
    details = {"pollchat": _fanout_info(ours), "baseline": _fanout_info(bare)}
    meaning = "pollchat / the bare parking app at the same N (1.0 = no cost above uvicorn and asyncio)"
    nan = float("nan")
    return [
        Figure(
            key=f"fanout_wake_p50_ms_n{n}",
            label=f"fan-out wake p50, N={n}",
            unit="ms",
            value=_fanout_ms(ours, 50),
            baseline_label=_FANOUT_BASELINE,
            baseline=_fanout_ms(bare, 50),
            ratio_meaning=meaning,
            details=details,
        ),
        Figure(
            key=f"fanout_wake_p99_ms_n{n}",
            label=f"fan-out wake p99, N={n}",
            unit="ms",
            value=_fanout_ms(ours, 99),
            baseline_label=_FANOUT_BASELINE,
            baseline=_fanout_ms(bare, 99),
            ratio_meaning=meaning,
            details=details,
        ),
        Figure(
            key=f"fanout_rss_per_poll_kib_n{n}",
            label=f"server RSS per parked poll, N={n}",
            unit="KiB",
            value=ours.rss_per_poll_kib if isinstance(ours, FanoutResult) else nan,
            baseline_label=_FANOUT_BASELINE,
            baseline=bare.rss_per_poll_kib if isinstance(bare, FanoutResult) else nan,
            ratio_meaning=meaning + "; (VmRSS parked - VmRSS idle) / N, connections included",
            details=details,
        ),
    ]


def run_fanout(workdir: Path, opts: Options, notes: list[str]) -> list[Figure]:
    """Figure 4 for every N: the bare parking app, then pollchat, each on a fresh server."""
    figures: list[Figure] = []
    limit = open_files_limit()
    for n in opts.fanout:
        if n + _SPARE_FILES > limit:
            note = f"fan-out N={n} skipped: the open-files limit is {limit}, it needs {n + _SPARE_FILES}"
            print(f"  warning: {note}", file=sys.stderr)
            notes.append(note)
            continue
        results: dict[str, FanoutResult | str] = {}
        for name in ("bare", "pollchat"):
            try:
                if name == "bare":
                    result: FanoutResult | str = fanout_bare(workdir, n, rounds=opts.fanout_rounds)
                else:
                    result = fanout_pollchat(workdir, n, rounds=opts.fanout_rounds, pollchat_src=opts.pollchat_src)
            except (RuntimeError, TimeoutError, OSError) as exc:
                result = f"{type(exc).__name__}: {exc}"
                notes.append(f"fan-out N={n} {name}: {result}")
                print(f"  fan-out N={n} {name:<8} failed: {result}", file=sys.stderr)
            else:
                print(
                    f"  fan-out N={n:<6} {name:<8} wake p50 {_fanout_ms(result, 50):9.1f} ms"
                    f"  p99 {_fanout_ms(result, 99):9.1f} ms  RSS/poll {result.rss_per_poll_kib:6.1f} KiB",
                    file=sys.stderr,
                )
            results[name] = result
        figures += fanout_figures(n, results["pollchat"], results["bare"])
    return figures


def _chat_ms(results: list[ChatResult], q: float) -> float:
    return percentile([x * 1000 for r in results for x in r.latencies], q) if results else float("nan")


def _chat_rate(results: list[ChatResult]) -> float:
    return statistics.median(r.deliveries_per_second for r in results) if results else float("nan")


def chat_figures(spec: ChatSpec, ours: list[ChatResult], theirs: list[ChatResult], errors: list[str]) -> list[Figure]:
    """Figure 5: the chat's deliveries/s and end-to-end latency, pollchat against python-socketio."""
    details = {
        "pollchat": [r.summary() for r in ours],
        "baseline": [r.summary() for r in theirs],
        "errors": errors or None,
    }
    meaning = "pollchat / python-socketio (polling transport), same uvicorn, same clients' machine"
    return [
        Figure(
            key="chat_deliveries_per_s",
            label=f"chat deliveries/s (1 sender, {spec.receivers} receivers, {spec.messages} messages)",
            unit="deliveries/s",
            value=_chat_rate(ours),
            baseline_label=_SOCKETIO,
            baseline=_chat_rate(theirs),
            ratio_meaning=meaning + "; higher is better",
            details=details,
        ),
        Figure(
            key="chat_latency_p50_ms",
            label="chat end-to-end latency p50",
            unit="ms",
            value=_chat_ms(ours, 50),
            baseline_label=_SOCKETIO,
            baseline=_chat_ms(theirs, 50),
            ratio_meaning=meaning + "; lower is better",
            details=details,
        ),
        Figure(
            key="chat_latency_p99_ms",
            label="chat end-to-end latency p99",
            unit="ms",
            value=_chat_ms(ours, 99),
            baseline_label=_SOCKETIO,
            baseline=_chat_ms(theirs, 99),
            ratio_meaning=meaning + "; lower is better",
            details=details,
        ),
    ]


def run_chat(workdir: Path, opts: Options, notes: list[str]) -> list[Figure]:
    """Figure 5: the chat on a fresh pollchat and on python-socketio, alternating ``chat_rounds`` times."""
    try:
        from bench.socketio_chat import run_socketio
    except ImportError as exc:
        note = f"chat skipped: {exc} (install the bench extra: .venv/bin/pip install -e '.[bench]')"
        print(f"  warning: {note}", file=sys.stderr)
        notes.append(note)
        return []
    spec = opts.chat
    server, token = pollchat_server(
        workdir, max_parked=spec.receivers + 10, src=opts.pollchat_src, name="pollchat-chat"
    )
    socketio_server = asgi_server(workdir, "socketio", "bench.socketio_app:app", ready_path="/")
    results: dict[str, list[ChatResult]] = {"pollchat": [], "socketio": []}
    errors: list[str] = []
    with server, socketio_server:
        for r in range(opts.chat_rounds):
            order = ["pollchat", "socketio"] if r % 2 == 0 else ["socketio", "pollchat"]
            for name in order:
                try:
                    if name == "pollchat":
                        result = run_pollchat(server, token, f"chat-{r}", spec)
                    else:
                        result = run_socketio(socketio_server, f"chat-{r}", spec)
                except (RuntimeError, TimeoutError, OSError) as exc:
                    error = f"{name} round {r + 1}: {type(exc).__name__}: {exc}"
                    errors.append(error)
                    notes.append(f"chat {error}")
                    print(f"  chat {error}", file=sys.stderr)
                    continue
                results[name].append(result)
                summary = result.summary()
                print(
                    f"  chat {r + 1}/{opts.chat_rounds} {name:<8} {result.deliveries_per_second:7.0f} deliveries/s"
                    f"  p50 {summary['latency_ms']['p50']:7.1f} ms  p99 {summary['latency_ms']['p99']:8.1f} ms"
                    f"  ({result.seconds:.1f} s; {summary['missing']} missing, {summary['duplicates']} duplicates)",
                    file=sys.stderr,
                )
    return chat_figures(spec, results["pollchat"], results["socketio"], errors)


def run_durable(workdir: Path, opts: Options) -> list[Figure]:
    """Figure 6: durable sends/s over the naive loop (``bench.durability``, its report to stderr)."""
    output = workdir / "durability.json"
    pairs, http_pairs = ("3", "2") if opts.quick else ("7", "5")
    argv = ["--pairs", pairs, "--http-pairs", http_pairs, "--dir", str(workdir), "--output", str(output)]
    with contextlib.redirect_stdout(sys.stderr):
        status = durability.main(argv)
    if status != 0:
        raise RuntimeError("bench.durability found acknowledged sends missing from their database")
    report = json.loads(output.read_text())
    meaning = "sends/s over the naive loop's, rounds paired; every send acknowledged after its fsync"
    figures = []
    for summary in report["figures"]:
        if summary["key"] not in ("storage", "http", "ceiling"):
            continue
        figures.append(
            Figure(
                key=f"durable_{summary['key']}_sends_per_s",
                label=f"durable sends: {summary['label']}",
                unit="sends/s",
                value=summary["sends_per_s"],
                baseline_label="naive loop, 1 commit per message",
                baseline=summary["paired_naive_sends_per_s"],
                ratio_meaning=meaning,
                details=summary | {"meta": report["meta"]},
            )
        )
    return figures


def format_table(figures: list[Figure]) -> str:
    """A plain-text table: figure, value, baseline, ratio."""

    rates = ("req/s", "deliveries/s", "sends/s")

    def num(x: float, unit: str) -> str:
        return f"{x:,.0f}" if unit in rates else f"{x:,.2f}"

    def ratio(f: Figure) -> str:
        if f.unit in rates:
            return f"{f.ratio:.3f}"
        return f"{f.ratio:.2f}x" if abs(f.ratio) < 10 else f"{f.ratio:.1f}x"

    rows = [("figure", "pollchat", "baseline", "", "ratio")]
    for f in figures:
        rows.append(
            (
                f"{f.label} ({f.unit})",
                num(f.value, f.unit),
                num(f.baseline, f.unit),
                f.baseline_label,
                ratio(f),
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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and write the JSON results."""
    opts = parse_options(argv)
    fanout = opts.fanout if "fanout" in opts.sections else []
    raise_open_files_limit(max([*opts.pollers, *fanout, opts.connections, opts.chat.receivers]) + _SPARE_FILES)
    gen = pick_generator(opts.generator)
    started = time.monotonic()
    print(
        f"pollchat benchmark: generator={gen.name} connections={opts.connections} quick={opts.quick}"
        f" sections={','.join(opts.sections)}",
        file=sys.stderr,
    )
    figures: list[Figure] = []
    notes: list[str] = []
    access_log: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="pollchat-bench-") as tmp:
        workdir = Path(tmp)
        if {"throughput", "wake"} & set(opts.sections):
            pollchat, token = pollchat_server(workdir, max_parked=max([*opts.pollers, 1]) + 10, src=opts.pollchat_src)
            bare = bare_server(workdir)
            with pollchat, bare:
                if "throughput" in opts.sections:
                    targets = prepare_targets(pollchat, token, bare)
                    with httpx.Client(base_url=f"http://{HOST}:{pollchat.port}", timeout=10) as client:
                        before = poll_counters(client)
                        results = load_all(gen, targets, opts)
                        after = poll_counters(client)
                    counted = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                    figures += throughput_figures(results, counted)
                if "wake" in opts.sections:
                    for n in opts.pollers:
                        print(f"  long polls: N={n}, {opts.wake_rounds} wake-ups", file=sys.stderr)
                        wake = measure_wake(
                            HOST, pollchat.port, token, pollers=n, rounds=opts.wake_rounds, rtt_count=opts.rtt_count
                        )
                        figures += wake_figures(wake)
            access_log = {"pollchat": pollchat.access_log_lines(), "bare": bare.access_log_lines()}
        if "fanout" in opts.sections:
            figures += run_fanout(workdir, opts, notes)
        if "chat" in opts.sections:
            figures += run_chat(workdir, opts, notes)
        if "durable" in opts.sections:
            figures += run_durable(workdir, opts)
    elapsed = time.monotonic() - started
    table = format_table(figures)
    print(table)
    print(
        f"\n(generator {gen.name}, {opts.connections} connections, {opts.duration:g} s x {opts.rounds} rounds;"
        " ratio = pollchat / baseline: throughput over the bare app, wake over the short-poll RTT p50,"
        " fan-out over the bare parking app at the same N, chat over python-socketio,"
        " durable sends over the naive loop;"
        f" took {elapsed:.0f} s)"
    )
    for note in notes:
        print(f"note: {note}")
    report = {
        "meta": {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "generator": gen.name,
            "connections": opts.connections,
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "rounds": opts.rounds,
            "pollers": opts.pollers,
            "wake_rounds": opts.wake_rounds,
            "fanout": opts.fanout,
            "fanout_rounds": opts.fanout_rounds,
            "chat": asdict(opts.chat) | {"rounds": opts.chat_rounds},
            "sections": opts.sections,
            "quick": opts.quick,
            "elapsed_s": round(elapsed, 1),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "open_files_limit": open_files_limit(),
            "access_log_lines": access_log,
            "source": describe_source(opts.pollchat_src),
            "notes": notes,
        },
        "figures": [asdict(f) | {"ratio": f.ratio} for f in figures],
        "table": table,
    }
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {opts.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
