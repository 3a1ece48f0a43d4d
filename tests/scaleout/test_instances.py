"""Several instances on one PostgreSQL database, addressed directly: idempotent sends racing
through different instances, cross-instance wake-ups (also after the LISTEN connection is
killed), and ``--workers 2`` with SIGTERM.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.scaleout.cluster import API, Cluster
from tests.scaleout.conftest import MakeCluster
from tests.servers import ServerProcess

pytestmark = pytest.mark.integration

_PARKED = re.compile(r"^pollchat_parked_long_polls (\S+)$", re.MULTILINE)


@asynccontextmanager
async def clients(
    cluster: Cluster, instances: Sequence[ServerProcess], timeout: float = 30.0
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One HTTP client per instance, straight to it (no nginx)."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(httpx.AsyncClient(base_url=i.url, headers=cluster.headers, timeout=timeout))
            for i in instances
        ]


async def send(http: httpx.AsyncClient, session_id: str, content: str, **extra: Any) -> dict[str, Any]:
    r = await http.post(f"{API}/messages", json={"content": content, "session_id": session_id, **extra})
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


async def head_cursor(http: httpx.AsyncClient, session_id: str) -> str:
    """The cursor after everything in the session now (short polls)."""
    since: str | None = None
    while True:
        params: dict[str, str | int] = {"session_id": session_id, "limit": 500}
        if since is not None:
            params["since"] = since
        r = await http.get(f"{API}/messages", params=params)
        assert r.status_code == 200, r.text
        since = r.json()["cursor"]
        if not r.json()["has_more"]:
            assert since is not None
            return since


async def parked(http: httpx.AsyncClient) -> float:
    """How many long polls the instance behind ``http`` holds now."""
    r = await http.get("/metrics")
    match = _PARKED.search(r.text)
    return float(match.group(1)) if match else 0.0


async def until(condition: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_idempotent_sends_racing_through_all_instances_store_one_row(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(nginx=False)
    rounds, copies = 30, 2  # each round: the same send twice through each of three instances at once
    async with clients(cluster, cluster.instances) as https:
        for n in range(rounds):
            # Odd rounds race in a new session (its creation races too), even ones in a shared one.
            session_id = f"race-{n}" if n % 2 else "race-shared"
            body = {"content": f"copy of send {n}", "session_id": session_id, "client_message_id": f"key-{n}"}
            answers = await asyncio.gather(
                *(http.post(f"{API}/messages", json=body) for http in https for _ in range(copies))
            )
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [200] * (len(answers) - 1) + [201], [a.text for a in answers]
            assert len({a.json()["message_id"] for a in answers}) == 1
            assert len({a.json()["message"]["id"] for a in answers}) == 1
            assert {a.json()["message"]["content"] for a in answers} == {body["content"]}

        r = await https[1].get(f"{API}/messages", params={"session_id": "race-shared", "limit": 500})
        shared = r.json()["messages"]
        assert [m["client_message_id"] for m in shared] == [f"key-{n}" for n in range(0, rounds, 2)]

    rows = await cluster.db.fetch("SELECT client_message_id, count(*) AS n FROM messages GROUP BY client_message_id")
    assert len(rows) == rounds
    assert all(r["n"] == 1 for r in rows), [dict(r) for r in rows if r["n"] != 1]


async def park_then_send(
    poller: httpx.AsyncClient,
    sender: httpx.AsyncClient,
    session_id: str,
    since: str,
    content: str,
    *,
    before_send: Any = None,
) -> tuple[list[dict[str, Any]], str, float]:
    """Park a long poll on ``poller``'s instance, commit a message through ``sender``'s; the poll's answer."""
    poll = asyncio.create_task(
        poller.get(f"{API}/messages", params={"session_id": session_id, "since": since, "wait": 20})
    )
    try:
        await until(lambda: _parked_or_done(poller, poll), what="the long poll to park")
        assert not poll.done(), "the long poll answered before anything was sent"
        if before_send is not None:
            await before_send()
        sent = time.monotonic()
        await send(sender, session_id, content)
        r = await poll
    finally:
        if not poll.done():
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
    assert r.status_code == 200, r.text
    return r.json()["messages"], r.json()["cursor"], time.monotonic() - sent


async def _parked_or_done(poller: httpx.AsyncClient, poll: asyncio.Task[httpx.Response]) -> bool:
    return poll.done() or await parked(poller) >= 1


