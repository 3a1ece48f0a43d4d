"""What a chat front end shows: each message once, in time order, with its latest status.

The service hands messages over in cursor (change) order, and one message several times: our
own first as ``local:<client_message_id>`` with status ``sending``, then under its server id as
it is acknowledged, delivered, read or edited. The timeline keys each message once (ours by
``client_message_id``, everyone else's by id), keeps its latest state, and tells what a change
was (a new message, a status, an edit, text that grew), so a screen can update a line in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pollchat.client.models import ChatMessage, MessageEvent

ChangeKind = Literal["new", "status", "edit", "content", "none"]
STATUS_MARKS = {"sending": "…", "sent": "✓", "delivered": "✓✓", "read": "✓✓ read", "failed": "✗ failed"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(timestamp: str) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (UTC when it names no zone), or None."""
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clock(timestamp: str, *, seconds: bool = False) -> str:
    """A timestamp as local wall-clock time, ``HH:MM`` (``HH:MM:SS`` with ``seconds``)."""
    moment = parse_time(timestamp)
    if moment is None:
        return "--:--:--" if seconds else "--:--"
    return moment.astimezone().strftime("%H:%M:%S" if seconds else "%H:%M")


@dataclass(frozen=True, slots=True)
class Change:
    """What one event changed: ``kind`` of change to the entry ``key``, now showing ``message``."""

    kind: ChangeKind
    key: str
    message: ChatMessage
    ours: bool


@dataclass(slots=True)
class Entry:
    """One line of the timeline: a message in its latest state, or a notice of the front end's own."""

    key: str
    seq: int  # arrival order, which breaks ties and orders what has no server time yet
    message: ChatMessage | None = None
    notice: str | None = None
    at: datetime = _EPOCH
    ours: bool = False

    @property
    def edited(self) -> bool:
        """Whether the message was edited after it was sent."""
        return self.message is not None and self.message.edited_at is not None

    def order(self) -> tuple[int, datetime, int]:
        """The sort key: stored messages and notices by time; ours not yet stored last, as typed."""
        if self.message is not None and self.message.id.startswith("local:"):
            return (1, _EPOCH, self.seq)
        return (0, self.at, self.seq)


class Timeline:
    """The messages of one session as a person reads them: each once, in time order, updated in place."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._key_of_id: dict[str, str] = {}
        self._ours: set[str] = set()  # client_message_ids this front end sent (or found in its outbox)
        self._seq = 0
        self._latest = _EPOCH  # the newest server time seen: notices go after it
        self.me: str | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        """Every entry in time order."""
        return sorted(self._entries.values(), key=Entry.order)

    def failed(self) -> list[ChatMessage]:
        """Our messages the server refused, in the order they were typed."""
        return [
            e.message
            for e in sorted(self._entries.values(), key=lambda e: e.seq)
            if e.ours and e.message is not None and e.message.status == "failed"
        ]

    def set_me(self, user_id: str | None) -> None:
        """Who we are: messages of this user (from any of its clients) are shown as ours."""
        self.me = user_id
        if user_id is not None:
            for entry in self._entries.values():
                if entry.message is not None and entry.message.user_id == user_id:
                    entry.ours = True

    def apply(self, event: MessageEvent) -> Change:
        """Take one event from the service; returns what it changed."""
        message = event.message
        cmid = message.client_message_id
        if message.id.startswith("local:") and cmid:
            self._ours.add(cmid)
        key = self._key_of_id.get(message.id)
        if key is None:
            key = f"c:{cmid}" if cmid in self._ours else f"m:{message.id}"
            self._key_of_id[message.id] = key
        entry = self._entries.get(key)
        ours = key.startswith("c:") or (self.me is not None and message.user_id == self.me)
        if entry is None:
            entry = self._entries[key] = Entry(key=key, seq=self._next_seq(), ours=ours)
            kind: ChangeKind = "new"
        else:
            kind = self._kind(entry.message, message)
        entry.message = message
        entry.ours = entry.ours or ours
        moment = None if message.id.startswith("local:") else parse_time(message.timestamp)
        if moment is not None:
            entry.at = moment
            self._latest = max(self._latest, moment)
        return Change(kind=kind, key=key, message=message, ours=entry.ours)

    def notice(self, text: str) -> Entry:
        """Add a line of the front end's own (a /status answer, a warning) after what is shown so far."""
        # At the newest server time seen, not at our clock's now: a clock ahead of the server's
        # would put messages that arrive later above the notice.
        seq = self._next_seq()
        entry = self._entries[f"n:{seq}"] = Entry(key=f"n:{seq}", seq=seq, notice=text, at=self._latest)
        return entry

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @staticmethod
    def _kind(before: ChatMessage | None, after: ChatMessage) -> ChangeKind:
        if before is None:
            return "new"
        if after.edited_at != before.edited_at:
            return "edit"
        if after.content != before.content:
            # Text that grows without an edit mark: a reply still being generated.
            return "content"
        if after.status != before.status or after.error != before.error:
            return "status"
        return "none"
