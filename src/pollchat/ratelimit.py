"""Per-user rate limits for sends and polls, on the ``limits`` library's moving window."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from pollchat.errors import TooManyRequests
from pollchat.settings import parse_rate


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
        if await self._limiter.hit(item, kind, user_id, cost=cost):
            return
        stats = await self._limiter.get_window_stats(item, kind, user_id)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(
            f"too many {kind}s: at most {item} per user; retry in {retry_after} s",
            code=f"{kind}_rate_limited",
            retry_after=retry_after,
        )
