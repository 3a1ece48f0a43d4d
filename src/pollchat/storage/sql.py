"""The ``Storage`` protocol over the shared operations, written once; a driver says how to run them.

``SQLStorage`` maps each storage call to its operation (``users.py``, ``sessions.py``,
``messages.py``) and hands it to its driver (``sqlite.py``, ``postgres.py``) as a read or a
write. The driver runs reads on a connection and writes inside a transaction, and says which of
its exceptions mean the database cannot answer; those reach callers as ``Unavailable``
(``failure.py``), the same for both backends. After a write commits, the token changes it
yielded are told to this process's listeners (other processes hear them through the driver).
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TypeVar

from pollchat.domain.records import Appended, Message, MessageType, NewMessage, Page, Role, Session, User
from pollchat.storage import messages, sessions, users
from pollchat.storage.command import Operation, TokenChanged, execute, fetch_one
from pollchat.storage.failure import as_unavailable

T = TypeVar("T")
ChangeListener = Callable[[str, "int | None"], None]
TokenListener = Callable[["str | None"], None]

SECRET_BYTES = 32


def ping() -> Operation[None]:
    """Raise unless the database answers."""
    yield fetch_one("SELECT 1")


def server_secret(candidate: str) -> Operation[str]:
    """The database's secret (hex), made from ``candidate`` if it has none yet."""
    # Insert if absent, then read: an instance racing us waits for our insert to commit (or we
    # for its), and both then read the one that won.
    yield execute(
        "INSERT INTO server_secrets (name, value) VALUES ('server', ?) ON CONFLICT (name) DO NOTHING", candidate
    )
    (value,) = yield fetch_one("SELECT value FROM server_secrets WHERE name = 'server'")
    return str(value)


