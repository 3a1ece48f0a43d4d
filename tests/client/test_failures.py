"""Seed test 2: network and server failures are handled gracefully, and the service recovers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pollchat.client import PollingStrategy, RequestFailed
from tests.client.conftest import SESSION, FakeClock, FakeServer, Recorder, ServiceFactory, within_jitter

BACKOFF = [3.0, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30.0, 30.0, 30.0, 30.0]


async def test_unreachable_server_goes_offline_backs_off_and_recovers(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.run_for(1)
    # The first poll asks with wait=0, so the service is known to work at once; only then
    # does it park a long poll, which the server holds.
    assert service.connection_status.state == "connected"
    assert service.connection_status.last_successful_poll == clock.now() - timedelta(seconds=1)
    first, held = server.seen("poll")
    assert "wait" not in first.params and held.params["wait"] == "25"
    assert first.at == held.at
    await clock.run_for(25)
    assert service.connection_status.state == "connected"
    connected_at = service.connection_status.last_successful_poll
    assert connected_at == clock.now() - timedelta(seconds=1)  # the held poll answered at 25 s

    server.down = True
    await clock.run_until(lambda: service.connection_status.error_count == len(BACKOFF), within=400)
    status = service.connection_status
    assert status.state == "offline"
    assert status.retry_attempts == status.error_count
    assert status.last_error is not None and "cannot reach the server" in status.last_error
    # Offline, it still tells when the last poll worked (the one held while the server went down).
    last_ok = {s.last_successful_poll for s in recorder.statuses if s.state == "offline" and s.error_count}
    assert len(last_ok) == 1 and connected_at is not None and connected_at < last_ok.pop() < clock.now()
    assert status.polling_active
    # Consecutive errors grow the delay 1.5x from the base interval up to the max, each jittered.
    sleeps = clock.poll_sleeps()
    assert len(sleeps) == len(BACKOFF)
    for sleep, nominal in zip(sleeps, BACKOFF, strict=True):
        assert within_jitter(sleep, nominal), (sleep, nominal)
    failing = server.seen("poll")[-len(BACKOFF) :]
    times = [r.at for r in failing]
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == pytest.approx(sleeps[:-1])
    # The first failing poll was a long poll (the service was connected); every retry is not.
    assert ["wait" in r.params for r in failing] == [True] + [False] * (len(BACKOFF) - 1)
    # The application heard the error count grow, one status change per failed poll.
    counts = [s.error_count for s in recorder.statuses if s.state == "offline" and s.error_count]
    assert counts == list(range(1, len(BACKOFF) + 1))

    server.down = False
    server.post(SESSION, "back")
    polls_before = len(server.seen("poll"))
    await clock.run_until(lambda: service.connection_status.state == "connected", within=40)
    status = service.connection_status
    assert (status.error_count, status.retry_attempts, status.last_error) == (0, 0, None)
    assert status.last_successful_poll == clock.now()
    assert recorder.new_contents() == ["back"]
    assert recorder.states()[-2:] == ["polling", "connected"]
    assert service.stats.errors == len(BACKOFF)
    # Back: the poll that answered asked with wait=0, and long polls resumed right after it.
    await clock.settle()
    recovered, parked = server.seen("poll")[polls_before:]
    assert "wait" not in recovered.params and parked.params["wait"] == "25"
    assert recovered.at == parked.at == clock.monotonic()
    assert server.gets_in_flight == 1


async def test_backoff_without_jitter_is_exact(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service(strategy=PollingStrategy(jitter=0))
    await service.start_polling()
    server.fail("poll", "connect", times=8)
    await clock.run_for(200)
    assert clock.poll_sleeps() == BACKOFF[:8]
    assert service.connection_status.state == "connected"


async def test_backoff_uses_custom_strategy(clock: FakeClock, server: FakeServer, make_service: ServiceFactory) -> None:
    strategy = PollingStrategy(jitter=0, base_interval=1, backoff_multiplier=2, max_interval=10)
    service = make_service(strategy=strategy)
    await service.start_polling()
    server.fail("poll", status=500, times=6)
    await clock.run_for(100)
    assert clock.poll_sleeps() == [1, 2, 4, 8, 10, 10]


async def test_server_errors_are_errors_and_one_success_resets(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.settle()
    server.post(SESSION, "one")  # ends the held poll; the next one fails
    server.fail("poll", status=500)
    await clock.settle()
    status = service.connection_status
    # The server answered, so this is an error, not being offline.
    assert (status.state, status.error_count) == ("error", 1)
    assert status.last_error is not None
    assert server.seen("poll")[-1].params["wait"] == "25"  # the failed poll was a long one
    failed = len(server.seen("poll"))
    await clock.run_for(4)
    # One success resets at once: the retry asks with wait=0, so it answers without being held ...
    assert service.connection_status.state == "connected"
    assert service.connection_status.error_count == 0
    retry, parked = server.seen("poll")[failed:]
    assert "wait" not in retry.params
    # ... and long polls resume right after it.
    assert parked.params["wait"] == "25" and parked.at == retry.at
    await clock.run_for(30)
    assert service.connection_status.state == "connected"
    assert service.connection_status.error_count == 0
    # A connection dropped before any answer is no answer (offline), and the poll is simply made again.
    server.post(SESSION, "two")
    server.fail("poll", "read_error", times=2)
    await clock.settle()
    assert service.connection_status.state == "offline"
    assert service.connection_status.last_error == "connection failed: ReadError"
    failed = len(server.seen("poll"))
    await clock.run_for(40)
    assert service.connection_status.state == "connected"
    assert recorder.new_contents() == ["one", "two"]
    assert service.stats.errors == 3
    failures = [(s.state, s.error_count) for s in recorder.statuses if s.error_count and s.state != "polling"]
    assert failures == [("error", 1), ("offline", 1), ("offline", 2)]
    # The first ReadError hit a long poll; the retry that failed again and the one that
    # answered asked with wait=0; then long polls again.
    assert ["wait" in r.params for r in server.seen("poll")[failed - 1 : failed + 3]] == [True, False, False, True]


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_errors_in_a_row_stay_errors_never_offline(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory, status: int
) -> None:
    """A server that answers, however badly and however often, is reachable: "error", not "offline"."""
    service = make_service(strategy=PollingStrategy(jitter=0))
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.settle()
    server.post(SESSION, "end the held poll")
    server.fail("poll", status=status, times=5)
    await clock.run_until(lambda: service.connection_status.error_count == 5, within=60)
    status_now = service.connection_status
    assert (status_now.state, status_now.retry_attempts) == ("error", 5)
    failures = [(s.state, s.error_count) for s in recorder.statuses if s.error_count and s.state != "polling"]
    assert failures == [("error", n) for n in range(1, 6)]
    assert clock.poll_sleeps() == BACKOFF[:5]
    failed = len(server.seen("poll"))
    await clock.run_until(lambda: service.connection_status.state == "connected", within=60)
    assert "offline" not in recorder.states()[1:]  # only the state before the first poll
    # The poll that answered asked with wait=0; long polls resume right after it.
    await clock.settle()
    retry, parked = server.seen("poll")[failed:]
    assert "wait" not in retry.params and parked.params["wait"] == "25"
    assert service.stats.errors == 5


async def test_dropped_connections_are_offline_from_the_first(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    """A poll that got no answer (here a ReadError) is offline at once, as in the browser, whose fetch cannot tell."""
    service = make_service(strategy=PollingStrategy(jitter=0))
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.settle()
    server.post(SESSION, "end the held poll")
    server.fail("poll", "read_error", times=3)
    await clock.run_until(lambda: service.connection_status.error_count == 3, within=60)
    status = service.connection_status
    assert (status.state, status.last_error) == ("offline", "connection failed: ReadError")
    failures = [(s.state, s.error_count) for s in recorder.statuses if s.error_count and s.state != "polling"]
    assert failures == [("offline", 1), ("offline", 2), ("offline", 3)]
    failed = len(server.seen("poll"))
    await clock.run_until(lambda: service.connection_status.state == "connected", within=60)
    assert service.connection_status.error_count == 0
    assert recorder.states()[-3:] == ["offline", "polling", "connected"]
    await clock.settle()
    retry, parked = server.seen("poll")[failed:]
    assert "wait" not in retry.params and parked.params["wait"] == "25"


@pytest.mark.parametrize(("status", "retry_after"), [(429, 20.0), (503, 45.0)])
async def test_retry_after_is_honoured_on_polls(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory, status: int, retry_after: float
) -> None:
    service = make_service(strategy=PollingStrategy(mode="short"))
    await service.start_polling()
    await clock.run_for(1)
    server.fail("poll", status=status, retry_after=retry_after)
    before = len(server.seen("poll"))
    await clock.run_until(lambda: len(server.seen("poll")) == before + 2, within=100)
    refused, next_poll = server.seen("poll")[-2:]
    # At least what the server asked for, even beyond max_interval, plus a little jitter.
    assert retry_after <= next_poll.at - refused.at <= retry_after * 1.2
    assert service.connection_status.state == "connected"


async def test_retry_after_is_not_cut_short_by_a_send(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    """A poll rate limit asks for a pause; a chatty user's sends must not trigger polls during it."""
    service = make_service()
    await service.start_polling()
    await clock.settle()
    server.post(SESSION, "end the held poll")
    server.fail("poll", status=429, retry_after=20, code="rate_limited")
    await clock.settle()
    refused_at = server.seen("poll")[-1].at
    for i in range(4):
        await clock.run_for(3)
        service.enqueue(f"chatty {i}")
    await clock.run_until(lambda: server.seen("poll")[-1].at > refused_at, within=30)
    assert server.contents()[1:] == [f"chatty {i}" for i in range(4)]
    assert server.seen("poll")[-1].at - refused_at >= 20


