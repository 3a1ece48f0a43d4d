"""Seed test 3: failed sends are retried, without ever storing a message twice or out of order."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from pollchat.client import MessageResponse, PollingStrategy
from tests.client.conftest import SESSION, FakeClock, FakeServer, Recorder, ServiceFactory, within_jitter


def cmids(server: FakeServer, route: str = "send") -> list[str]:
    """The client_message_id of every single send the server received."""
    return [r.body["client_message_id"] for r in server.seen(route)]


async def test_transient_failures_are_retried_after_1_2_4_8_seconds_with_one_id(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    server.fail("send", "connect")
    server.fail("send", status=503)
    server.fail("send", status=500)
    server.fail("send", "read_error")
    message = service.enqueue("hello")
    await clock.run_until(lambda: not service.pending, within=60)

    assert server.contents() == ["hello"]
    assert cmids(server) == [message.client_message_id] * 5
    sleeps = clock.send_sleeps()
    assert len(sleeps) == 4
    for sleep, nominal in zip(sleeps, [1, 2, 4, 8], strict=True):
        assert within_jitter(sleep, nominal), (sleep, nominal)
    sends = [r.at for r in server.seen("send")]
    assert [b - a for a, b in zip(sends, sends[1:], strict=False)] == pytest.approx(sleeps)
    assert service.stats.send_retries == 4
    # The application saw it sending, then sent: never failed in between.
    assert message.client_message_id is not None
    assert recorder.of(message.client_message_id) == [("new", "sending"), ("update", "sent")]


async def test_retry_delays_without_jitter_stay_at_8_seconds(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service(strategy=PollingStrategy(jitter=0))
    await service.start_sending()
    server.fail("send", status=503, times=6)
    task = asyncio.ensure_future(service.send_message("hello"))
    await clock.run_until(task.done, within=60)
    assert clock.send_sleeps() == [1, 2, 4, 8, 8, 8]
    response = task.result()
    assert response.success and response.message_id == server.stored()[0].id
    assert response.message is not None and response.message.status == "sent"


@pytest.mark.parametrize(("status", "retry_after", "expected"), [(429, 7.0, 7.0), (503, 12.0, 12.0)])
async def test_retry_after_is_honoured_on_sends(
    clock: FakeClock,
    server: FakeServer,
    make_service: ServiceFactory,
    status: int,
    retry_after: float,
    expected: float,
) -> None:
    service = make_service()
    await service.start_sending()
    server.fail("send", status=status, retry_after=retry_after)
    service.enqueue("hello")
    await clock.run_until(lambda: not service.pending, within=60)
    assert clock.send_sleeps() == [expected]
    first, second = server.seen("send")
    assert second.at - first.at == expected
    assert server.contents() == ["hello"]


async def test_a_lost_ack_followed_by_a_retry_stores_one_message(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    server.fail("send", "lost_ack")
    task = asyncio.ensure_future(service.send_message("hello"))
    await clock.run_until(task.done, within=60)

    stored = server.stored()
    assert [m.content for m in stored] == ["hello"]
    # Stored by the first attempt, whose answer was lost; the retry was answered as a replay.
    first, retry = server.seen("send")
    assert first.body["client_message_id"] == retry.body["client_message_id"] == stored[0].client_message_id
    response = task.result()
    assert response == MessageResponse(True, stored[0].id, message=response.message)
    assert stored[0].client_message_id is not None
    # The poller may report the message before the retry's answer; either way the app sees it once.
    assert recorder.of(stored[0].client_message_id) == [("new", "sending"), ("update", "sent")]
    assert [e.message.id for e in recorder.events if e.kind == "new"] == [f"local:{stored[0].client_message_id}"]


async def test_a_lost_ack_of_a_batch_stores_each_message_once(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service()
    for word in ("one", "two", "three"):
        service.enqueue(word)
    server.fail("batch", "lost_ack")
    await service.start_polling()
    await clock.run_until(lambda: not service.pending, within=60)
    assert server.contents() == ["one", "two", "three"]
    assert len(server.seen("batch")) == 2 and not server.seen("send")
    assert server.seen("batch")[0].body == server.seen("batch")[1].body


async def test_a_refusal_fails_that_message_and_later_ones_still_go_out(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    server.max_content = 10
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    first = asyncio.ensure_future(service.send_message("first"))
    await clock.run_until(first.done)
    too_long = asyncio.ensure_future(service.send_message("far too long for it"))
    not_yours = asyncio.ensure_future(service.send_message("pretend", type="assistant"))
    third = asyncio.ensure_future(service.send_message("third"))
    await clock.run_until(lambda: third.done() and too_long.done() and not_yours.done())

    assert server.contents() == ["first", "third"]
    refused = too_long.result()
    assert not refused.success and refused.message_id is None
    assert refused.error == "content is larger than 10 bytes" and refused.code == "content_too_large"
    assert refused.message is not None and refused.message.status == "failed"
    assert refused.message.error == refused.error
    forbidden = not_yours.result()
    assert (forbidden.success, forbidden.code) == (False, "type_not_allowed")
    assert forbidden.error == "a member can post only user messages"
    assert third.result().success
    # Not retried: a refusal is final, and the refused messages are no longer pending.
    assert service.stats.send_retries == 0
    assert service.pending == []
    failed = [e.message.content for e in recorder.events if e.message.status == "failed"]
    assert failed == ["far too long for it", "pretend"]


async def test_refusals_inside_a_batch_fail_only_those_messages(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    server.max_content = 10
    service = make_service()
    queued = [service.enqueue(text) for text in ("a", "far too long for it", "b", "c")]
    await service.start_sending()
    await clock.run_until(lambda: not service.pending)
    assert len(server.seen("batch")) == 1 and not server.seen("send")
    assert server.contents() == ["a", "b", "c"]
    responses = [await service.wait_for(m.client_message_id or "") for m in queued]
    assert [r.success for r in responses] == [True, False, True, True]
    assert responses[1].error == "content is larger than 10 bytes"


async def test_a_failed_message_can_be_retried(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    server.close_session(SESSION)
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    sending = asyncio.ensure_future(service.send_message("hello"))
    await clock.run_until(sending.done)
    refused = sending.result()
    assert (refused.success, refused.code, refused.error) == (False, "session_closed", "the session is closed")
    failed = refused.message
    assert failed is not None and failed.status == "failed"
    with pytest.raises(ValueError):
        service.retry(failed.with_status("sent"))

    server.close_session(SESSION, closed=False)
    again = service.retry(failed)
    assert again.status == "sending" and again.client_message_id == failed.client_message_id
    assert service.pending == [again]
    assert again.client_message_id is not None
    response = asyncio.ensure_future(service.wait_for(again.client_message_id))
    await clock.run_until(response.done)
    assert response.result().success
    assert server.contents() == ["hello"]
    assert cmids(server) == [failed.client_message_id] * 2
    assert recorder.of(again.client_message_id) == [
        ("new", "sending"),
        ("update", "failed"),
        ("update", "sending"),
        ("update", "sent"),
    ]


async def test_sends_reach_the_server_in_order_whatever_fails_in_between(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    rng = random.Random(7)
    service = make_service()
    await service.start_polling()
    expected = [f"m{i:02d}" for i in range(40)]
    for text in expected:
        route = rng.choice(["send", "batch", "*"])
        match rng.randrange(8):
            case 0:
                server.fail(route, "connect", times=rng.randint(1, 3))
            case 1:
                server.fail(route, status=rng.choice([500, 502, 503]))
            case 2:
                server.fail(route, status=429, retry_after=rng.uniform(0, 5))
            case 3:
                server.fail(route, "read_error")
            case 4:
                server.fail(route, "lost_ack", times=rng.randint(1, 2))
            case _:
                pass
        service.enqueue(text)
        await clock.run_for(rng.uniform(0, 4))
    await clock.run_until(lambda: not service.pending, within=3600)
    assert server.contents() == expected
    assert service.stats.send_retries > 5
    assert server.seen("batch"), "a backlog goes through the batch endpoint"


async def test_the_offline_queue_survives_a_restart(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory, state_path: str
) -> None:
    first = make_service(state_path=state_path)
    await first.start_polling()
    server.down = True
    queued = []
    for word in ("one", "two", "three"):
        queued.append(first.enqueue(word))
        await clock.run_for(2)
    await clock.run_for(20)
    assert first.connection_status.state == "offline"
    assert [m.content for m in first.pending] == ["one", "two", "three"]
    await first.aclose()
    saved = json.loads(Path(state_path).read_text())
    assert [item["client_message_id"] for item in saved["pending"]] == [m.client_message_id for m in queued]
    assert not server.stored()

    server.down = False
    since_restart = len(server.requests)
    second = make_service(state_path=state_path)
    assert [(m.content, m.status, m.client_message_id) for m in second.pending] == [
        (m.content, "sending", m.client_message_id) for m in queued
    ]
    second.enqueue("four")
    recorder = Recorder(second, clock)
    await second.start_polling()
    await clock.run_until(lambda: not second.pending, within=60)

    assert server.contents() == ["one", "two", "three", "four"]
    after = server.requests[since_restart:]
    batches = [r for r in after if r.route == "batch"]
    assert [r.route for r in after if r.route in ("send", "batch")] == ["batch"]
    assert [m["client_message_id"] for m in batches[0].body["messages"]][:3] == [m.client_message_id for m in queued]
    assert json.loads(Path(state_path).read_text())["pending"] == []
    # The restarted app hears each of them acknowledged, and none of them twice.
    updates = [e.message.content for e in recorder.events if e.kind == "update" and e.message.status == "sent"]
    assert updates == ["one", "two", "three", "four"]


async def test_a_restart_after_a_lost_ack_does_not_store_twice(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory, state_path: str
) -> None:
    first = make_service(state_path=state_path)
    await first.start_sending()
    server.fail("send", "lost_ack")
    message = first.enqueue("hello")
    await clock.run_until(lambda: len(server.seen("send")) == 1)
    server.down = True
    await clock.run_for(5)
    await first.aclose()
    assert len(server.stored()) == 1

    server.down = False
    second = make_service(state_path=state_path)
    await second.start_polling()
    await clock.run_until(lambda: not second.pending, within=60)
    assert server.contents() == ["hello"]
    assert set(cmids(server)) == {message.client_message_id}


async def test_a_backlog_larger_than_the_server_batch_limit_goes_one_by_one(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    server.batch_limit = 2
    service = make_service()
    for i in range(5):
        service.enqueue(f"m{i}")
    await service.start_polling()
    await clock.run_until(lambda: not service.pending, within=60)
    assert server.contents() == [f"m{i}" for i in range(5)]
    assert len(server.seen("batch")) == 1 and len(server.seen("send")) == 5


async def test_the_sender_can_start_before_the_poller(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service()
    await service.start_sending()
    service.enqueue("hello")
    await clock.run_until(lambda: not service.pending)
    await service.start_polling()
    server.post(SESSION, "answer")
    await clock.run_for(1)
    assert server.seen("poll"), "start_polling after start_sending must start the poller"
    assert service.connection_status.polling_active
