"""The chat service: who may do what, and the send and poll flows over storage and the notifier.

The HTTP layer is thin around this; so are the assistant runner and the command line.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pollchat.clock import Clock
from pollchat.cursor import decode_cursor, encode_cursor, is_message_id
from pollchat.domain.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, PollchatError
from pollchat.domain.records import Appended, Message, MessageType, NewMessage, Page, Session, User
from pollchat.domain.rules import delivery_side, is_staff, may_post_type, may_see_session
from pollchat.ids import is_well_formed_message_id
from pollchat.metrics import Metrics
from pollchat.notifier import Notifier
from pollchat.settings import Settings
from pollchat.storage.base import Storage

MessageListener = Callable[[Message], None]


@dataclass(frozen=True, slots=True)
class SendItem:
    """One message a caller asks to send (the request's fields)."""

    content: str
    session_id: str
    type: MessageType = "user"
    client_message_id: str | None = None
    client_name: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PollResult:
    """A poll's answer: a page and its cursor, or ``not_modified`` for a matching ETag."""

    session_id: str
    page: Page | None
    cursor: str
    etag: str
    not_modified: bool = False


OWNER_CACHE_SIZE = 100_000


class _Target(NamedTuple):
    """What a poll needs of its session."""

    id: str
    owner_id: str
    head: int


def _empty(head: int, after: int) -> Page:
    return Page(messages=[], head=head, has_more=False, upto=after)


def _etag(session_id: str, after: int, limit: int, head: int) -> str:
    # The page for (after, limit) is a function of the session's state, and every change of
    # that state bumps head: equal heads mean equal answers.
    return f'"{encode_cursor(session_id, head)}.{after}.{limit}"'


class ChatService:
    """Sends, polls, sessions and read marks, with object-level authorization."""

    def __init__(
        self, *, storage: Storage, notifier: Notifier, metrics: Metrics, settings: Settings, clock: Clock
    ) -> None:
        self.storage = storage
        self.notifier = notifier
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self._listeners: list[MessageListener] = []
        # Session owners never change: polls check access without reading storage.
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._reads: dict[tuple[str, int, int, int], asyncio.Future[Page]] = {}

    def add_listener(self, listener: MessageListener) -> None:
        """Call ``listener`` with every new message this instance stores (assistants use it)."""
        self._listeners.append(listener)

    @property
    def inactive_before(self) -> datetime:
        """Sessions with no activity since this moment report ``inactive``."""
        return self.clock.now() - timedelta(seconds=self.settings.inactive_after)

    # access

    async def _message(self, message_id: str) -> Message | None:
        # An id the server cannot have minted is never looked up: odd input (a NUL, say)
        # must not reach a backend that would fail on it.
        if not is_well_formed_message_id(message_id):
            return None
        return await self.storage.get_message(message_id)

    async def visible_session(self, user: User, session_id: str) -> Session:
        """The session, if the user may see it; 404 otherwise, exactly as for a missing one."""
        session = await self.storage.get_session(session_id)
        if session is None or not may_see_session(user, session.owner_id):
            raise NotFound(f"no session {session_id!r}", code="session_not_found")
        return session

    # sending

    def _check(self, user: User, item: SendItem) -> None:
        if not item.content.strip():
            raise BadRequest("`content` must not be empty", code="empty_content")
        if len(item.content.encode("utf-8")) > self.settings.max_content_bytes:
            raise PayloadTooLarge(
                f"`content` is larger than {self.settings.max_content_bytes} bytes", code="content_too_large"
            )
        if item.metadata is not None:
            size = len(json.dumps(item.metadata, separators=(",", ":")).encode("utf-8"))
            if size > self.settings.max_metadata_bytes:
                raise PayloadTooLarge(
                    f"`metadata` is larger than {self.settings.max_metadata_bytes} bytes", code="metadata_too_large"
                )
        if not may_post_type(user, item.type):
            raise Forbidden("only operators and admins may post as `assistant`", code="type_not_allowed")

    async def send(self, user: User, items: Sequence[SendItem]) -> list[Appended]:
        """Store messages in order; each succeeds or fails on its own."""
        if len(items) > self.settings.max_batch:
            raise PayloadTooLarge(f"at most {self.settings.max_batch} messages per batch", code="batch_too_large")
        results: list[Appended | None] = []
        valid: list[NewMessage] = []
        for item in items:
            try:
                self._check(user, item)
            except PollchatError as exc:
                results.append(Appended(None, error=exc))
                continue
            results.append(None)
            valid.append(
                NewMessage(
                    session_id=item.session_id,
                    type=item.type,
                    content=item.content,
                    client_message_id=item.client_message_id,
                    metadata=item.metadata,
                    client_name=item.client_name,
                )
            )
        stored = iter(await self.storage.append(valid, author=user, now=self.clock.now()) if valid else [])
        outcome = [r if r is not None else next(stored) for r in results]
        self._after_append(outcome)
        return outcome

    async def send_one(self, user: User, item: SendItem) -> Appended:
        """Store one message; a refusal raises."""
        (result,) = await self.send(user, [item])
        if result.error is not None:
            raise result.error
        return result

    def _after_append(self, outcome: Sequence[Appended]) -> None:
        heads: dict[str, int] = {}
        for result in outcome:
            if result.message is None or not result.created:
                continue
            message = result.message
            heads[message.session_id] = max(heads.get(message.session_id, 0), message.change_seq)
            self.metrics.messages_stored.labels(message.type).inc()
            for listener in self._listeners:
                listener(message)
        for session_id, head in heads.items():
            self.notifier.notify(session_id, head)

    async def edit(self, user: User, message_id: str, content: str) -> Message:
        """Replace the content of one's own message."""
        message = await self._message(message_id)
        if message is None:
            raise NotFound("no such message", code="message_not_found")
        session = await self.visible_session(user, message.session_id)
        if message.user_id != user.id:
            raise Forbidden("only the author may edit a message", code="not_author")
        if session.closed:
            raise Conflict("the session is closed", code="session_closed")
        self._check(user, SendItem(content=content, session_id=session.id, type=message.type))
        edited = await self.storage.edit(message_id, content=content, now=self.clock.now())
        self.notifier.notify(session.id, edited.change_seq)
        return edited

    # polling

    async def _target(self, user: User, session_id: str, *, fresh: bool = False) -> _Target:
        """The session to poll: its owner (immutable, cached) and head (from the notifier).

        An idle poll thus needs no storage at all; a cold cache, or ``fresh``, reads it.
        """
        owner = self._owners.get(session_id)
        head = self.notifier.head(session_id)
        if fresh or owner is None or head is None:
            session = await self.visible_session(user, session_id)
            self._owners[session.id] = session.owner_id
            if len(self._owners) > OWNER_CACHE_SIZE:
                self._owners.popitem(last=False)
            self.notifier.advance(session.id, session.head)
            return _Target(session.id, session.owner_id, session.head)
        if not may_see_session(user, owner):
            raise NotFound(f"no session {session_id!r}", code="session_not_found")
        return _Target(session_id, owner, head)

    async def _position(self, user: User, target: _Target, since: str | None) -> tuple[_Target, int]:
        if since is None:
            return target, 0
        if is_message_id(since):
            message = await self._message(since)
            if message is None or message.session_id != target.id:
                raise BadRequest("`since` names no message of this session", code="unknown_message")
            return target, message.created_seq
        try:
            return target, decode_cursor(target.id, since, head=target.head)
        except BadRequest as exc:
            # A remembered head may lag a commit of another instance; storage decides.
            if exc.code != "cursor_ahead":
                raise
        target = await self._target(user, target.id, fresh=True)
        return target, decode_cursor(target.id, since, head=target.head)

    async def _changes(self, session_id: str, after: int, limit: int) -> Page:
        """``storage.changes``, with identical concurrent reads sharing one query.

        When one commit wakes thousands of long polls at the same cursor, they all want the
        same page: one read serves them. A read is shared only by pollers that arrive while
        the notifier's head for the session is unchanged, so a poller woken by a newer commit
        (which raised the head before waking it) never gets a page read before that commit.
        """
        head = self.notifier.head(session_id)
        if head is None:
            return await self.storage.changes(session_id, after=after, limit=limit)
        key = (session_id, after, limit, head)
        shared = self._reads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self.storage.changes(session_id, after=after, limit=limit))
            self._reads[key] = shared
            shared.add_done_callback(lambda _done: self._reads.pop(key, None))
        # Shielded: one poller going away must not cancel the read the others wait for.
        return await asyncio.shield(shared)

    async def _read(self, user: User, target: _Target, after: int, limit: int) -> Page:
        page = await self._changes(target.id, after, limit)
        side = delivery_side(user, target.owner_id)
        marked = False
        # Fetching by the other side is delivery. Mark first, then answer with the marked
        # state, so the poller's cursor already covers the change it caused. Marking moves a
        # message to the end of the change order, which can pull later undelivered messages
        # into a limited page: repeat until the page answered holds none of them.
        while fetched := [m.id for m in page.messages if m.type == side and not m.delivered and m.user_id != user.id]:
            await self.storage.mark_delivered(target.id, fetched, now=self.clock.now())
            marked = True
            page = await self._changes(target.id, after, limit)
        if marked:
            self.notifier.notify(target.id, page.head)
        else:
            self.notifier.advance(target.id, page.head)
        return page

    async def poll(
        self, user: User, session_id: str, *, since: str | None, limit: int, wait: float, if_none_match: str | None
    ) -> PollResult:
        """Changes of a session after ``since``; with ``wait``, hold until there are some."""
        target, after = await self._position(user, await self._target(user, session_id), since)
        if wait <= 0:
            known = self._answer_known(target, after, limit, since, if_none_match)
            if known is not None:
                return known
            return self._answer(target.id, after, limit, await self._read(user, target, after, limit))
        return await self._long_poll(user, target, after, limit, wait)

    def _answer_known(
        self, target: _Target, after: int, limit: int, since: str | None, if_none_match: str | None
    ) -> PollResult | None:
        etag = _etag(target.id, after, limit, target.head)
        if if_none_match is not None and etag in (t.strip() for t in if_none_match.split(",")):
            self.metrics.poll_outcomes["not_modified"].inc()
            return PollResult(target.id, None, since or encode_cursor(target.id, after), etag, True)
        if after >= target.head:  # nothing committed after the cursor: no need to ask storage
            return self._answer(target.id, after, limit, _empty(target.head, after))
        return None

    async def _long_poll(self, user: User, target: _Target, after: int, limit: int, wait: float) -> PollResult:
        deadline = self.clock.monotonic() + wait
        waiter = self.notifier.register(target.id, user.id)
        try:
            # Kept apart from the waiter: the next round's ``clear`` forgets its wake-up time.
            woken_at: float | None = None
            while True:
                waiter.clear()
                # Registered before this check, so a commit after it still wakes us.
                head = self.notifier.head(target.id)
                if head is not None and head <= after:
                    page = _empty(head, after)
                else:
                    page = await self._read(user, target, after, limit)
                remaining = deadline - self.clock.monotonic()
                if page.messages or self.notifier.closed or remaining <= 0:
                    break
                # The future itself is awaited: no coroutine frame per parked poll for this.
                if await waiter.park(remaining):
                    woken_at = waiter.woken_at
            if page.messages and woken_at is not None:
                self.metrics.wake_latency.observe(self.clock.monotonic() - woken_at)
        finally:
            self.notifier.unregister(waiter)
        return self._answer(target.id, after, limit, page)

    def _answer(self, session_id: str, after: int, limit: int, page: Page) -> PollResult:
        self.metrics.poll_outcomes["data" if page.messages else "empty"].inc()
        return PollResult(
            session_id, page, encode_cursor(session_id, page.upto), _etag(session_id, after, limit, page.head)
        )

    # sessions

    async def create_session(self, user: User, *, session_id: str, client_name: str | None) -> Session:
        """A new session owned by the caller."""
        return await self.storage.create_session(
            session_id=session_id, owner_id=user.id, client_name=client_name, now=self.clock.now()
        )

    async def list_sessions(self, user: User, *, status: str | None, limit: int) -> list[Session]:
        """The caller's sessions (every session for operators), newest activity first."""
        return await self.storage.list_sessions(
            owner_id=None if is_staff(user) else user.id,
            status=status,
            inactive_before=self.inactive_before,
            limit=limit,
        )

    async def update_session(
        self, user: User, session_id: str, *, status: str | None, client_name: str | None
    ) -> Session:
        """Close or reopen a session, or rename its client."""
        await self.visible_session(user, session_id)
        closed = None if status is None else status == "closed"
        updated = await self.storage.update_session(
            session_id, closed=closed, client_name=client_name, now=self.clock.now()
        )
        self.notifier.notify(session_id)
        return updated

    async def mark_read(self, user: User, session_id: str, up_to: str) -> str:
        """The other side's messages up to ``up_to`` are read; returns the new head's cursor."""
        session = await self.visible_session(user, session_id)
        message = await self._message(up_to)
        if message is None or message.session_id != session.id:
            raise NotFound("`up_to` names no message of this session", code="message_not_found")
        side = delivery_side(user, session.owner_id)
        if side is None:
            raise Forbidden("only the session's two sides can mark it read", code="not_a_participant")
        head = await self.storage.mark_read(
            session.id, message_type=side, up_to_seq=message.created_seq, now=self.clock.now()
        )
        self.notifier.notify(session.id, head)
        return encode_cursor(session.id, head)
