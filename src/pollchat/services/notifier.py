"""Long-poll wake-ups.

Protocol: a poller *registers* a ``Waiter`` for its session before it reads storage, reads,
and parks on the waiter only if the read found nothing. A commit calls ``notify`` after it
lands, which sets every waiter of that session. Because registration comes before the read,
a commit that lands between the read and the park still sets the waiter: no wake-up is lost.
A wake-up is only a hint; the poller reads storage again, which stays the source of truth.

The notifier also remembers each session's *head* (its latest change sequence number) as
commits report it, so an idle poll can answer "nothing new" or 304 without touching storage.
A remembered head only ever comes from a committed change, so it may lag storage (a commit of
another instance whose notification is still on its way: the poll then answers as if it had
come a moment earlier) but is never ahead of it. When notifications may have been lost, the
heads are forgotten and the next polls read storage.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pollchat.domain.errors import TooManyRequests


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class Waiter:
    """One parked poll's flag.

    A bare future and one timer rather than an ``asyncio.Event`` under ``asyncio.timeout``, and
    ``park`` hands out the future itself rather than a coroutine: thousands of these are parked
    at once, and each is woken and re-armed on every change of its session, so both their
    memory and their per-wake cost count.
    """

    __slots__ = ("_future", "_monotonic", "_timer", "_woken", "session_id", "user_id", "woken_at")

    def __init__(self, session_id: str, user_id: str, monotonic: Callable[[], float]) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.woken_at: float | None = None
        self._monotonic = monotonic
        self._woken = False
        self._future: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        """Mark that the session may have changed."""
        if not self._woken:
            self._woken = True
            self.woken_at = self._monotonic()
            future = self._future
            if future is not None and not future.done():
                future.set_result(True)

    def clear(self) -> None:
        """Forget earlier wake-ups (and disarm the last ``park``); call before re-reading storage."""
        self.woken_at = None
        self._woken = False
        self._future = None
        self.clear_timer()

    def clear_timer(self) -> None:
        """Disarm the last ``park``'s timer, keeping any wake-up."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def park(self, timeout: float) -> asyncio.Future[bool]:
        """A future to await: True once woken, False after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if self._woken:
            future.set_result(True)
            return future
        self._future = future
        self._timer = loop.call_later(timeout, _expire, future)
        return future

    async def wait(self, timeout: float) -> bool:
        """Park until woken or ``timeout`` passes; True when woken."""
        try:
            return await self.park(timeout)
        finally:
            self.clear_timer()


class Notifier:
    """Waiters per session and the per-user cap on parked long polls; owned by one app."""

    def __init__(self, *, max_parked_per_user: int, monotonic: Callable[[], float], max_heads: int = 100_000) -> None:
        self._heads: OrderedDict[str, int] = OrderedDict()
        self._max_heads = max_heads
        self._monotonic = monotonic
        self._max_parked_per_user = max_parked_per_user
        self._waiters: dict[str, set[Waiter]] = {}
        self._per_user: Counter[str] = Counter()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the server is shutting down: polls answer at once."""
        return self._closed

    @property
    def parked(self) -> int:
        """How many long polls are registered now."""
        return sum(len(w) for w in self._waiters.values())

    def register(self, session_id: str, user_id: str) -> Waiter:
        """Register a waiter for a session; raises ``TooManyRequests`` past the user's cap.

        Every registered waiter must be given back to ``unregister``.
        """
        if self._per_user[user_id] >= self._max_parked_per_user:
            raise TooManyRequests(
                f"at most {self._max_parked_per_user} long polls may wait at once per user",
                code="too_many_long_polls",
                retry_after=1,
            )
        waiter = Waiter(session_id, user_id, self._monotonic)
        if self._closed:
            waiter.wake()
        self._waiters.setdefault(session_id, set()).add(waiter)
        self._per_user[user_id] += 1
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        """Forget a waiter ``register`` gave out."""
        waiter.clear_timer()
        waiters = self._waiters.get(waiter.session_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[waiter.session_id]
        user_id = waiter.user_id
        self._per_user[user_id] -= 1
        if self._per_user[user_id] <= 0:
            del self._per_user[user_id]

    @contextmanager
    def listen(self, session_id: str, user_id: str) -> Iterator[Waiter]:
        """``register`` and ``unregister`` around a block."""
        waiter = self.register(session_id, user_id)
        try:
            yield waiter
        finally:
            self.unregister(waiter)

    def head(self, session_id: str) -> int | None:
        """The latest committed change sequence number known for a session, if any."""
        return self._heads.get(session_id)

    def advance(self, session_id: str, head: int) -> None:
        """Remember that a session's changes up to ``head`` are committed."""
        known = self._heads.get(session_id)
        if known is None or head > known:
            self._heads[session_id] = head
        self._heads.move_to_end(session_id)
        if len(self._heads) > self._max_heads:
            self._heads.popitem(last=False)

    def notify(self, session_id: str, head: int | None = None) -> int:
        """Wake every waiter of a session (after a commit up to ``head``); returns how many were woken."""
        if head is not None:
            self.advance(session_id, head)
        waiters = self._waiters.get(session_id)
        if not waiters:
            return 0
        for waiter in waiters:
            waiter.wake()
        return len(waiters)

    def notify_all(self) -> None:
        """Wake every waiter (after notifications may have been lost)."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.wake()

    def wake(self, session_id: str, head: int | None = None) -> None:
        """Wake one session's waiters, or everyone's for ``"*"`` (and forget every head)."""
        if session_id == "*":
            self._heads.clear()
            self.notify_all()
        else:
            self.notify(session_id, head)

    def close(self) -> None:
        """Answer every parked poll now, and every later one at once (server shutdown)."""
        self._closed = True
        self.notify_all()
