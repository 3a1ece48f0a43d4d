"""The ``Storage`` protocol and the records it deals in.

Cursor invariant: every session has a change sequence ``head``. Each insert of a message and
each update of one (delivered, read, content) takes ``head + 1`` *inside the write transaction*
and stores it as the message's ``change_seq``; writes to one session are serialised, so
sequence numbers commit in order. A poller that asks for ``change_seq > c`` therefore never
skips a row that commits late and never sees one change twice, and each message appears once,
in its latest state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

Role = Literal["member", "operator", "admin"]
MessageType = Literal["user", "assistant"]
ROLES: tuple[Role, ...] = ("member", "operator", "admin")


@dataclass(frozen=True, slots=True)
class User:
    """Someone who holds a token."""

    id: str
    name: str
    role: Role
    created_at: datetime

    @property
    def sees_all_sessions(self) -> bool:
        """Operators and admins see and answer every session."""
        return self.role in ("operator", "admin")


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


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to append; already validated by the caller."""

    session_id: str
    type: MessageType
    content: str
    client_message_id: str | None = None
    metadata: dict[str, Any] | None = None
    client_name: str | None = None


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


class Storage(Protocol):
    """Durable state of the server. Every method is atomic; refusals raise ``PollchatError``."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def ping(self) -> None:
        """Raise if storage cannot answer."""
        ...

    def on_change(self, listener: Callable[[str, int | None], None]) -> None:
        """Call ``listener(session_id, head)`` for changes committed by *other* processes.

        ``"*"`` means "any session": notifications may have been lost, re-read everything.
        A single-process backend never calls it.
        """
        ...

    def on_token_change(self, listener: Callable[[str | None], None]) -> None:
        """Call ``listener(user_id)`` once a user's token or role changed (rotated, revoked, put).

        Changes made through this storage are announced right after their commit; on a shared
        database, changes committed by other processes are announced as they arrive. ``None``
        means "any user": announcements may have been lost, forget every cached token.
        """
        ...

    # users
    async def create_user(self, *, name: str, role: Role, token_hash: str, now: datetime) -> User:
        """Store a new user; a taken name raises ``Conflict``."""
        ...

    async def put_user(self, *, name: str, role: Role, token_hash: str, now: datetime) -> User:
        """Create the user, or set its role and token if the name exists."""
        ...

    async def user_by_token_hash(self, token_hash: str) -> User | None:
        """The user holding a token, if any."""
        ...

    async def rotate_token(self, user_id: str, *, token_hash: str) -> User:
        """Give the user a new token hash; its old token stops working.

        An unknown user raises ``NotFound``; a hash another user holds raises ``Conflict``.
        """
        ...

    async def revoke_token(self, user_id: str) -> User:
        """Leave the user without a working token until one is rotated in; unknown: ``NotFound``.

        The stored hash becomes ``revoked:<user id>``: unique like every hash, and never equal
        to a SHA-256 hex digest, so no token can match it.
        """
        ...

    async def list_users(self) -> list[User]:
        """Every user, oldest first."""
        ...

    async def has_admin(self) -> bool:
        """Whether any user has role admin."""
        ...

    # sessions
    async def create_session(
        self, *, session_id: str, owner_id: str, client_name: str | None, now: datetime
    ) -> Session:
        """Store a new empty session; an id in use raises ``Conflict``."""
        ...

    async def get_session(self, session_id: str) -> Session | None:
        """One session, whoever owns it."""
        ...

    async def list_sessions(
        self, *, owner_id: str | None, status: str | None, inactive_before: datetime, limit: int
    ) -> list[Session]:
        """Sessions, newest activity first; ``owner_id`` None means all of them."""
        ...

    async def update_session(
        self, session_id: str, *, closed: bool | None, client_name: str | None, now: datetime
    ) -> Session:
        """Change a session's status or client name."""
        ...

    # messages
    async def append(self, items: Sequence[NewMessage], *, author: User, now: datetime) -> list[Appended]:
        """Store messages in order, in one transaction; each succeeds or fails on its own.

        A session that does not exist is created for ``author``. A session the author may not
        see yields ``NotFound``, a closed one ``Conflict``. A ``client_message_id`` already
        stored by the author in that session yields the stored message with ``created=False``.
        """
        ...

    async def changes(self, session_id: str, *, after: int, limit: int) -> Page:
        """Messages whose ``change_seq`` is above ``after``, oldest change first."""
        ...

    async def get_message(self, message_id: str) -> Message | None:
        """One message by id."""
        ...

    async def mark_delivered(self, session_id: str, message_ids: Sequence[str], *, now: datetime) -> int:
        """Set delivered on those messages not yet delivered, bumping each. Returns the head."""
        ...

    async def mark_read(self, session_id: str, *, message_type: MessageType, up_to_seq: int, now: datetime) -> int:
        """Set read (and delivered) on ``message_type`` messages created at or before ``up_to_seq``.

        Returns the head after the change.
        """
        ...

    async def edit(self, message_id: str, *, content: str, now: datetime) -> Message:
        """Replace a message's content (bumps its change sequence)."""
        ...

    async def pending_user_messages(self, *, since: datetime, limit: int) -> list[Message]:
        """Undelivered ``user`` messages in open sessions, created after ``since``, oldest first."""
        ...
