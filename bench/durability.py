"""Durable sends per second on SQLite: group commit against one commit per message.

    .venv/bin/python bench/durability.py                # about 60 s
    .venv/bin/python bench/durability.py --pairs 3 --http-pairs 2   # about 25 s
    .venv/bin/python bench/durability.py --dir /data    # put the files on another disk

Every send counted here was acknowledged only after the ``COMMIT`` holding it returned with
``journal_mode=WAL`` and ``synchronous=FULL``, i.e. after an fsync of the WAL: the same promise
in every row. Measured on one disk in one run:

- naive: plain ``sqlite3``, one ``BEGIN IMMEDIATE ... COMMIT`` per message doing what an append
  does (bump the session head, insert the message, count it), messages spread over
  ``SENDERS`` sessions like the senders' below, one after another: one fsync per message;
- ceiling: the same loop with ``SENDERS`` messages per commit: what any group commit of that
  size reaches on this disk without an event loop, a thread or savepoints;
- storage: ``SENDERS`` tasks each awaiting ``SQLiteStorage.append`` of one message (own session,
  own ``client_message_id``) in a loop, on uvloop like the server; and one task alone, which
  has no company to share a commit with;
- http: ``pollchat serve`` (rate limits off, no assistant) and ``SENDERS`` keep-alive clients
  (``bench.rawhttp``) posting one message per request in a loop; and one client alone.

The disk of a shared machine changes speed by the minute (an fsync takes from 0.3 to 5 ms
here), so each storage and http round runs right after a naive round of the same length,
and every ratio is the sum of sends over the sum of naive sends of those paired rounds (the
median of the per-pair ratios is reported too). Afterwards every database is counted: each
acknowledged message must be in its file. Prints a table and writes
``bench/results/durability.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as ``python bench/durability.py``
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import httpx

from bench import rawhttp
from bench.servers import HOST, ServerProcess, pollchat_server
from pollchat.domain.records import NewMessage, User
from pollchat.storage.schema import MIGRATIONS
from pollchat.storage.sqlite import SQLiteStorage

RESULTS = Path(__file__).resolve().parent / "results" / "durability.json"
MESSAGES = "/api/v1/admin/chat/messages"
SENDERS = 16
CONTENT = "a durable chat message, about as long as the ones people type"
T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed, as ``pollchat serve`` does; plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


@dataclass(slots=True)
class Round:
    """Acknowledged durable sends in one measuring round."""

    sends: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    groups: int = 0

    @property
    def rate(self) -> float:
        return self.sends / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Figure:
    """One measurement over its rounds, each paired with the naive round run just before it."""

    key: str
    label: str
    rounds: list[Round] = field(default_factory=list)
    naive: list[Round] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process, over every round

    def summary(self) -> dict[str, Any]:
        sends, seconds = sum(r.sends for r in self.rounds), sum(r.seconds for r in self.rounds)
        naive_rate = sum(r.sends for r in self.naive) / sum(r.seconds for r in self.naive) if self.naive else None
        rate = sends / seconds if seconds else 0.0
        out: dict[str, Any] = {
            "key": self.key,
            "label": self.label,
            "sends": sends,
            "seconds": round(seconds, 2),
            "sends_per_s": round(rate, 1),
            "rounds_sends_per_s": [round(r.rate, 1) for r in self.rounds],
        }
        if naive_rate:
            out["paired_naive_sends_per_s"] = round(naive_rate, 1)
            out["ratio_to_naive"] = round(rate / naive_rate, 2)
            pairs = [r.rate / n.rate for r, n in zip(self.rounds, self.naive, strict=True) if n.rate]
            out["median_pair_ratio"] = round(statistics.median(pairs), 2) if pairs else None
        latencies = sorted(ms for r in self.rounds for ms in r.latencies_ms)
        if latencies:
            out["latency_ms_p50"] = round(latencies[len(latencies) // 2], 2)
            out["latency_ms_p99"] = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2)
        for who, spent in self.cpu_s.items():
            out[f"{who}_cpu_ms_per_send"] = round(spent / sends * 1000, 3) if sends else None
        groups = sum(r.groups for r in self.rounds)
        if groups:
            out["commits"] = groups
            out["mean_sends_per_commit"] = round(sends / groups, 2)
        return out


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (on ``tmpfs`` an fsync costs nothing)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and resolved.startswith(parts[1]) and len(parts[1]) >= len(best):
            best, kind = parts[1], parts[2]
    return kind


def count_messages(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        conn.close()


# naive: one commit per message


class NaiveLoop:
    """Plain sqlite3 with the server's file settings and schema; one transaction per message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent = 0
        self._conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            self._conn.execute(f"PRAGMA {pragma}")
        for script in MIGRATIONS:
            self._conn.executescript(script)
        self._conn.execute("INSERT INTO users VALUES ('u1', 'naive', 'operator', 'hash', '2026-01-01T00:00:00Z')")
        for i in range(SENDERS):
            self._conn.execute(
                "INSERT INTO sessions (id, owner_id, created_at, last_activity) VALUES (?, 'u1', '', '')", (f"s{i}",)
            )

    def run(self, seconds: float, per_commit: int = 1) -> Round:
        """Send for ``seconds``, ``per_commit`` messages per transaction; blocks the caller's event loop."""
        conn, latencies = self._conn, []
        start = time.perf_counter()
        deadline, first, commits = start + seconds, self.sent, 0
        while (began := time.perf_counter()) < deadline:
            stamp = datetime.now(UTC).isoformat()
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(per_commit):
                self._insert(self.sent, stamp)
                self.sent += 1
            conn.execute("COMMIT")
            commits += 1
            latencies.append((time.perf_counter() - began) * 1000)
        return Round(self.sent - first, time.perf_counter() - start, latencies, commits)

    def _insert(self, n: int, stamp: str) -> None:
        # An id that sorts like the server's random ones would not; random, to write the same pages.
        conn, session_id, message_id = self._conn, f"s{n % SENDERS}", "msg_" + secrets.token_hex(12)
        (seq,) = conn.execute(
            "UPDATE sessions SET head = head + 1 WHERE id = ? RETURNING head", (session_id,)
        ).fetchone()
        conn.execute(
            "INSERT INTO messages (id, session_id, user_id, type, content, created_at, client_message_id,"
            " created_seq, change_seq) VALUES (?, ?, 'u1', 'user', ?, ?, ?, ?, ?)",
            (message_id, session_id, CONTENT, stamp, f"c{n}", seq, seq),
        )
        conn.execute(
            "UPDATE sessions SET message_count = message_count + 1, last_message_id = ?, last_activity = ?"
            " WHERE id = ?",
            (message_id, stamp, session_id),
        )

    def close(self) -> None:
        self._conn.close()


