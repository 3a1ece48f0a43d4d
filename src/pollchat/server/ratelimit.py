"""Per-user rate limits for sends and polls, on the ``limits`` library's moving window.

The counters live in memory (one process) or in Redis (shared by every instance). When Redis
cannot be reached the limiter lets requests through and logs it: a chat that keeps working
beats one that refuses everybody because its rate counter is down.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from pollchat.domain.errors import ConfigurationError, TooManyRequests
from pollchat.settings import parse_rate

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


class RateLimiter:
    """Sends and polls each have a per-user budget; ``off`` disables one."""

    def __init__(self, *, send_rate: str, poll_rate: str, storage: Storage | None = None) -> None:
        self._storage = storage or MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._limits: dict[str, RateLimitItem | None] = {}
        for kind, rate in (("send", send_rate), ("poll", poll_rate)):
            normalised = parse_rate(rate)
            self._limits[kind] = parse(normalised) if normalised else None

    async def hit(self, kind: str, user_id: str, cost: int = 1) -> None:
        """Spend ``cost`` of the user's ``kind`` budget; raises ``TooManyRequests`` when it is gone."""
        item = self._limits.get(kind)
        if item is None:
            return
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
