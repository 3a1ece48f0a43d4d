"""The records every layer deals in: users, sessions, messages, pages.

Cursor invariant: every session has a change sequence ``head``. Each insert of a message and
each update of one (delivered, read, content) takes ``head + 1`` *inside the write transaction*
and stores it as the message's ``change_seq``; writes to one session are serialised, so
sequence numbers commit in order. A poller that asks for ``change_seq > c`` therefore never
skips a row that commits late and never sees one change twice, and each message appears once,
in its latest state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Role = Literal["member", "operator", "admin"]
MessageType = Literal["user", "assistant"]
# How a generated reply stands: text still arriving, then ended one of three ways.
Generation = Literal["streaming", "done", "stopped", "failed"]
ROLES: tuple[Role, ...] = ("member", "operator", "admin")


@dataclass(frozen=True, slots=True)
class User:
    """Someone who holds a token."""

    id: str
    name: str
    role: Role
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Session:
    """A conversation, owned by the user who created it."""

    id: str
    owner_id: str
    client_name: str | None
    created_at: datetime
    last_activity: datetime
    closed: bool
    message_count: int
    last_message_id: str | None
    head: int


@dataclass(frozen=True, slots=True)
class Message:
    """A stored message in its latest state."""

    id: str
    session_id: str
    user_id: str
    type: MessageType
    content: str
    timestamp: datetime
    client_message_id: str | None
    metadata: dict[str, Any] | None
    delivered: bool
    read: bool
    created_seq: int
    change_seq: int
    edited_at: datetime | None = None
    reply_to: str | None = None  # the user message an assistant's reply answers
    generation: Generation | None = None  # None: nobody generated this message
    error: str | None = None  # why a ``failed`` generation failed, as a sentence


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to append; already validated by the caller."""

    session_id: str
    type: MessageType
    content: str
    client_message_id: str | None = None
    metadata: dict[str, Any] | None = None
    client_name: str | None = None
    reply_to: str | None = None
    generation: Generation | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of one message of an append: stored, replayed or refused."""

    message: Message | None
    created: bool = False
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Changes of a session after a cursor, oldest first."""

    messages: list[Message]
    head: int
    has_more: bool
    upto: int  # the change sequence this page covers up to: the next cursor
