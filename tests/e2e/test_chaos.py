"""``PollingChatService`` against a real server through a flaky network (``ChaosProxy``).

Two people: alice (a member) sends; bob (an operator, who may read any session) follows
alice's session. Alice creates the session herself before bob starts following it: a
``PollingChatService`` whose session does not exist creates it as its own, so an operator's
follower started first would own the session and alice's sends would be refused (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable

import httpx
import pytest

from pollchat.client import ConnectionStatus, MessageEvent, PollingChatService, PollingStrategy
from tests.e2e.conftest import wait_until
from tests.e2e.proxy import ChaosProxy
from tests.servers import ServerProcess

pytestmark = pytest.mark.integration

N_MESSAGES = 60
CONVERGE_WITHIN = 60.0


def quick_strategy() -> PollingStrategy:
    """Long polls of 2 s, so with a 3 s request timeout a silent connection is noticed within 5 s."""
    return PollingStrategy(long_poll_wait=2.0, base_interval=1.0, max_interval=4.0)


class Follower:
    """Records what a service hands to the application."""

    def __init__(self, service: PollingChatService) -> None:
        self.new: list[MessageEvent] = []
        self.updates: list[MessageEvent] = []
        self.statuses: list[tuple[float, ConnectionStatus]] = []
        service.on_message(self._message)
        service.on_status(lambda s: self.statuses.append((time.monotonic(), s)))

    def _message(self, event: MessageEvent) -> None:
        (self.new if event.kind == "new" else self.updates).append(event)

    def connected_since(self, moment: float) -> float | None:
        """When the state first became ``connected`` after ``moment`` (monotonic), if it did."""
        for at, status in self.statuses:
            if at >= moment and status.state == "connected":
                return at
        return None


def stored_order(server: ServerProcess, session_id: str) -> list[str]:
    """The contents of a session's messages in the order the server stored them (its own sequence)."""
    with contextlib.closing(sqlite3.connect(f"file:{server.database}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT content FROM messages WHERE session_id = ? ORDER BY created_seq", (session_id,)
        ).fetchall()
    return [row[0] for row in rows]


async def run_chaos(proxy: ChaosProxy, server: ServerProcess, log: Callable[[str], None]) -> None:
    """About 25 s of network and server trouble, ending with the network healthy."""

    async def phase(mode: str, seconds: float, *, cut: bool = False) -> None:
        if cut:
            log(f"cut {proxy.cut()} live connections")
        proxy.set_mode(mode)  # type: ignore[arg-type]
        log(f"{mode} for {seconds:g} s")
        await asyncio.sleep(seconds)

    await phase("pass", 1.5)
    await phase("pass", 1.5, cut=True)
    await phase("blackhole", 4.0)
    await phase("pass", 2.0)
    proxy.delay = 0.25
    await phase("delay", 3.0)
    await phase("reset", 2.5)
    await phase("pass", 1.5)
    await phase("refuse", 3.0, cut=True)
    await phase("pass", 1.5)
    log("SIGKILL the server")
    server.kill()
    await asyncio.sleep(1.5)
    await asyncio.to_thread(server.start)
    log("server restarted on the same port and database")
    await phase("delay", 1.5)
    proxy.set_mode("pass")
    log("pass")


async def test_chaos_no_loss_no_duplicates_in_order(server: ServerProcess, proxy: ChaosProxy) -> None:
    session_id = "e2e-chaos"
    alice_token = server.create_user("alice")
    bob_token = server.create_user("bob", role="operator")
    server.create_session(alice_token, session_id)

    started = time.monotonic()
    timeline: list[str] = []

    def log(line: str) -> None:
        timeline.append(f"{time.monotonic() - started:6.2f}s {line}")

    alice = PollingChatService(proxy.url, alice_token, session_id, strategy=quick_strategy(), request_timeout=3.0)
    bob = PollingChatService(proxy.url, bob_token, session_id, strategy=quick_strategy(), request_timeout=3.0)
    alice_seen, bob_seen = Follower(alice), Follower(bob)
    expected = [f"chaos message {i:03d}" for i in range(N_MESSAGES)]
    sent_ids: list[str] = []
    try:
        await alice.start_polling()
        await bob.start_polling()

        async def produce() -> None:
            for content in expected:
                message = alice.enqueue(content)
                assert message.client_message_id is not None
                sent_ids.append(message.client_message_id)
                await asyncio.sleep(0.4)

        producer = asyncio.create_task(produce())
        await run_chaos(proxy, server, log)
        await producer
        chaos_done = time.monotonic()

        # Convergence, bounded: every send acknowledged, bob has them all, both connected again.
        async with asyncio.timeout(CONVERGE_WITHIN):
            results = await asyncio.gather(*(alice.wait_for(c) for c in sent_ids))
        assert all(r.success for r in results), [r.error for r in results if not r.success]

        def converged() -> bool:
            return (
                len(bob_seen.new) >= N_MESSAGES
                and alice.connection_status.state == "connected"
                and bob.connection_status.state == "connected"
            )

        def describe() -> str:
            return f"bob has {len(bob_seen.new)} messages; alice {alice.connection_status}; bob {bob.connection_status}"

        await wait_until(converged, CONVERGE_WITHIN - (time.monotonic() - chaos_done), describe)
        converge_time = time.monotonic() - chaos_done
    finally:
        await alice.aclose()
        await bob.aclose()
        print("\n".join(timeline))

    # Stored exactly once, as the server reports through a plain HTTP drain.
    stored = [m for m in server.drain(session_id) if m["type"] == "user"]
    contents = [m["content"] for m in stored]
    assert sorted(contents) == expected, "lost or doubled on the server"
    assert len({m["id"] for m in stored}) == N_MESSAGES
    assert {m["client_message_id"] for m in stored} == set(sent_ids)
    # ... in the order alice queued them.
    assert stored_order(server, session_id) == expected

    # Bob: each exactly once as "new", in stored order.
    bob_new = [e.message.content for e in bob_seen.new]
    assert bob_new == expected
    assert [e.message.id for e in bob_seen.new] == [{m["content"]: m["id"] for m in stored}[c] for c in expected]
    # Alice never sees her own messages as somebody else's: one "new" each (the local echo).
    assert [e.message.content for e in alice_seen.new] == expected

    # The chaos really hit both clients.
    assert server.starts == 2
    assert bob.stats.errors > 0
    assert alice.stats.errors + alice.stats.send_retries > 0
    print(
        f"converged {converge_time:.1f} s after the chaos; proxy {proxy.stats};"
        f" alice errors={alice.stats.errors} send_retries={alice.stats.send_retries} requests={alice.stats.requests};"
        f" bob errors={bob.stats.errors} requests={bob.stats.requests}"
    )


async def test_recovery_after_ten_second_outage(quiet_server: ServerProcess) -> None:
    """With the default backoff (only the long-poll wait shortened), how long until both are back."""
    server, session_id = quiet_server, "e2e-outage"
    alice_token = server.create_user("outage-alice")
    bob_token = server.create_user("outage-bob", role="operator")
    server.create_session(alice_token, session_id)
    async with ChaosProxy(server.port) as proxy:
        alice = PollingChatService(
            proxy.url, alice_token, session_id, strategy=PollingStrategy(long_poll_wait=2.0), request_timeout=3.0
        )
        bob = PollingChatService(
            proxy.url, bob_token, session_id, strategy=PollingStrategy(long_poll_wait=2.0), request_timeout=3.0
        )
        alice_seen, bob_seen = Follower(alice), Follower(bob)
        try:
            await alice.start_polling()
            await bob.start_polling()
            first = await asyncio.wait_for(alice.send_message("before the outage"), 10)
            assert first.success
            await wait_until(lambda: len(bob_seen.new) == 1, 10)
            await wait_until(lambda: bob.connection_status.state == "connected", 10)

            proxy.cut()
            proxy.set_mode("refuse")
            during = alice.enqueue("during the outage")
            assert during.client_message_id is not None
            await asyncio.sleep(10)
            assert alice.connection_status.state != "connected" or bob.connection_status.state != "connected"
            proxy.set_mode("pass")
            back = time.monotonic()

            acked = await asyncio.wait_for(alice.wait_for(during.client_message_id), 40)
            assert acked.success
            ack_time = time.monotonic() - back
            bob_time = ack_time + await wait_until(lambda: len(bob_seen.new) == 2, 40 - ack_time)
            await wait_until(
                lambda: alice.connection_status.state == "connected" and bob.connection_status.state == "connected",
                40,
            )
        finally:
            await alice.aclose()
            await bob.aclose()
    alice_connected = alice_seen.connected_since(back)
    bob_connected = bob_seen.connected_since(back)
    assert alice_connected is not None and bob_connected is not None
    recovery = {
        "alice connected": alice_connected - back,
        "bob connected": bob_connected - back,
        "queued message acknowledged": ack_time,
        "bob received it": bob_time,
    }
    print("recovery after a 10 s outage: " + ", ".join(f"{k} {v:.1f} s" for k, v in recovery.items()))
    assert bob_seen.new[1].message.content == "during the outage"
    assert max(recovery.values()) < 40


async def test_idle_long_polling_request_rate(quiet_server: ServerProcess) -> None:
    server, session_id = quiet_server, "e2e-idle"
    token = server.create_user("idle")
    server.create_session(token, session_id)
    async with ChaosProxy(server.port) as proxy:
        service = PollingChatService(proxy.url, token, session_id, strategy=PollingStrategy(long_poll_wait=2.0))
        try:
            await service.start_polling()
            await asyncio.sleep(6.0)
            rate = service.stats.requests_per_minute(time.monotonic())
            requests = service.stats.requests
            state = service.connection_status.state
        finally:
            await service.aclose()
    print(
        f"idle long-polling client (wait=2 s): {requests} requests in 6 s = {rate:.0f}/min"
        f" over {proxy.stats.accepted} TCP connection(s)"
    )
    assert state == "connected"
    assert rate < 60
    assert proxy.stats.accepted <= 2


async def test_the_proxy_injects_each_fault(quiet_server: ServerProcess) -> None:
    """The chaos above is only as good as the proxy: check each mode on plain requests."""
    token = quiet_server.create_user("proxy-check")
    quiet_server.create_session(token, "e2e-proxy")
    health = "/api/v1/health"
    async with (
        ChaosProxy(quiet_server.port) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=2.0, headers={"Authorization": f"Bearer {token}"}) as http,
    ):
        assert (await http.get(health)).status_code == 200

        proxy.delay = 0.3
        proxy.set_mode("delay")
        started = time.monotonic()
        assert (await http.get(health)).status_code == 200
        assert time.monotonic() - started >= 0.55  # held both ways

        proxy.set_mode("reset")
        with pytest.raises(httpx.TransportError):
            await http.get(health)
        assert proxy.stats.reset_responses == 1

        proxy.set_mode("refuse")
        with pytest.raises(httpx.TransportError):
            await http.get(health)
        assert proxy.stats.refused == 1

        proxy.set_mode("blackhole")
        with pytest.raises(httpx.ReadTimeout):
            await http.get(health, timeout=0.5)
        assert proxy.stats.blackholed == 1

        proxy.set_mode("pass")
        assert (await http.get(health)).status_code == 200
        # A long poll parked on the server is closed at once by a cut.
        poll = asyncio.ensure_future(http.get("/api/v1/admin/chat/messages?session_id=e2e-proxy&wait=30", timeout=40))
        await wait_until(lambda: proxy.live_connections == 1 and proxy.stats.bytes_up > 0, 5)
        await asyncio.sleep(0.2)
        assert proxy.cut() == 1
        with pytest.raises(httpx.TransportError):
            await asyncio.wait_for(poll, 2)