async def test_a_missing_session_is_created_without_an_error(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service(session_id="fresh", client_name="tests")
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.settle()
    # Not connected yet, so the poll after creating the session asks with wait=0 too; once
    # it answers, a long poll is parked.
    assert [r.route for r in server.requests] == ["poll", "sessions", "poll", "poll"]
    assert [r.params.get("wait") for r in server.seen("poll")] == [None, None, "25"]
    assert service.connection_status.state == "connected"
    assert server.seen("sessions")[0].body == {"id": "fresh", "client_name": "tests"}
    assert server.sessions["fresh"].owner == "u_alice"
    await clock.run_for(30)
    assert service.connection_status.state == "connected"
    assert "error" not in recorder.states()
    assert service.stats.errors == 0


async def test_a_refused_token_stops_both_loops_and_keeps_the_queue(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory, state_path: str
) -> None:
    """A 401 cannot be cured by retrying: no more polls or sends, and what was typed is not lost."""
    service = make_service(token="tok-wrong", state_path=state_path)
    refusals: list[RequestFailed] = []
    service.on_unauthorized(refusals.append)
    await service.start_polling()
    response = await service.send_message("typed before the token was revoked")
    assert (response.success, response.error) == (False, "missing or unknown token")
    await clock.run_for(100)
    status = service.connection_status
    assert (status.state, status.last_error, status.polling_active) == ("error", "missing or unknown token", False)
    assert [r.route for r in server.requests] == ["poll", "send"]
    assert len(refusals) == 1 and refusals[0].status == 401
    # The message waits, in the state file too, for a service with a valid token.
    assert [m.content for m in service.pending] == ["typed before the token was revoked"]
    again = make_service(state_path=state_path)
    await again.start_polling()
    await clock.run_for(1)
    assert server.contents() == ["typed before the token was revoked"]
    # A send after the refusal hears it at once instead of waiting for ever.
    later = await service.send_message("and one more")
    assert (later.success, later.error) == (False, "missing or unknown token")


async def test_polling_stops_and_restarts(clock: FakeClock, server: FakeServer, make_service: ServiceFactory) -> None:
    service = make_service(strategy=PollingStrategy(mode="short"))
    await service.start_polling()
    await clock.run_for(10)
    await service.stop_polling()
    assert not service.connection_status.polling_active
    count = len(server.seen("poll"))
    await clock.run_for(60)
    assert len(server.seen("poll")) == count
    assert server.gets_in_flight == 0
    await service.start_polling()
    await clock.run_for(10)
    assert len(server.seen("poll")) > count
    assert service.connection_status.polling_active


async def test_a_session_created_by_our_own_send_meanwhile_is_no_error(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    """The poll finds no session, and before the poller creates it, our first send has."""
    service = make_service(session_id="fresh")
    recorder = Recorder(service, clock)
    server.fail("poll", "slow", delay=0.5)  # its 404 arrives after the send below stored
    service.enqueue("first words")
    await service.start_polling()
    await clock.run_for(1)
    assert [r.route for r in server.requests[:2]] == ["poll", "send"]
    assert server.contents("fresh") == ["first words"]
    assert [r.route for r in server.requests][2:5] == ["sessions", "session", "poll"]
    assert "error" not in recorder.states() and service.stats.errors == 0
    await clock.run_for(30)
    assert service.connection_status.state == "connected"
    assert [(e.kind, e.message.status) for e in recorder.events] == [("new", "sending"), ("update", "sent")]
