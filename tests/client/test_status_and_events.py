"""What the application sees: connection status, stats, the events() iterator and the callbacks."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pollchat.client import ConnectionStatus, MessageEvent, PollingChatService, PollingStrategy
from tests.client.conftest import SESSION, FakeClock, FakeServer, Recorder, ServiceFactory

Item = MessageEvent | ConnectionStatus


async def collect(service: PollingChatService, into: list[Item]) -> None:
    async for item in service.events():
        into.append(item)


async def test_connection_status_fields(clock: FakeClock, server: FakeServer, make_service: ServiceFactory) -> None:
    service = make_service(strategy=PollingStrategy(mode="short"))
    assert service.connection_status == ConnectionStatus(state="offline")
    await service.start_polling()
    await clock.settle()
    polled_at = clock.now()
    assert service.connection_status == ConnectionStatus(
        state="connected", last_successful_poll=polled_at, polling_active=True
    )
    await clock.run_for(10)
    assert service.connection_status.last_successful_poll is not None
    assert service.connection_status.last_successful_poll > polled_at

    # A failing send shows in retry_attempts and last_error, not in the poll's error count.
    server.fail("send", status=503, times=2)
    service.enqueue("hello")
    await clock.settle()
    status = service.connection_status
    assert (status.state, status.error_count, status.retry_attempts) == ("connected", 0, 1)
    assert status.last_error == "refused with 503"

    server.fail("poll", "connect", times=2)
    await clock.run_until(lambda: service.connection_status.error_count == 2)
    status = service.connection_status
    assert (status.state, status.retry_attempts, status.polling_active) == ("offline", 2, True)
    last_ok = status.last_successful_poll
    await clock.run_until(lambda: service.connection_status.state == "connected")
    assert service.connection_status.error_count == 0
    assert service.connection_status.last_successful_poll is not None and last_ok is not None
    assert service.connection_status.last_successful_poll > last_ok

    await service.stop_polling()
    assert not service.connection_status.polling_active


async def test_stats(clock: FakeClock, server: FakeServer, make_service: ServiceFactory) -> None:
    service = make_service()
    await service.start_polling()
    await clock.run_for(250)  # a first wait=0 poll, then idle long polls, each held 25 s
    stats = service.stats
    assert stats.requests == len(server.requests) == 12
    assert stats.requests_per_minute(clock.monotonic()) == pytest.approx(12 * 60 / 250)
    assert (stats.useful_polls, stats.empty_polls, stats.errors, stats.send_retries) == (0, 11, 0, 0)
    assert sorted(stats.latencies) == [0.0] + [25.0] * 10
    assert stats.latency_percentile(0.5) == 25.0

    server.post(SESSION, "one")
    server.fail("send", "connect")
    service.enqueue("two")
    await clock.run_for(5)
    server.fail("poll", status=500, times=2)
    server.post(SESSION, "three")
    await clock.run_for(60)
    assert stats.useful_polls >= 3  # "one", our "two" reported back, "three"
    assert stats.errors == 2
    assert stats.send_retries == 1
    assert stats.requests == len(server.requests)
    elapsed = clock.monotonic() - stats.started_at
    assert stats.requests_per_minute(clock.monotonic()) == pytest.approx(len(server.requests) * 60 / elapsed)
    assert stats.useful_polls + stats.empty_polls + stats.not_modified + stats.errors == len(server.seen("poll")) - 1


async def test_events_iterator_and_callbacks_see_the_same_things_in_order(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service()
    recorder = Recorder(service, clock)
    first: list[Item] = []
    second: list[Item] = []
    consumers = [asyncio.ensure_future(collect(service, first)), asyncio.ensure_future(collect(service, second))]
    await clock.settle()
    await service.start_polling()
    message = service.enqueue("hello")
    server.post(SESSION, "hi there")
    server.fail("poll", "connect")
    await clock.run_for(40)
    for consumer in consumers:
        consumer.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)

    expected = [item for _, item in recorder.log]
    assert first == expected and second == expected
    kinds = [(e.kind, e.message.content, e.message.status) for e in first if isinstance(e, MessageEvent)]
    assert kinds == [("new", "hello", "sending"), ("update", "hello", "sent"), ("new", "hi there", "sent")]
    assert first[0] == ConnectionStatus(state="offline", polling_active=True)
    assert "offline" in [s.state for s in first if isinstance(s, ConnectionStatus) and s.error_count]
    assert message.client_message_id is not None
    # A consumer that stopped is unsubscribed: later events go nowhere, and nothing breaks.
    service.enqueue("after")
    assert len(first) == len(expected)


async def test_events_subscribes_when_called(clock: FakeClock, make_service: ServiceFactory) -> None:
    """``events()`` hands over every event "from now on", including those before the first ``anext``."""
    service = make_service()
    stream = service.events()
    service.enqueue("queued before the first anext")

    async def first_event() -> Item:
        return await anext(stream)

    task = asyncio.ensure_future(first_event())
    await clock.settle()
    try:
        assert task.done(), "the event queued right after events() was lost"
        event = task.result()
        assert isinstance(event, MessageEvent) and event.message.content == "queued before the first anext"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await stream.aclose()  # type: ignore[attr-defined]


async def test_a_failing_callback_does_not_stop_the_others(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service()

    def broken(event: MessageEvent) -> None:
        raise RuntimeError("bug in the application")

    service.on_message(broken)
    recorder = Recorder(service, clock)
    await service.start_polling()
    with caplog.at_level(logging.ERROR, logger="pollchat.client.service"):
        server.post(SESSION, "one")
        await clock.settle()
        server.post(SESSION, "two")
        await clock.settle()
    assert recorder.new_contents() == ["one", "two"]
    assert [r.message for r in caplog.records] == ["a pollchat callback failed"] * 2


async def test_status_callbacks_report_changes_not_every_poll(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service(strategy=PollingStrategy(mode="short"))
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.run_for(60)  # about twenty polls, all fine
    assert recorder.states() == ["offline", "polling", "connected"]
    assert len(recorder.statuses) == 3
    server.down = True
    await clock.run_for(20)
    server.down = False
    await clock.run_for(60)
    states = recorder.states()
    assert states[:3] == ["offline", "polling", "connected"]
    assert states[3] == "offline" and states[-1] == "connected"


async def test_whoami_and_get_messages(clock: FakeClock, server: FakeServer, make_service: ServiceFactory) -> None:
    service = make_service()
    ids = [server.post(SESSION, f"m{i}")["id"] for i in range(150)]
    assert await service.whoami() == "u_alice"
    everything = await service.get_messages(SESSION)
    assert [m.content for m in everything] == [f"m{i}" for i in range(150)]
    after = await service.get_messages(SESSION, last_message_id=ids[139])
    assert [m.id for m in after] == ids[140:]
    assert server.max_gets_in_flight == 1
