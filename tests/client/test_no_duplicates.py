"""Seed test 5: no message is handed to the application twice, whatever the server or a restart repeats."""

from __future__ import annotations

from collections import Counter

from pollchat.client import MessageEvent, PollingStrategy
from tests.client.conftest import SESSION, FakeClock, FakeServer, Recorder, ServiceFactory


def assert_each_change_once(events: list[MessageEvent]) -> None:
    """At most one ``new`` per message, and never the same state of a message twice in a row."""
    news = Counter(e.message.id for e in events if e.kind == "new")
    assert all(count == 1 for count in news.values()), news
    last: dict[str, tuple[str, str, str | None]] = {}
    for event in events:
        key = event.message.client_message_id or event.message.id
        assert last.get(key) != event.message.version, f"handed twice: {event}"
        last[key] = event.message.version


async def chat_for_a_while(clock: FakeClock, server: FakeServer, service_enqueue: object) -> list[str]:
    """Others post, we post, messages change; returns the others' contents in storage order."""
    theirs = []
    for i in range(6):
        theirs.append(f"theirs {i}")
        posted = server.post(SESSION, theirs[-1])
        if callable(service_enqueue):
            service_enqueue(f"mine {i}")
        await clock.run_for(3)
        if i % 2 == 0:
            server.mark_delivered(posted["id"])
        if i == 3:
            server.edit(posted["id"], "theirs 3, edited")
        await clock.run_for(4)
    await clock.run_for(60)
    return theirs


