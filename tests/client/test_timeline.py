"""``Timeline``: what a chat front end shows, built from the service's events in cursor order."""

from __future__ import annotations

from dataclasses import replace

from pollchat.client.models import ChatMessage, MessageEvent
from pollchat.client.timeline import Timeline, clock, parse_time


def stored(
    id: str, content: str, second: int, *, type: str = "assistant", cmid: str | None = None, user: str = "u_op"
) -> ChatMessage:
    return ChatMessage(
        id=id,
        type="assistant" if type == "assistant" else "user",
        content=content,
        timestamp=f"2026-01-01T12:00:{second:02d}Z",
        session_id="s",
        status="sent",
        client_message_id=cmid,
        user_id=user,
    )


def local(cmid: str, content: str) -> ChatMessage:
    return ChatMessage(
        id=f"local:{cmid}",
        type="user",
        content=content,
        timestamp="2026-01-01T12:00:30+00:00",
        session_id="s",
        status="sending",
        client_message_id=cmid,
    )


def contents(timeline: Timeline) -> list[str]:
    return [e.message.content if e.message else f"[{e.notice}]" for e in timeline.entries()]


def test_timeline_orders_history_by_time_not_by_change() -> None:
    """History arrives in change order: an edited message comes last on the cursor, but was written first."""
    timeline = Timeline()
    first = stored("m1", "first", 1)
    timeline.apply(MessageEvent("new", stored("m2", "second", 2)))
    timeline.apply(MessageEvent("new", replace(first, content="first, edited", edited_at="2026-01-01T12:05:00Z")))
    assert contents(timeline) == ["first, edited", "second"]


def test_timeline_keeps_our_message_once_from_sending_to_read() -> None:
    timeline = Timeline()
    sending = local("c1", "hello")
    assert timeline.apply(MessageEvent("new", sending)).kind == "new"
    acked = stored("m9", "hello", 31, type="user", cmid="c1", user="u_me")
    change = timeline.apply(MessageEvent("update", acked))
    assert (change.kind, change.ours) == ("status", True)
    assert timeline.apply(MessageEvent("update", replace(acked, status="read"))).kind == "status"
    (entry,) = timeline.entries()
    assert entry.ours and entry.message is not None and entry.message.status == "read"


def test_timeline_tells_an_edit_from_a_status_change_and_from_text_that_grows() -> None:
    """An edit from elsewhere used to look like a status tick."""
    timeline = Timeline()
    message = stored("m1", "hi", 1, type="user", user="u_me")
    timeline.apply(MessageEvent("new", message))
    assert timeline.apply(MessageEvent("update", replace(message, status="delivered"))).kind == "status"
    edited = replace(message, status="delivered", content="hi there", edited_at="2026-01-01T12:01:00Z")
    assert timeline.apply(MessageEvent("update", edited)).kind == "edit"
    assert timeline.entries()[0].edited
    reply = stored("m2", "Ech", 2)
    timeline.apply(MessageEvent("new", reply))
    assert timeline.apply(MessageEvent("update", replace(reply, content="Echo: hi"))).kind == "content"


def test_timeline_puts_our_unsent_messages_last_and_notices_after_what_was_shown() -> None:
    timeline = Timeline()
    timeline.apply(MessageEvent("new", local("c1", "waiting")))
    timeline.apply(MessageEvent("new", stored("m1", "earlier", 1)))
    timeline.notice("a notice")
    timeline.apply(MessageEvent("new", stored("m2", "later", 2)))
    assert contents(timeline) == ["earlier", "[a notice]", "later", "waiting"]


def test_timeline_shows_our_messages_from_other_clients_as_ours_once_it_knows_who_we_are() -> None:
    timeline = Timeline()
    timeline.apply(MessageEvent("new", stored("m1", "from my phone", 1, type="user", cmid="x", user="u_me")))
    assert not timeline.entries()[0].ours
    timeline.set_me("u_me")
    assert timeline.entries()[0].ours
    other = timeline.apply(MessageEvent("new", stored("m2", "not mine", 2, type="user", user="u_other")))
    assert not other.ours


def test_timeline_lists_failed_messages_of_ours_for_retry() -> None:
    timeline = Timeline()
    sending = local("c1", "too late")
    timeline.apply(MessageEvent("new", sending))
    timeline.apply(MessageEvent("update", sending.with_status("failed", "the session is closed")))
    assert [m.content for m in timeline.failed()] == ["too late"]
    timeline.apply(MessageEvent("update", sending))  # /retry: sending again
    assert timeline.failed() == []


def test_clock_reads_both_spellings_of_utc() -> None:
    assert parse_time("2026-01-01T12:00:00Z") == parse_time("2026-01-01T12:00:00+00:00")
    assert parse_time("garbage") is None
    assert clock("garbage") == "--:--"
    assert len(clock("2026-01-01T12:00:00Z", seconds=True)) == 8
