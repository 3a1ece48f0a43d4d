"""When to poll next: the seed's ``PollingStrategy`` with jitter.

Long polling is the default: the server holds the request, so the next poll goes out as soon
as the previous one answers. Short polling adapts: ``active_interval`` while the chat is busy,
``inactive_interval`` when idle, and after errors the interval grows by ``backoff_multiplier``
up to ``max_interval``. Every delay gets random jitter so that clients cut off together by a
server restart do not come back in the same second; jitter never takes a delay past
``max_interval``, and only the server's own ``Retry-After`` may ask for a longer pause.
The browser client's ``web/strategy.js`` follows the same rules.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any, Literal


@dataclass(slots=True)
class PollingStrategy:
    """Polling intervals in seconds (the seed's defaults)."""

    mode: Literal["long", "short"] = "long"
    # Below the 60 s after which proxies and load balancers commonly cut an idle request, and the
    # same as the browser client's (web/strategy.js).
    long_poll_wait: float = 25.0
    base_interval: float = 3.0
    max_interval: float = 30.0
    backoff_multiplier: float = 1.5
    active_interval: float = 2.0
    inactive_interval: float = 10.0
    active_window: float = 60.0
    jitter: float = 0.2
    send_retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)

    def poll_delay(
        self,
        *,
        errors: int,
        seconds_since_activity: float | None,
        rng: random.Random,
        mode: Literal["long", "short"] | None = None,
    ) -> float:
        """Seconds to wait before the next poll.

        Args:
            errors: consecutive failed polls so far.
            seconds_since_activity: time since a message was last sent or received, None if never.
            mode: overrides ``self.mode`` (the service's fallback to short polls).
        """
        if errors:
            delay = min(self.base_interval * self.backoff_multiplier ** (errors - 1), self.max_interval)
        elif (mode or self.mode) == "long":
            return 0.0
        elif seconds_since_activity is not None and seconds_since_activity < self.active_window:
            delay = self.active_interval
        elif seconds_since_activity is None:
            delay = self.base_interval
        else:
            delay = self.inactive_interval
        return self._jittered(delay, rng)

    def with_lower_wait(self, max_wait: Any) -> PollingStrategy | None:
        """A copy asking for less than a server refused (400 ``wait_too_long``), or None when it cannot go lower.

        ``max_wait`` is the refusal's own field, the server's longest wait; a server that does not
        send it gets half the wait in whole seconds, down to 1 s.
        """
        if isinstance(max_wait, int | float) and not isinstance(max_wait, bool) and 0 < max_wait < self.long_poll_wait:
            return replace(self, long_poll_wait=float(max_wait))
        if self.long_poll_wait > 1:
            return replace(self, long_poll_wait=float(max(1, math.floor(self.long_poll_wait / 2))))
        return None

    def send_delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds before retry number ``attempt`` (1-based) of a send: 1, 2, 4, 8, 8, ..."""
        delays = self.send_retry_delays
        return self._jittered(delays[min(attempt, len(delays)) - 1], rng)

    def retry_after_delay(self, seconds: float, rng: random.Random) -> float:
        """The pause for a server's ``Retry-After: seconds``: at least that, jittered up to ``max_interval``.

        Waiting less would be refused again; the jitter spreads out the clients that were told
        the same thing at once, but past ``max_interval`` only the server may take the pause.
        """
        return min(seconds * (1 + self.jitter * rng.random()), max(seconds, self.max_interval))

    def _jittered(self, delay: float, rng: random.Random) -> float:
        return min(self.max_interval, max(0.0, delay * (1 + self.jitter * (2 * rng.random() - 1))))