# storage: concurrent SQLiteStorage.append


async def storage_round(storage: SQLiteStorage, author: User, senders: int, seconds: float, tag: str) -> Round:
    writer = storage.writer
    groups = writer.groups
    stop = time.perf_counter() + seconds
    latencies: list[float] = []

    async def sender(index: int) -> None:
        number = 0
        while (began := time.perf_counter()) < stop:
            item = NewMessage(
                session_id=f"{tag}-{index}", type="user", content=CONTENT, client_message_id=f"{tag}-{index}-{number}"
            )
            (result,) = await storage.append([item], author=author, now=datetime.now(UTC))
            if not result.created:
                raise RuntimeError(f"send refused or replayed: {result}")
            latencies.append((time.perf_counter() - began) * 1000)
            number += 1

    start = time.perf_counter()
    await asyncio.gather(*(sender(i) for i in range(senders)))
    return Round(len(latencies), time.perf_counter() - start, latencies, writer.groups - groups)


async def measure_storage(
    path: Path, naive: NaiveLoop, pairs: int, seconds: float
) -> tuple[list[Figure], list[Round], int]:
    storage = SQLiteStorage(str(path))
    await storage.open()
    alone = Figure("storage_1", "SQLiteStorage.append, 1 sender")
    many = Figure("storage", f"SQLiteStorage.append, {SENDERS} senders")
    ceiling = Figure("ceiling", f"plain sqlite3, {SENDERS} messages per commit")
    naive_rounds = []
    try:
        author = await storage.put_user(name="bench", role="operator", token_hash="bench", now=datetime.now(UTC))
        for n in range(pairs):
            naive_rounds.append(naive.run(seconds))
            if n == 0:
                alone.naive.append(naive_rounds[-1])
                alone.rounds.append(await storage_round(storage, author, 1, seconds, f"r{n}"))
                continue
            # What any group commit of this size could reach on this disk: the same writes,
            # one transaction per SENDERS messages, without an event loop, threads or savepoints.
            ceiling.naive.append(naive_rounds[-1])
            ceiling.rounds.append(naive.run(seconds, per_commit=SENDERS))
            many.naive.append(naive_rounds[-1])
            many.rounds.append(await storage_round(storage, author, SENDERS, seconds, f"r{n}"))
    finally:
        await storage.close()
    return [alone, many, ceiling], naive_rounds, sum(r.sends for f in (alone, many) for r in f.rounds)