async def test_parked_poll_on_b_wakes_for_commit_on_a_also_after_the_listener_is_killed(
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(nginx=False)
    a, b = cluster.instances[0], cluster.instances[1]
    session_id = "wake"
    async with clients(cluster, [a, b]) as (via_a, via_b):
        await send(via_a, session_id, "opening")
        cursor = await head_cursor(via_b, session_id)

        # 1. Plain cross-instance wake-up: NOTIFY from A's commit reaches B's listener.
        got, cursor, first = await park_then_send(via_b, via_a, session_id, cursor, "one")
        assert [m["content"] for m in got] == ["one"]

        # 2. Every instance's LISTEN connection is terminated just before the commit: B may miss
        #    the notification, but its listener reconnects and wakes every parked poll to re-read.
        listeners = await cluster.db.listener_pids()
        assert len(listeners) == len(cluster.instances), listeners
        killed: list[int] = []

        async def kill_listeners() -> None:
            killed.extend(await cluster.db.kill_listeners())

        got, cursor, second = await park_then_send(via_b, via_a, session_id, cursor, "two", before_send=kill_listeners)
        assert [m["content"] for m in got] == ["two"]
        assert sorted(killed) == sorted(listeners)

        # 3. The listeners are back (new connections), and wake-ups flow as before.
        async def reconnected() -> bool:
            pids = await cluster.db.listener_pids()
            return len(pids) == len(cluster.instances) and not set(pids) & set(killed)

        await until(reconnected, what="the listeners to reconnect")
        got, cursor, third = await park_then_send(via_b, via_a, session_id, cursor, "three")
        assert [m["content"] for m in got] == ["three"]
        assert await parked(via_b) == 0
    print(
        f"\nA -> B wake: {first * 1000:.1f} ms; with the listeners killed just before the commit:"
        f" {second * 1000:.1f} ms; after they reconnected: {third * 1000:.1f} ms"
    )


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


async def test_two_workers_on_postgres_serve_and_sigterm_answers_parked_polls(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(instances=1, nginx=False, args=["--workers", "2"])
    server = cluster.instances[0]
    workers = [p for p in _children(server.pid) if "spawn_main" in _cmdline(p)]
    assert len(workers) == 2, [(p, _cmdline(p)) for p in _children(server.pid)]

    session_id = "workers"
    async with clients(cluster, [server] * 6) as https:  # separate connections: spread over the workers
        await send(https[0], session_id, "opening")
        cursor = await head_cursor(https[0], session_id)

        # Polls parked in both workers wake for a commit in either (through NOTIFY).
        polls = [
            asyncio.create_task(
                http.get(f"{API}/messages", params={"session_id": session_id, "since": cursor, "wait": 20})
            )
            for http in https[1:]
        ]
        await asyncio.sleep(1.0)
        assert not any(p.done() for p in polls)
        await send(https[0], session_id, "to every worker")
        answers = await asyncio.gather(*polls)
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        assert all([m["content"] for m in r.json()["messages"]] == ["to every worker"] for r in answers)
        cursor = answers[0].json()["cursor"]

        # SIGTERM to the parent: each worker answers its parked polls at once, then all exit.
        polls = [
            asyncio.create_task(
                http.get(f"{API}/messages", params={"session_id": session_id, "since": cursor, "wait": 30})
            )
            for http in https[1:]
        ]
        await asyncio.sleep(1.0)
        assert not any(p.done() for p in polls)
        sigterm = time.monotonic()
        server.send_signal(signal.SIGTERM)
        answers = await asyncio.wait_for(asyncio.gather(*polls), 15)
        answered = time.monotonic() - sigterm
        code = await server.wait_exit(15)
        exited = time.monotonic() - sigterm
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert all(r.json()["messages"] == [] for r in answers)
    assert code == 0, server.output()
    assert not any(Path(f"/proc/{p}").exists() for p in workers)
    print(f"\n--workers 2: parked polls answered {answered:.2f} s after SIGTERM; exited after {exited:.2f} s")


async def test_batches_naming_sessions_in_opposite_orders_through_two_instances_do_not_deadlock(
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(instances=2, nginx=False)
    async with clients(cluster, cluster.instances) as (via_a, via_b):
        for n in range(15):
            sessions = [f"batch-{n}-{k}" for k in range(4)]

            def batch(order: list[str], tag: str) -> dict[str, Any]:
                return {
                    "messages": [
                        {"content": f"{tag} in {s}", "session_id": s, "client_message_id": f"{tag}-{s}"} for s in order
                    ]
                }

            answers = await asyncio.gather(
                via_a.post(f"{API}/messages/batch", json=batch(sessions, "forward")),
                via_b.post(f"{API}/messages/batch", json=batch(sessions[::-1], "backward")),
            )
            for r in answers:
                assert r.status_code == 200, r.text
                assert all(item["success"] for item in r.json()["results"]), r.text
    rows = await cluster.db.fetch("SELECT session_id, count(*) AS n FROM messages GROUP BY session_id")
    assert len(rows) == 15 * 4
    assert all(r["n"] == 2 for r in rows)
