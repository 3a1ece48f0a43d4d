"""Closed-loop load generators: ``wrk`` when it is installed, else an asyncio keep-alive client.

Both keep ``connections`` keep-alive connections busy with one request path for ``duration``
seconds after ``warmup`` seconds, and report answered requests per second. Whichever is
picked loads both the ceiling and pollchat in the same run, so their ratio is like for like.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from bench import rawhttp


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to load: one GET path with fixed headers."""

    host: str
    port: int
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load run measured."""

    generator: str
    requests: int
    seconds: float
    statuses: dict[int, int]
    errors: int
    bad_statuses: int

    @property
    def rps(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0


class LoadGenerator:
    """The interface of both generators."""

    name = "?"

    def run(self, spec: LoadSpec, *, connections: int, duration: float, warmup: float) -> LoadResult:
        """Load ``spec`` and measure."""
        raise NotImplementedError


_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


class WrkGenerator(LoadGenerator):
    """``wrk`` with one thread (the other core of a 2-core machine runs the server)."""

    name = "wrk"

    def __init__(self, executable: str, threads: int = 1) -> None:
        self.executable = executable
        self.threads = threads

    @classmethod
    def find(cls) -> WrkGenerator | None:
        """A generator for the ``wrk`` on PATH, if there is one."""
        path = shutil.which("wrk")
        return cls(path) if path else None

    def _wrk(self, spec: LoadSpec, connections: int, duration: float) -> str:
        argv = [
            self.executable,
            f"-t{self.threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
        ]
        for name, value in spec.headers.items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(f"http://{spec.host}:{spec.port}{spec.path}")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout

    def run(self, spec: LoadSpec, *, connections: int, duration: float, warmup: float) -> LoadResult:
        if warmup > 0:
            self._wrk(spec, connections, warmup)
        out = self._wrk(spec, connections, duration)
        total = _WRK_TOTAL.search(out)
        if total is None:
            raise RuntimeError(f"could not read wrk's output:\n{out}")
        requests = int(total.group(1))
        seconds = float(total.group(2)) * _UNIT_SECONDS[total.group(3)]
        non_2xx = _WRK_NON_2XX.search(out)
        bad = int(non_2xx.group(1)) if non_2xx else 0
        socket_errors = _WRK_SOCKET.search(out)
        errors = sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
        # wrk counts statuses only as "2xx/3xx or not"; run.py checks the exact status beforehand.
        return LoadResult(self.name, requests, seconds, {}, errors, bad)


class PythonGenerator(LoadGenerator):
    """An asyncio keep-alive client (uvloop when installed): ``connections`` workers, one request each in flight.

    It shares no core with the server only on a machine with a core to spare, and one Python
    process may saturate before a fast server does: then the ceiling it measures is its own.
    """

    name = "python-asyncio"

    def run(self, spec: LoadSpec, *, connections: int, duration: float, warmup: float) -> LoadResult:
        return rawhttp.run(self._run(spec, connections, duration, warmup))

    async def _run(self, spec: LoadSpec, connections: int, duration: float, warmup: float) -> LoadResult:
        request = rawhttp.build_request("GET", spec.host, spec.port, spec.path, spec.headers)
        conns = await asyncio.gather(*(rawhttp.Connection.open(spec.host, spec.port) for _ in range(connections)))
        start = time.perf_counter() + warmup
        end = start + duration
        statuses: Counter[int] = Counter()
        errors = 0

        async def worker(conn: rawhttp.Connection) -> None:
            nonlocal errors
            while True:
                sent = time.perf_counter()
                if sent >= end:
                    return
                try:
                    await conn.send_raw(request)
                    answer = await conn.read_response()
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    return
                if sent >= start and time.perf_counter() <= end:
                    statuses[answer.status] += 1

        try:
            await asyncio.gather(*(worker(c) for c in conns))
        finally:
            await asyncio.gather(*(c.close() for c in conns))
        bad = sum(n for status, n in statuses.items() if not 200 <= status < 400)
        return LoadResult(self.name, sum(statuses.values()), duration, dict(statuses), errors, bad)


def pick_generator(choice: str) -> LoadGenerator:
    """``wrk``, ``python`` or ``auto`` (wrk when on PATH)."""
    if choice in ("auto", "wrk"):
        wrk = WrkGenerator.find()
        if wrk is not None:
            return wrk
        if choice == "wrk":
            raise SystemExit("--generator wrk: wrk is not on PATH (apt-get install wrk)")
    return PythonGenerator()