# http: pollchat serve


async def http_round(url: str, token: str, clients: int, seconds: float, tag: str) -> tuple[Round, int]:
    """``clients`` connections sending for ``seconds`` after a short warm-up; also every ack, warm-up's too.

    The clients are ``bench.rawhttp`` keep-alive connections: httpx spends more CPU per request
    than the server does, and on a small machine it would measure itself.
    """
    host, _, port_text = url.removeprefix("http://").partition(":")
    port = int(port_text)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conns = [await rawhttp.Connection.open(host, port) for _ in range(clients)]
    acknowledged = 0
    latencies: list[float] = []

    async def client(index: int, conn: rawhttp.Connection, stop: float, record: bool) -> None:
        nonlocal acknowledged
        number = 0
        while (began := time.perf_counter()) < stop:
            body = {"content": CONTENT, "session_id": f"{tag}-{index}", "client_message_id": f"{tag}-{record}-{number}"}
            r = await conn.request("POST", MESSAGES, headers, json.dumps(body).encode())
            if r.status != 201:
                raise RuntimeError(f"send answered {r.status}: {r.body[:200]!r}")
            acknowledged += 1
            number += 1
            if record:
                latencies.append((time.perf_counter() - began) * 1000)

    try:
        # Warm-up: fill the server's caches.
        stop = time.perf_counter() + 0.3
        await asyncio.gather(*(client(i, c, stop, False) for i, c in enumerate(conns)))
        start = time.perf_counter()
        await asyncio.gather(*(client(i, c, start + seconds, True) for i, c in enumerate(conns)))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return Round(len(latencies), elapsed, latencies), acknowledged


def measure_http(
    workdir: Path, naive: NaiveLoop, pairs: int, seconds: float
) -> tuple[list[Figure], list[Round], int, int]:
    server, token = pollchat_server(workdir, max_parked=20)
    database = Path(server.argv[server.argv.index("--database") + 1].removeprefix("sqlite:///"))
    url = f"http://{HOST}:{server.port}"
    alone = Figure("http_1", "pollchat serve, 1 HTTP client")
    many = Figure("http", f"pollchat serve, {SENDERS} HTTP clients")
    acknowledged, naive_rounds = 0, []
    with server:
        for n in range(pairs):
            figure, clients = (alone, 1) if n == 0 else (many, SENDERS)
            naive_rounds.append(naive.run(seconds))
            figure.naive.append(naive_rounds[-1])
            server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
            measured, acked = run_async(http_round(url, token, clients, seconds, f"h{n}"))
            # Warm-up sends used CPU too: charge each process its share of the measured sends.
            share = measured.sends / acked if acked else 0.0
            figure.cpu_s["server"] = figure.cpu_s.get("server", 0.0) + (cpu_seconds(server.pid) - server_cpu) * share
            figure.cpu_s["client"] = figure.cpu_s.get("client", 0.0) + (time.process_time() - client_cpu) * share
            figure.rounds.append(measured)
            acknowledged += acked
        check_alive(server)
    return [alone, many], naive_rounds, acknowledged, count_messages(database)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_alive(server: ServerProcess) -> None:
    """The server must still be serving at the end, or its figures mean nothing."""
    with httpx.Client(timeout=5.0) as http:
        http.get(f"http://{HOST}:{server.port}/api/v1/health").raise_for_status()


# report


