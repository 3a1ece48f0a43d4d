"""Seed test 1 and 4: polling at regular intervals, and adjusting the frequency with activity."""

from __future__ import annotations

import asyncio
import random

import pytest

from pollchat.client import MessageEvent, PollingChatService, PollingStrategy
from tests.client.conftest import (
    BASE_URL,
    SESSION,
    TOKEN,
    FakeClock,
    FakeServer,
    Recorder,
    ServiceFactory,
    short,
    within_jitter,
)


def poll_times(server: FakeServer, clock: FakeClock) -> list[float]:
    """When each poll reached the server, in fake seconds since the clock started."""
    start = clock.monotonic() - clock.elapsed
    return [r.at - start for r in server.seen("poll")]


async def test_short_polls_follow_the_base_interval_with_jitter(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service(strategy=short())
    await service.start_polling()
    await clock.run_for(120)

    sleeps = clock.poll_sleeps()
    assert len(sleeps) >= 30
    # No activity yet: every delay is the base interval, give or take the 20 % jitter ...
    assert all(within_jitter(s, 3.0) for s in sleeps), sleeps
    # ... and the jitter is real: clients cut off together do not come back together.
    assert len({round(s, 6) for s in sleeps}) > len(sleeps) // 2
    # Each poll goes out exactly when the previous delay ends: polls are regular, not bursty.
    times = poll_times(server, clock)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == [pytest.approx(s, abs=1e-9) for s in sleeps[: len(gaps)]]
    # Short polls never ask the server to hold them.
    assert all("wait" not in r.params for r in server.seen("poll"))
    assert service.stats.empty_polls + service.stats.not_modified == len(server.seen("poll"))


async def test_long_polls_go_out_again_at_once_with_wait(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service()  # long polling is the default
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.run_for(95)
    server.post(SESSION, "hello")
    await clock.run_for(1)

    # The first poll asks with wait=0 and answers at once; from then on each empty long poll
    # is held 25 s by the server, the next one follows at once, and a message ends the held
    # poll immediately.
    assert poll_times(server, clock) == [0, 0, 25, 50, 75, 95]
    first, *long_polls = server.seen("poll")
    assert "wait" not in first.params
    assert all(r.params["wait"] == "25" for r in long_polls)
    assert clock.poll_sleeps() == []
    assert [(at - 1000.0, e.kind, e.message.content) for at, e in recorder.log if isinstance(e, MessageEvent)] == [
        (95.0, "new", "hello")
    ]
    assert all("if-none-match" not in r.headers for r in server.seen("poll"))


async def test_long_poll_wait_is_configurable(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service(strategy=PollingStrategy(long_poll_wait=20))
    await service.start_polling()
    await clock.run_for(50)
    waits = [float(r.params["wait"]) if "wait" in r.params else None for r in server.seen("poll")]
    assert waits == [None, 20.0, 20.0, 20.0]
    assert poll_times(server, clock) == [0, 0, 20, 40]


@pytest.mark.parametrize(("says_max_wait", "lowered"), [(True, "20"), (False, "12")])
async def test_a_server_with_a_shorter_max_wait_is_long_polled_without_errors(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory, says_max_wait: bool, lowered: str
) -> None:
    """Bug: a server's 400 wait_too_long was not handled, so the client flipped between connected and error for ever."""
    server.max_wait = 20
    server.says_max_wait = says_max_wait  # else the client halves its 25 s
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.run_for(200)
    assert recorder.states() == ["offline", "polling", "connected"]
    assert service.stats.errors == 0
    waits = [r.params.get("wait") for r in server.seen("poll")]
    assert waits[:3] == [None, "25", lowered]
    assert set(waits[3:]) == {lowered} and len(waits) >= 10  # and it stays lowered, held for as long


async def test_short_polls_adapt_to_activity(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service(strategy=short())
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.run_for(30)  # idle: base interval
    service.enqueue("hi")  # activity: a send
    await clock.run_for(40)
    server.post(SESSION, "an answer")  # activity: a receipt
    await clock.run_for(150)  # the active window ends 60 s after the answer arrived

    activity = recorder.new_times()
    assert len(activity) == 2 and recorder.new_contents() == ["hi", "an answer"]
    kinds: dict[float, int] = {3.0: 0, 2.0: 0, 10.0: 0}
    for sleep in clock.sleeps:
        assert sleep.who == "poll"
        before = [t for t in activity if t <= sleep.at]
        if not before:
            nominal = 3.0
        elif sleep.at - before[-1] < 60.0:
            nominal = 2.0
        else:
            nominal = 10.0
        kinds[nominal] += 1
        assert within_jitter(sleep.seconds, nominal), (sleep, nominal)
    assert kinds[3.0] >= 8 and kinds[2.0] >= 40 and kinds[10.0] >= 4, kinds
    # The last delays are the idle ones.
    assert within_jitter(clock.poll_sleeps()[-1], 10.0)


async def test_an_acknowledged_send_wakes_a_short_poller_at_once(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service(strategy=short(inactive_interval=30, base_interval=30))
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.run_for(5)
    assert len(server.seen("poll")) == 1
    message = service.enqueue("hi")
    await clock.settle()
    # The poll after the send goes out right away, not 30 s later, and reports the message back.
    assert len(server.seen("poll")) == 2
    assert server.seen("poll")[-1].at == server.seen("send")[-1].at
    assert message.client_message_id is not None
    assert recorder.of(message.client_message_id) == [("new", "sending"), ("update", "sent")]


async def test_set_polling_interval_switches_to_fixed_short_polls(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service()
    await service.start_polling()
    await clock.run_for(10)  # a long poll is being held
    service.set_polling_interval(5)
    await clock.run_for(100)
    polls = server.seen("poll")
    # After the first (wait=0) poll, the held long poll finishes (15 s later); the switch asked
    # for a poll at once, so a short poll follows it right away, then fixed 5 s ones, jittered.
    assert "wait" not in polls[0].params and "wait" in polls[1].params
    assert all("wait" not in r.params for r in polls[2:])
    assert polls[2].at - polls[1].at == 25
    assert len(clock.poll_sleeps()) >= 12
    assert all(within_jitter(s, 5.0) for s in clock.poll_sleeps())
    assert service.strategy.mode == "short"


async def test_has_more_pages_are_fetched_back_to_back_in_cursor_order(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    for i in range(250):
        server.post(SESSION, f"m{i}")
    service = make_service(strategy=short())
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.settle()
    # 100 + 100 + 50: three polls in a row, each following the previous cursor, no delay in between.
    polls = server.seen("poll")
    assert len(polls) == 3 and {r.at for r in polls} == {clock.monotonic()}
    assert [r.params.get("since") for r in polls] == [None, "c_100", "c_200"]
    assert clock.poll_sleeps() == [clock.sleeps[0].seconds]
    assert recorder.new_contents() == [f"m{i}" for i in range(250)]
    assert service.cursor == "c_250"
    assert service.stats.useful_polls == 3


async def test_short_polls_send_if_none_match_and_handle_304(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    server.post(SESSION, "before")
    service = make_service(strategy=short())
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.run_for(20)
    polls = server.seen("poll")
    assert "if-none-match" not in polls[0].headers
    # From then on every short poll carries the last ETag; an unchanged session answers 304.
    assert all(r.headers.get("if-none-match", "").startswith('"s1:') for r in polls[1:])
    assert service.stats.not_modified >= 4
    assert service.stats.useful_polls == 1
    assert service.connection_status.state == "connected"
    assert service.connection_status.error_count == 0
    server.post(SESSION, "after")
    await clock.run_for(10)
    assert recorder.new_contents() == ["before", "after"]
    assert service.stats.errors == 0


async def test_exactly_one_poll_in_flight(clock: FakeClock, server: FakeServer, make_service: ServiceFactory) -> None:
    service = make_service()
    await service.start_polling()
    await service.start_polling()  # a second start does not start a second poller
    fetched: list[asyncio.Future[object]] = []
    for i in range(20):
        service.enqueue(f"mine {i}")
        server.post(SESSION, f"theirs {i}")
        if i % 5 == 0:
            fetched.append(asyncio.ensure_future(service.get_messages(SESSION)))
        if i == 7:
            server.fail("poll", "connect", times=2)
        if i == 10:
            service.set_polling_interval(1)
        if i == 15:
            server.fail("poll", status=503, retry_after=3)
        await clock.run_for(2.5)
    await clock.run_until(lambda: all(f.done() for f in fetched))
    assert len(server.seen("poll")) > 30
    assert server.max_gets_in_flight == 1


async def test_same_seed_same_schedule() -> None:
    async def schedule(seed: int) -> list[float]:
        clock = FakeClock()
        server = FakeServer(clock)
        server.open_session()
        service = PollingChatService(
            BASE_URL,
            TOKEN,
            SESSION,
            strategy=short(),
            transport=server.transport,
            clock=clock,
            rng=random.Random(seed),
        )
        await service.start_polling()
        server.fail("poll", "connect", times=3)
        await clock.run_for(60)
        await service.aclose()
        return clock.poll_sleeps()

    first, again, other = await schedule(1), await schedule(1), await schedule(2)
    assert first == again
    assert first != other
