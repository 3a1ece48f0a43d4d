"""Operations on messages, for every SQL backend (see ``command.py``).

Every write here moves its session's change sequence ``head`` inside the transaction, after
locking the session (``sessions.lock_session`` or ``FOR UPDATE`` on the head): writers of one
session are serialised, so sequence numbers commit in order and a poller following
``change_seq`` never skips nor repeats a change (``pollchat.domain.records``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from pollchat.clock import isoformat, parse_iso
from pollchat.domain.errors import Conflict, Forbidden, no_message, no_session
from pollchat.domain.ids import new_message_id
from pollchat.domain.records import Appended, Message, MessageType, NewMessage, Page, User
from pollchat.domain.rules import is_replay, may_see_session, may_speak_as
from pollchat.storage.command import HeadMoved, Operation, count, execute, fetch_all, fetch_one, placeholders
from pollchat.storage.rows import MESSAGE_COLUMNS, message_of
from pollchat.storage.sessions import lock_session

_PREFIXED_COLUMNS = ", ".join("m." + column.strip() for column in MESSAGE_COLUMNS.split(","))


def append(items: Sequence[NewMessage], *, author: User, now: datetime) -> Operation[list[Appended]]:
    """Store ``items`` in order; each succeeds or fails on its own (``Appended.error``)."""
    stamp = isoformat(now)
    if len(items) > 1:
        yield from _lock_sessions(items, author=author, stamp=stamp)
    results: list[Appended] = []
    heads: dict[str, int] = {}
    for item in items:
        result = yield from _append_one(item, author=author, stamp=stamp)
        results.append(result)
        if result.created and result.message is not None:
            heads[item.session_id] = result.message.change_seq
    for session_id, head in heads.items():
        yield HeadMoved(session_id, head)
    return results


# The statements of a send, made once: a constant string is hashed once, for the drivers'
# translation caches and SQLite's statement cache alike.
_FIND_SENT = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE user_id = ? AND session_id = ? AND client_message_id = ?"
# Inserted unless the author's client_message_id is already stored in the session: then it
# inserts nothing, and the stored message answers (``_replay``). Only that index may conflict.
# Counted rather than RETURNING: on SQLite a RETURNING costs more than the insert itself.
_INSERT = (
    f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, NULL, ?, ?, ?)"
    " ON CONFLICT (user_id, session_id, client_message_id) WHERE client_message_id IS NOT NULL DO NOTHING"
)
# The head and the session's counters in one statement: a SQLite group holds the write lock for
# the sum of its statements, so each one saved is saved for every caller waiting.
_COUNT = (
    "UPDATE sessions SET head = ?, message_count = message_count + 1, last_message_id = ?, last_activity = ?"
    " WHERE id = ?"
)


def _lock_sessions(items: Sequence[NewMessage], *, author: User, stamp: str) -> Operation[None]:
    """Lock (creating if new) every session of a batch that spans several, in one global order."""
    first: dict[str, NewMessage] = {}
    for item in items:
        first.setdefault(item.session_id, item)
    if len(first) > 1:
        # Sorted ids: two batches naming the same sessions in different orders would otherwise
        # deadlock, each holding a lock the other waits for.
        for session_id in sorted(first):
            yield from lock_session(
                session_id, owner_id=author.id, client_name=first[session_id].client_name, stamp=stamp
            )


def _append_one(item: NewMessage, *, author: User, stamp: str) -> Operation[Appended]:
    owner_id, closed, head = yield from lock_session(
        item.session_id, owner_id=author.id, client_name=item.client_name, stamp=stamp
    )
    if not may_see_session(author, owner_id):
        return Appended(None, error=no_session(item.session_id))
    if not may_speak_as(author, item.type, owner_id):
        return Appended(
            None, error=Forbidden("in another's session, staff post as `assistant` only", code="type_not_allowed")
        )
    if closed:
        # A replay is answered before the closed check: the same key always answers with the
        # first message, also when the session closed after it was stored (a lost acknowledgement).
        replay = yield from _find_sent(item, author)
        return replay or Appended(None, error=Conflict("the session is closed", code="session_closed"))
    # The session is locked: its head is ours to move, and no copy of this send can race us.
    message_id, seq = new_message_id(), int(head) + 1
    metadata = json.dumps(item.metadata, separators=(",", ":")) if item.metadata is not None else None
    inserted = yield count(
        _INSERT,
        message_id,
        item.session_id,
        author.id,
        item.type,
        item.content,
        stamp,
        item.client_message_id,
        metadata,
        seq,
        seq,
        item.reply_to,
        item.generation,
        item.error,
    )
    if not inserted:
        replay = yield from _find_sent(item, author)
        if replay is None:
            raise RuntimeError("an insert refused by the idempotency index, yet no first send is stored")
        return replay
    yield execute(_COUNT, seq, message_id, stamp, item.session_id)
    return Appended(_stored(item, message_id=message_id, author=author, stamp=stamp, seq=seq), created=True)


def _find_sent(item: NewMessage, author: User) -> Operation[Appended | None]:
    """The answer to a send whose ``client_message_id`` is already stored, or ``None``."""
    if item.client_message_id is None:
        return None
    row = yield fetch_one(_FIND_SENT, author.id, item.session_id, item.client_message_id)
    return _replay(item, message_of(row)) if row is not None else None


def _stored(item: NewMessage, *, message_id: str, author: User, stamp: str, seq: int) -> Message:
    """The message just inserted for ``item``, as a read would return it (without reading it)."""
    return Message(
        id=message_id,
        session_id=item.session_id,
        user_id=author.id,
        type=item.type,
        content=item.content,
        timestamp=parse_iso(stamp),
        client_message_id=item.client_message_id,
        metadata=item.metadata,
        delivered=False,
        read=False,
        created_seq=seq,
        change_seq=seq,
        reply_to=item.reply_to,
        generation=item.generation,
        error=item.error,
    )


def _replay(item: NewMessage, stored: Message) -> Appended:
    """The answer to a send whose ``client_message_id`` is already stored: the first message, or a conflict."""
    if is_replay(item, stored):
        return Appended(stored, created=False)
    return Appended(
        None,
        error=Conflict(
            "this client_message_id was already sent with another content or type", code="idempotency_conflict"
        ),
    )


def changes(session_id: str, *, after: int, limit: int) -> Operation[Page]:
    """Messages whose ``change_seq`` is above ``after``, oldest change first."""
    # The head is read first: every row with change_seq <= head committed with it, so bounding
    # the rows by it gives a consistent page without a read transaction.
    head_row = yield fetch_one("SELECT head FROM sessions WHERE id = ?", session_id)
    head = int(head_row[0]) if head_row is not None else 0
    rows = yield fetch_all(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND change_seq > ? AND change_seq <= ?"
        " ORDER BY change_seq LIMIT ?",
        session_id,
        after,
        head,
        limit + 1,
    )
    messages = [message_of(row) for row in rows[:limit]]
    has_more = len(rows) > limit
    return Page(messages=messages, head=head, has_more=has_more, upto=messages[-1].change_seq if has_more else head)


def get_message(message_id: str) -> Operation[Message | None]:
    """One message by id."""
    row = yield fetch_one(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", message_id)
    return message_of(row) if row is not None else None


def _locked_head(session_id: str) -> Operation[int]:
    row = yield fetch_one("SELECT head FROM sessions WHERE id = ? FOR UPDATE", session_id)
    return int(row[0]) if row is not None else 0


def _bump_each(session_id: str, *, head: int, message_ids: Sequence[str], sets: str) -> Operation[int]:
    """Apply ``sets`` to each message, giving each the next sequence number after ``head``."""
    for message_id in message_ids:
        head += 1
        yield execute(f"UPDATE messages SET {sets}, change_seq = ? WHERE id = ?", head, message_id)
    if message_ids:
        yield execute("UPDATE sessions SET head = ? WHERE id = ?", head, session_id)
        yield HeadMoved(session_id, head)
    return head


def mark_delivered(session_id: str, message_ids: Sequence[str]) -> Operation[int]:
    """Set delivered on those messages not yet delivered, bumping each. Returns the head."""
    head = yield from _locked_head(session_id)
    # Each id once, in the order given: a repeated id is one change, not two.
    wanted = list(dict.fromkeys(message_ids))
    if not wanted:
        return head
    rows = yield fetch_all(
        f"SELECT id FROM messages WHERE session_id = ? AND delivered = 0 AND id IN ({placeholders(len(wanted))})",
        session_id,
        *wanted,
    )
    pending = {row[0] for row in rows}
    pending_ids = [m for m in wanted if m in pending]
    return (yield from _bump_each(session_id, head=head, message_ids=pending_ids, sets="delivered = 1"))


def mark_read(session_id: str, *, message_type: MessageType, up_to_seq: int) -> Operation[int]:
    """Set read (and delivered) on ``message_type`` messages created at or before ``up_to_seq``."""
    head = yield from _locked_head(session_id)
    rows = yield fetch_all(
        "SELECT id FROM messages WHERE session_id = ? AND type = ? AND created_seq <= ? AND read = 0"
        " ORDER BY created_seq",
        session_id,
        message_type,
        up_to_seq,
    )
    unread = [row[0] for row in rows]
    return (yield from _bump_each(session_id, head=head, message_ids=unread, sets="read = 1, delivered = 1"))


def edit(message_id: str, *, content: str, now: datetime) -> Operation[Message]:
    """Replace a message's content (bumps its change sequence); unknown: ``NotFound``."""
    row = yield fetch_one("SELECT session_id FROM messages WHERE id = ?", message_id)
    if row is None:
        raise no_message()
    session_id = row[0]
    (head,) = yield fetch_one("UPDATE sessions SET head = head + 1 WHERE id = ? RETURNING head", session_id)
    row = yield fetch_one(
        f"UPDATE messages SET content = ?, edited_at = ?, change_seq = ? WHERE id = ? RETURNING {MESSAGE_COLUMNS}",
        content,
        isoformat(now),
        head,
        message_id,
    )
    yield HeadMoved(session_id, head)
    return message_of(row)


def pending_user_messages(*, since: datetime, limit: int) -> Operation[list[Message]]:
    """Undelivered ``user`` messages in open sessions, created after ``since``, oldest first."""
    rows = yield fetch_all(
        f"SELECT {_PREFIXED_COLUMNS} FROM messages m JOIN sessions s ON s.id = m.session_id"
        " WHERE m.delivered = 0 AND m.type = 'user' AND m.created_at >= ? AND s.closed = 0"
        " ORDER BY m.created_at LIMIT ?",
        isoformat(since),
        limit,
    )
    return [message_of(row) for row in rows]
