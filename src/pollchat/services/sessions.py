"""Sessions: who may see one, creating, listing, closing, and read marks."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta

from pollchat.clock import Clock
from pollchat.domain.cursor import Cursors
from pollchat.domain.errors import Forbidden, NotFound, no_session
from pollchat.domain.ids import is_well_formed_message_id
from pollchat.domain.records import Message, Session, User
from pollchat.domain.rules import delivery_side, is_staff, may_reopen, may_see_session
from pollchat.services.notifier import Notifier
from pollchat.settings import Settings
from pollchat.storage.base import Storage

OWNER_CACHE_SIZE = 100_000


class SessionService:
    """Sessions and their access rule, with the owners of sessions remembered."""

    def __init__(
        self, *, storage: Storage, notifier: Notifier, settings: Settings, clock: Clock, cursors: Cursors
    ) -> None:
        self.storage = storage
        self.notifier = notifier
        self.settings = settings
        self.clock = clock
        self.cursors = cursors
        # Session owners never change: polls check access without reading storage. Keyed by
        # the whole session id; at most ``OWNER_CACHE_SIZE``, oldest dropped first.
        self._owners: OrderedDict[str, str] = OrderedDict()

    @property
    def inactive_before(self) -> datetime:
        """Sessions with no activity since this moment report ``inactive``."""
        return self.clock.now() - timedelta(seconds=self.settings.inactive_after)

    @staticmethod
    def not_found(session_id: str) -> NotFound:
        """The refusal for a session that is missing or not the caller's: the same for both."""
        return no_session(session_id)

    def known_owner(self, session_id: str) -> str | None:
        """The owner of a session seen lately, without storage."""
        return self._owners.get(session_id)

    def remember_owner(self, session: Session) -> None:
        """Keep a session's owner for the polls to come."""
        self._owners[session.id] = session.owner_id
        if len(self._owners) > OWNER_CACHE_SIZE:
            self._owners.popitem(last=False)

    def check_access(self, user: User, session_id: str, owner_id: str) -> None:
        """404, exactly as for a missing session, unless ``user`` may see it."""
        if not may_see_session(user, owner_id):
            raise self.not_found(session_id)

    async def visible(self, user: User, session_id: str) -> Session:
        """The session, if the user may see it; 404 otherwise, exactly as for a missing one."""
        session = await self.storage.get_session(session_id)
        if session is None:
            raise self.not_found(session_id)
        self.check_access(user, session_id, session.owner_id)
        self.remember_owner(session)
        return session

    async def message(self, message_id: str) -> Message | None:
        """A message by id; None for an id the server cannot have minted."""
        # Odd input (a NUL, say) must not reach a backend that would fail on it.
        if not is_well_formed_message_id(message_id):
            return None
        return await self.storage.get_message(message_id)

    async def create(self, user: User, *, session_id: str, client_name: str | None) -> Session:
        """A new session owned by the caller."""
        return await self.storage.create_session(
            session_id=session_id, owner_id=user.id, client_name=client_name, now=self.clock.now()
        )

    async def list_visible(self, user: User, *, status: str | None, limit: int) -> list[Session]:
        """The caller's sessions (every session for operators), newest activity first."""
        return await self.storage.list_sessions(
            owner_id=None if is_staff(user) else user.id,
            status=status,
            inactive_before=self.inactive_before,
            limit=limit,
        )

    async def update(self, user: User, session_id: str, *, status: str | None, client_name: str | None) -> Session:
        """Close or reopen a session, or rename its client."""
        session = await self.visible(user, session_id)
        closed = None if status is None else status == "closed"
        if session.closed and closed is False and not may_reopen(user):
            raise Forbidden("only operators and admins reopen a closed session", code="reopen_not_allowed")
        updated = await self.storage.update_session(
            session_id, closed=closed, client_name=client_name, now=self.clock.now()
        )
        self.notifier.notify(session_id)
        return updated

    async def mark_read(self, user: User, session_id: str, up_to: str) -> str:
        """The other side's messages up to ``up_to`` are read; returns the new head's cursor."""
        session = await self.visible(user, session_id)
        message = await self.message(up_to)
        if message is None or message.session_id != session.id:
            raise NotFound("`up_to` names no message of this session", code="message_not_found")
        side = delivery_side(user, session.owner_id)
        if side is None:
            raise Forbidden("only the session's two sides can mark it read", code="not_a_participant")
        head = await self.storage.mark_read(
            session.id, message_type=side, up_to_seq=message.created_seq, now=self.clock.now()
        )
        self.notifier.notify(session.id, head)
        return self.cursors.encode(session.id, head)
