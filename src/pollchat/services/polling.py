"""Polling: the changes of a session after a cursor, at once or held until there are some.

An idle poll needs no storage: the notifier knows each session's committed head and the
session service its owner, so "nothing new" (an empty page, a 304) is answered from memory.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import NamedTuple

from pollchat.clock import Clock
from pollchat.domain.cursor import Cursors, is_message_id
from pollchat.domain.errors import BadRequest
from pollchat.domain.records import Message, Page, User
from pollchat.domain.rules import delivery_side
from pollchat.metrics import Metrics
from pollchat.services.notifier import Notifier
from pollchat.services.sessions import SessionService
from pollchat.storage.base import Storage


@dataclass(frozen=True, slots=True)
class PollResult:
    """A poll's answer: a page and its cursor, or ``not_modified`` for a matching ETag."""

    session_id: str
    page: Page | None
    cursor: str
    etag: str
    after: int
    limit: int
    not_modified: bool = False


class _Target(NamedTuple):
    """What a poll needs of its session."""

    id: str
    owner_id: str
    head: int


def _empty(head: int, after: int) -> Page:
    return Page(messages=[], head=head, has_more=False, upto=after)


# Room for a message's fields other than its content and metadata, as JSON (ids, timestamps,
# status...): well above what they take.
_FIELDS_BYTES = 512
# Whatever a string holds, its JSON takes at most this many bytes per character (``\u0001``).
_WORST_EXPANSION = 6


def _json_bytes(message: Message) -> int:
    """An upper bound of the message's size in a page's JSON (escaped text counted as escaped)."""
    size = _FIELDS_BYTES + len(json.dumps(message.content))
    if message.metadata is not None:
        size += len(json.dumps(message.metadata))
    return size


def fit_page(page: Page, max_bytes: int) -> Page:
    """``page`` cut to its first messages that fit in ``max_bytes`` of JSON (at least one).

    A cut page says ``has_more`` and ends its cursor after its last message, so the client
    asks again at once and gets the rest: one member's large messages cannot make a page (and
    the memory and time to build it) as large as ``limit`` times the largest message.
    """
    worst = sum(_WORST_EXPANSION * len(m.content) + (4096 if m.metadata else 0) + _FIELDS_BYTES for m in page.messages)
    if worst <= max_bytes:
        return page  # the common case, decided without measuring anything
    kept, used = 0, 0
    for message in page.messages:
        used += _json_bytes(message)
        if kept and used > max_bytes:
            break
        kept += 1
    if kept == len(page.messages):
        return page
    messages = page.messages[:kept]
    return Page(messages=messages, head=page.head, has_more=True, upto=messages[-1].change_seq)


class PollService:
    """Answers polls and long polls, marking the other side's messages delivered."""

    def __init__(
        self,
        *,
        storage: Storage,
        notifier: Notifier,
        metrics: Metrics,
        clock: Clock,
        sessions: SessionService,
        cursors: Cursors,
        max_page_bytes: int,
    ) -> None:
        self.storage = storage
        self.max_page_bytes = max_page_bytes
        self.notifier = notifier
        self.metrics = metrics
        self.clock = clock
        self.sessions = sessions
        self.cursors = cursors
        self._reads: dict[tuple[str, int, int, int], asyncio.Future[Page]] = {}

    async def _target(self, user: User, session_id: str, *, fresh: bool = False) -> _Target:
        """The session to poll: its owner (immutable, cached) and head (from the notifier).

        An idle poll thus needs no storage at all; a cold cache, or ``fresh``, reads it.
        """
        owner = self.sessions.known_owner(session_id)
        head = self.notifier.head(session_id)
        if fresh or owner is None or head is None:
            session = await self.sessions.visible(user, session_id)
            self.notifier.advance(session.id, session.head)
            return _Target(session.id, session.owner_id, session.head)
        self.sessions.check_access(user, session_id, owner)
        return _Target(session_id, owner, head)

    async def _position(self, user: User, target: _Target, since: str | None) -> tuple[_Target, int]:
        if since is None:
            return target, 0
        if is_message_id(since):
            message = await self.sessions.message(since)
            if message is None or message.session_id != target.id:
                raise BadRequest("`since` names no message of this session", code="unknown_message")
            return target, message.created_seq
        try:
            return target, self.cursors.decode(target.id, since, head=target.head)
        except BadRequest as exc:
            # A remembered head may lag a commit of another instance; storage decides.
            if exc.code != "cursor_ahead":
                raise
        target = await self._target(user, target.id, fresh=True)
        return target, self.cursors.decode(target.id, since, head=target.head)

    async def _changes(self, session_id: str, after: int, limit: int) -> Page:
        """``storage.changes``, with identical concurrent reads sharing one query.

        When one commit wakes thousands of long polls at the same cursor, they all want the
        same page: one read serves them. A read is shared only by pollers that arrive while
        the notifier's head for the session is unchanged, so a poller woken by a newer commit
        (which raised the head before waking it) never gets a page read before that commit.
        """
        head = self.notifier.head(session_id)
        if head is None:
            return await self._fitted_changes(session_id, after, limit)
        key = (session_id, after, limit, head)
        shared = self._reads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._fitted_changes(session_id, after, limit))
            self._reads[key] = shared
            shared.add_done_callback(lambda _done: self._reads.pop(key, None))
        # Shielded: one poller going away must not cancel the read the others wait for.
        return await asyncio.shield(shared)

    async def _fitted_changes(self, session_id: str, after: int, limit: int) -> Page:
        """``storage.changes`` cut to ``max_page_bytes`` (once per read, however many share it)."""
        return fit_page(await self.storage.changes(session_id, after=after, limit=limit), self.max_page_bytes)

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
        etag = self.cursors.etag(target.id, head=target.head, after=after, limit=limit)
        if if_none_match is not None and etag in (t.strip() for t in if_none_match.split(",")):
            self.metrics.poll_outcomes["not_modified"].inc()
            cursor = since or self.cursors.encode(target.id, after)
            return PollResult(target.id, None, cursor, etag, after, limit, not_modified=True)
        if after >= target.head:  # nothing committed after the cursor: no need to ask storage
            return self._answer(target.id, after, limit, _empty(target.head, after), etag=etag)
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

    def _answer(self, session_id: str, after: int, limit: int, page: Page, *, etag: str | None = None) -> PollResult:
        """The answer with ``page``; ``etag`` when it is known already (it names ``page.head``)."""
        self.metrics.poll_outcomes["data" if page.messages else "empty"].inc()
        cursor = self.cursors.encode(session_id, page.upto)
        if etag is None:
            etag = self.cursors.etag(session_id, head=page.head, after=after, limit=limit)
        return PollResult(session_id, page, cursor, etag, after, limit)