def print_table(summaries: list[dict[str, Any]]) -> None:
    header = (
        f"{'measurement':<40} {'sends/s':>8} {'naive/s':>8} {'ratio':>7} {'median':>7}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'/commit':>8}"
    )
    print(header)
    print("-" * len(header))

    def cell(s: dict[str, Any], key: str, fmt: str, unit: str = "") -> str:
        return format(s[key], fmt) + unit if s.get(key) is not None else "-"

    for s in summaries:
        print(
            f"{s['label']:<40} {s['sends_per_s']:>8.1f} {cell(s, 'paired_naive_sends_per_s', '.1f'):>8}"
            f" {cell(s, 'ratio_to_naive', '.2f', 'x'):>7} {cell(s, 'median_pair_ratio', '.2f', 'x'):>7}"
            f" {cell(s, 'latency_ms_p50', '.2f'):>7} {cell(s, 'latency_ms_p99', '.2f'):>7}"
            f" {cell(s, 'mean_sends_per_commit', '.1f'):>8}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one round [1.5]")
    parser.add_argument("--pairs", type=int, default=7, help="naive+storage round sets (the first alone) [7]")
    parser.add_argument("--http-pairs", type=int, default=5, help="naive+http round pairs (the first alone) [5]")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go [a temporary directory]")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results file [{RESULTS}]")
    options = parser.parse_args(argv)
    if options.pairs < 2 or options.http_pairs not in (0, *range(2, 1000)):
        parser.error("--pairs must be at least 2, --http-pairs 0 or at least 2")
    began = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="pollchat-durability-", dir=options.dir) as directory:
        workdir = Path(directory)
        filesystem = filesystem_of(workdir)
        print(f"databases in {workdir} ({filesystem}); rounds of {options.seconds:g} s", flush=True)
        naive = NaiveLoop(workdir / "naive.db")
        try:
            figures, naive_all, storage_acks = run_async(
                measure_storage(workdir / "storage.db", naive, options.pairs, options.seconds)
            )
            checks = {"storage": (storage_acks, count_messages(workdir / "storage.db"))}
            if options.http_pairs:
                (workdir / "http").mkdir()
                http_figures, http_naive, http_acks, http_rows = measure_http(
                    workdir / "http", naive, options.http_pairs, options.seconds
                )
                figures += http_figures
                naive_all += http_naive
                checks["http"] = (http_acks, http_rows)
        finally:
            naive.close()
        checks["naive and ceiling"] = (naive.sent, count_messages(workdir / "naive.db"))
        overall = Figure("naive", "naive loop, 1 commit per message", naive_all)

    elapsed = time.perf_counter() - began
    summaries = [overall.summary()] + [f.summary() for f in figures]
    print_table(summaries)
    for s in summaries:
        if "server_cpu_ms_per_send" in s:
            print(
                f"{s['label']}: CPU per send {s['server_cpu_ms_per_send']:.2f} ms in the server,"
                f" {s['client_cpu_ms_per_send']:.2f} ms in the clients ({os.cpu_count()} CPUs)"
            )
    for name, (acked, rows) in checks.items():
        print(f"{name}: {acked} acknowledged, {rows} in the database")
    if filesystem in ("tmpfs", "ramfs"):
        print("warning: the databases were on a RAM filesystem, where fsync costs nothing; use --dir")
    meta = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python bench/durability.py", *(argv if argv is not None else sys.argv[1:])]),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "filesystem": filesystem,
        "settings": {"journal_mode": "wal", "synchronous": "full"},
        "senders": SENDERS,
        "round_s": options.seconds,
        "pairs": options.pairs,
        "http_pairs": options.http_pairs,
        "elapsed_s": round(elapsed, 1),
    }
    by_key = {s["key"]: s for s in summaries}
    if "storage" in by_key and "ceiling" in by_key:
        share = by_key["storage"]["sends_per_s"] / by_key["ceiling"]["sends_per_s"]
        print(f"storage with {SENDERS} senders reaches {share:.0%} of the plain sqlite3 ceiling")
        meta["storage_share_of_ceiling"] = round(share, 2)
    payload = {
        "meta": meta,
        "ratio_to_naive": {
            k: by_key[k]["ratio_to_naive"] for k in ("storage", "http", "ceiling", "storage_1", "http_1") if k in by_key
        },
        "figures": summaries,
        "acknowledged_vs_stored": {k: {"acknowledged": a, "stored": r} for k, (a, r) in checks.items()},
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {options.output} in {elapsed:.0f} s")
    lost = {name: pair for name, pair in checks.items() if pair[1] != pair[0]}
    if lost:
        print(f"ACKNOWLEDGED AND STORED COUNTS DIFFER: {lost}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
