"""The ``Storage`` protocol: what every backend does, over the records of ``pollchat.domain.records``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from pollchat.domain.records import Appended, Message, MessageType, NewMessage, Page, Role, Session, User


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

    async def server_secret(self) -> bytes:
        """32 random bytes made once per database: the same on every call and every instance."""
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
        stored by the author in that session yields the stored message with ``created=False``
        when content and type match (``rules.is_replay``), else ``Conflict`` with code
        ``idempotency_conflict``, storing nothing.
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
