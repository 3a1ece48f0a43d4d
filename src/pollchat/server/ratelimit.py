"""Per-user rate limits for sends and polls, on the ``limits`` library's moving window.

The counters live in memory (one process) or in Redis (shared by every instance). When Redis
cannot be reached the limiter lets requests through and logs it: a chat that keeps working
beats one that refuses everybody because its rate counter is down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from pollchat.domain.errors import ConfigurationError, PayloadTooLarge, TooManyRequests
from pollchat.settings import Settings, parse_rate

logger = logging.getLogger(__name__)


def create_limit_storage(url: str) -> Storage:
    """Counters for ``memory://`` or ``redis://host:port/db``."""
    if url == "memory://":
        return MemoryStorage()
    if url.startswith(("redis://", "rediss://")):
        try:
            storage = storage_from_string("async+" + url, implementation="redispy")
        except Exception as exc:  # limits raises its own ConfigurationError for a missing driver
            raise ConfigurationError(
                f"cannot use {url!r} for rate limits ({exc}); pip install 'pollchat[redis]'", code="bad_rate_limit_url"
            ) from exc
        assert isinstance(storage, Storage)
        return storage
    raise ConfigurationError(f"rate limit storage {url!r} is neither memory:// nor redis://", code="bad_rate_limit_url")


# Every budget a request spends from, and the setting that sizes it: the one place limits are
# defined. Each authenticated route spends from exactly one (``pollchat.server.deps``).
BUDGETS: dict[str, str] = {
    "send": "send_rate_limit",  # per message stored (a batch spends one per message), per edit
    "poll": "poll_rate_limit",  # per message poll, short or long
    "session": "session_rate_limit",  # per session created
    "action": "action_rate_limit",  # per any other request of a signed-in user
}


class RateLimiter:
    """Per-user budgets, one per kind of ``BUDGETS``; ``off`` disables one."""

    def __init__(self, rates: Mapping[str, str], *, storage: Storage | None = None) -> None:
        self._storage = storage or MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._limits: dict[str, RateLimitItem | None] = {}
        for kind, rate in rates.items():
            normalised = parse_rate(rate)
            self._limits[kind] = parse(normalised) if normalised else None

    @classmethod
    def from_settings(cls, settings: Settings, *, storage: Storage | None = None) -> RateLimiter:
        """The budgets ``settings`` set."""
        return cls({kind: getattr(settings, name) for kind, name in BUDGETS.items()}, storage=storage)

    async def hit(self, kind: str, user_id: str, cost: int = 1) -> None:
        """Spend ``cost`` of the user's ``kind`` budget; raises ``TooManyRequests`` when it is gone."""
        item = self._limits[kind]
        if item is None:
            return
        if cost > item.amount:
            # More than the whole budget at once can never pass: waiting would not help.
            raise PayloadTooLarge(
                f"at most {item} per user: {cost} at once is too many; send them in smaller groups",
                code=f"{kind}_budget_exceeded",
            )
        try:
            if await self._limiter.hit(item, kind, user_id, cost=cost):
                return
            stats = await self._limiter.get_window_stats(item, kind, user_id)
        except Exception as exc:  # the shared counter store is down: fail open
            logger.warning("rate limit storage unavailable (%s); letting a %s through", exc, kind)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(
            f"too many {kind}s: at most {item} per user; retry in {retry_after} s",
            code=f"{kind}_rate_limited",
            retry_after=retry_after,
        )