async def test_a_server_repeating_old_messages_hands_each_once(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    server.repeat_old = True
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    theirs = await chat_for_a_while(clock, server, service.enqueue)

    events = recorder.events
    assert_each_change_once(events)
    assert [e.message.content for e in events if e.kind == "new"] == [
        text for i in range(6) for text in (f"mine {i}", f"theirs {i}")
    ]
    assert len(theirs) == 6
    # Their messages: one "new" each; updates only for real changes (delivered, edited).
    updates = [(e.message.content, e.message.status) for e in events if e.kind == "update" and e.message.type != "user"]
    assert updates == [
        ("theirs 0", "delivered"),
        ("theirs 2", "delivered"),
        ("theirs 3, edited", "sent"),
        ("theirs 4", "delivered"),
    ]
    # Ours: sending, then sent once each.
    mine = [(e.kind, e.message.status) for e in events if e.message.type == "user"]
    assert mine == [("new", "sending"), ("update", "sent")] * 6


async def test_duplicate_pages_are_handed_once(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service(strategy=PollingStrategy(mode="short"))
    recorder = Recorder(service, clock)
    await service.start_polling()
    for i in range(5):
        server.post(SESSION, f"theirs {i}")
        await clock.run_for(2)
        server.replay_pages = 3  # a cache or proxy answering the last page again
        await clock.run_for(10)
    assert recorder.new_contents() == [f"theirs {i}" for i in range(5)]
    assert_each_change_once(recorder.events)
    assert all(e.kind == "new" for e in recorder.events)


async def test_own_messages_are_shown_once_and_their_status_moves_forward(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    message = service.enqueue("hello")
    assert message.status == "sending" and message.id.startswith("local:")
    await clock.settle()
    stored = server.stored()[0]
    assert service.pending == []
    server.mark_delivered(stored.id)
    await clock.settle()
    server.mark_read(stored.id)
    await clock.settle()
    assert message.client_message_id is not None
    assert recorder.of(message.client_message_id) == [
        ("new", "sending"),
        ("update", "sent"),
        ("update", "delivered"),
        ("update", "read"),
    ]
    assert [e.message.id for e in recorder.events[1:]] == [stored.id] * 3


async def test_status_never_goes_back_when_a_poll_overtakes_the_ack(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    """The other side fetches each message at once: the poll says delivered, the ack says sent."""
    server.auto_deliver = True
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    server.fail("send", "lost_ack")  # the first one is acknowledged only by its retry
    queued = []
    for i in range(4):
        queued.append(service.enqueue(f"mine {i}"))
        await clock.run_for(5)
    rank = {"sending": 0, "sent": 1, "delivered": 2, "read": 3}
    for message in queued:
        assert message.client_message_id is not None
        statuses = [status for _, status in recorder.of(message.client_message_id)]
        assert statuses[0] == "sending" and statuses[-1] == "delivered", statuses
        assert [rank[s] for s in statuses] == sorted({rank[s] for s in statuses}), statuses
    assert server.contents() == [m.content for m in queued]


async def test_changes_are_handed_in_cursor_order(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    ids = [server.post(SESSION, f"m{i}")["id"] for i in range(3)]
    server.edit(ids[2], "m2 edited")
    server.mark_delivered(ids[0])
    server.edit(ids[1], "m1 edited")
    service = make_service()
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.settle()
    # A fresh follower sees each message once, in its latest state, ordered by its latest change.
    assert [(e.kind, e.message.content, e.message.status) for e in recorder.events] == [
        ("new", "m2 edited", "sent"),
        ("new", "m0", "delivered"),
        ("new", "m1 edited", "sent"),
    ]
    server.edit(ids[0], "m0 edited")
    server.mark_read(ids[2])
    server.post(SESSION, "m3")
    await clock.settle()
    assert [(e.kind, e.message.content, e.message.status) for e in recorder.events[3:]] == [
        ("update", "m0 edited", "delivered"),
        ("update", "m2 edited", "read"),
        ("new", "m3", "sent"),
    ]


async def test_a_restart_with_a_state_file_does_not_hand_old_messages_again(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory, state_path: str
) -> None:
    first = make_service(state_path=state_path)
    first_seen = Recorder(first, clock)
    await first.start_polling()
    for i in range(3):
        server.post(SESSION, f"before {i}")
    first.enqueue("mine before")
    await clock.run_for(5)
    await first.aclose()
    # Our own message is shown the moment it is queued; theirs when the poll brings them.
    assert first_seen.new_contents() == ["mine before", "before 0", "before 1", "before 2"]

    server.post(SESSION, "while away 0")  # posted while no client was running
    second = make_service(state_path=state_path)
    second_seen = Recorder(second, clock)
    assert second.cursor == first.cursor
    restart_at = len(server.requests)
    await second.start_polling()
    await clock.run_for(5)
    server.post(SESSION, "after restart")
    await clock.run_for(40)
    assert second_seen.new_contents() == ["while away 0", "after restart"]
    assert_each_change_once(second_seen.events)
    first_poll = server.requests[restart_at]
    assert (first_poll.route, first_poll.params["since"]) == ("poll", first.cursor)


async def test_two_clients_of_one_user_each_see_the_others_messages_once(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    laptop, phone = make_service(), make_service(seed=2)
    on_laptop, on_phone = Recorder(laptop, clock), Recorder(phone, clock)
    await laptop.start_polling()
    await phone.start_polling()
    for i in range(3):
        laptop.enqueue(f"laptop {i}")
        await clock.run_for(2)
        phone.enqueue(f"phone {i}")
        await clock.run_for(2)
    await clock.run_for(40)
    assert on_laptop.new_contents() == [f"{device} {i}" for i in range(3) for device in ("laptop", "phone")]
    assert on_phone.new_contents() == on_laptop.new_contents()
    assert_each_change_once(on_laptop.events)
    assert_each_change_once(on_phone.events)
    assert server.contents() == on_laptop.new_contents()


async def test_a_refused_saved_cursor_starts_over_instead_of_failing_for_ever(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory, state_path: str
) -> None:
    """The state file's cursor is from a server whose data was since reset: the client resyncs."""
    first = make_service(state_path=state_path)
    await first.start_polling()
    for i in range(5):
        server.post(SESSION, f"old {i}")
    await clock.run_for(1)
    await first.aclose()
    assert first.cursor == "c_5"

    reset = FakeServer(clock)
    reset.post(SESSION, "after the reset", user_id="u_alice")
    second = make_service(state_path=state_path, transport=reset.transport)
    recorder = Recorder(second, clock)
    await second.start_polling()
    await clock.run_for(60)
    assert reset.seen("poll")[0].params["since"] == "c_5"
    assert recorder.new_contents() == ["after the reset"]
    assert second.connection_status.state in ("connected", "polling")
    assert second.cursor == "c_1"


async def test_a_refused_cursor_given_by_the_caller_is_reported_not_replaced(
    clock: FakeClock, server: FakeServer, make_service: ServiceFactory
) -> None:
    """``tail --since C`` with a bad C: an error the user sees, not the whole history instead."""
    server.post(SESSION, "history")
    service = make_service(cursor="c_99")
    recorder = Recorder(service, clock)
    await service.start_polling()
    await clock.run_for(30)
    assert recorder.events == []
    status = service.connection_status
    assert status.state == "error" and status.last_error == "`since` is ahead of the session"
    assert {r.params.get("since") for r in server.seen("poll")} == {"c_99"}