class SQLStorage(abc.ABC):
    """A ``Storage`` whose every call is one shared operation run by the driver a subclass supplies."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []
        self._token_listeners: list[TokenListener] = []
        self._secret: bytes | None = None

    # the driver

    @abc.abstractmethod
    def _is_outage(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the database cannot answer now (rather than a bug)."""

    @abc.abstractmethod
    async def _run_read(self, operation: Operation[T]) -> T:
        """Run an operation that only reads."""

    @abc.abstractmethod
    async def _run_write(self, operation: Operation[T], *, weight: int) -> tuple[T, list[TokenChanged]]:
        """Run an operation in a transaction; answer once it committed, with the token changes it yielded.

        ``weight`` is roughly how many rows it writes.
        """

    # Plain try blocks rather than ``failure.outages_unavailable``: every send and poll passes here.

    async def _read(self, operation: Operation[T]) -> T:
        try:
            return await self._run_read(operation)
        except Exception as exc:
            refusal = as_unavailable(exc, self._is_outage)
            if refusal is None:
                raise
            raise refusal from exc

    async def _write(self, operation: Operation[T], *, weight: int = 1) -> T:
        try:
            value, tokens = await self._run_write(operation, weight=weight)
        except Exception as exc:
            refusal = as_unavailable(exc, self._is_outage)
            if refusal is None:
                raise
            raise refusal from exc
        if tokens:
            self._tokens_changed(change.user_id for change in tokens)
        return value

    # announcements

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(session_id, head)`` for changes the driver hears of (see ``Storage``)."""
        self._listeners.append(listener)

    def on_token_change(self, listener: TokenListener) -> None:
        """Call ``listener(user_id)`` after a token change commits (see ``Storage``)."""
        self._token_listeners.append(listener)

    def _fan_out(self, session_id: str, head: int | None = None) -> None:
        for listener in self._listeners:
            listener(session_id, head)

    def _tokens_changed(self, user_ids: Iterable[str | None]) -> None:
        for user_id in user_ids:
            for listener in self._token_listeners:
                listener(user_id)

    # the database

    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers."""
        await self._read(ping())

    async def server_secret(self) -> bytes:
        """32 random bytes made once per database, the same for every instance on it."""
        if self._secret is None:
            value = await self._write(server_secret(secrets.token_hex(SECRET_BYTES)))
            self._secret = bytes.fromhex(value)
        return self._secret

    # users

    async def create_user(self, *, name: str, role: Role, token_hash: str, now: datetime) -> User:
        """Store a new user; a taken name raises ``Conflict``."""
        return await self._write(users.create_user(name=name, role=role, token_hash=token_hash, now=now))

    async def put_user(self, *, name: str, role: Role, token_hash: str, now: datetime) -> User:
        """Create the user, or set its role and token if the name exists."""
        return await self._write(users.put_user(name=name, role=role, token_hash=token_hash, now=now))

    async def rotate_token(self, user_id: str, *, token_hash: str) -> User:
        """Give the user a new token hash; its old token stops working."""
        return await self._write(users.set_token(user_id, token_hash))

    async def revoke_token(self, user_id: str) -> User:
        """Leave the user without a working token until one is rotated in."""
        return await self._write(users.set_token(user_id, None))

    async def user_by_token_hash(self, token_hash: str) -> User | None:
        """The user holding a token, if any."""
        return await self._read(users.user_by_token_hash(token_hash))

    async def list_users(self) -> list[User]:
        """Every user, oldest first."""
        return await self._read(users.list_users())

    async def has_admin(self) -> bool:
        """Whether any user has role admin."""
        return await self._read(users.has_admin())

    # sessions

    async def create_session(
        self, *, session_id: str, owner_id: str, client_name: str | None, now: datetime
    ) -> Session:
        """Store a new empty session; an id in use raises ``Conflict``."""
        operation = sessions.create_session(session_id=session_id, owner_id=owner_id, client_name=client_name, now=now)
        return await self._write(operation)

    async def get_session(self, session_id: str) -> Session | None:
        """One session, whoever owns it."""
        return await self._read(sessions.get_session(session_id))

    async def list_sessions(
        self, *, owner_id: str | None, status: str | None, inactive_before: datetime, limit: int
    ) -> list[Session]:
        """Sessions, newest activity first; ``owner_id`` None means all of them."""
        operation = sessions.list_sessions(
            owner_id=owner_id, status=status, inactive_before=inactive_before, limit=limit
        )
        return await self._read(operation)

    async def update_session(
        self, session_id: str, *, closed: bool | None, client_name: str | None, now: datetime
    ) -> Session:
        """Change a session's status or client name."""
        return await self._write(sessions.update_session(session_id, closed=closed, client_name=client_name, now=now))

    # messages

    async def append(self, items: Sequence[NewMessage], *, author: User, now: datetime) -> list[Appended]:
        """Store messages in order, in one transaction; each succeeds or fails on its own."""
        if not items:
            return []
        # One operation for the caller's whole batch: its items keep their order and commit
        # together (on SQLite, with, never apart from, the group they share a commit with).
        return await self._write(messages.append(list(items), author=author, now=now), weight=len(items))

    async def changes(self, session_id: str, *, after: int, limit: int) -> Page:
        """Messages whose ``change_seq`` is above ``after``, oldest change first."""
        return await self._read(messages.changes(session_id, after=after, limit=limit))

    async def get_message(self, message_id: str) -> Message | None:
        """One message by id."""
        return await self._read(messages.get_message(message_id))

    async def mark_delivered(self, session_id: str, message_ids: Sequence[str], *, now: datetime) -> int:
        """Set delivered on those messages not yet delivered, bumping each. Returns the head."""
        ids = list(message_ids)
        return await self._write(messages.mark_delivered(session_id, ids), weight=len(ids))

    async def mark_read(self, session_id: str, *, message_type: MessageType, up_to_seq: int, now: datetime) -> int:
        """Set read (and delivered) on ``message_type`` messages up to ``up_to_seq``; returns the head."""
        return await self._write(messages.mark_read(session_id, message_type=message_type, up_to_seq=up_to_seq))

    async def edit(self, message_id: str, *, content: str, now: datetime) -> Message:
        """Replace a message's content (bumps its change sequence)."""
        return await self._write(messages.edit(message_id, content=content, now=now))

    async def pending_user_messages(self, *, since: datetime, limit: int) -> list[Message]:
        """Undelivered ``user`` messages in open sessions, created after ``since``, oldest first."""
        return await self._read(messages.pending_user_messages(since=since, limit=limit))
