"""Serialised poll answers, kept by ETag so one page is turned into JSON once.

An ETag names a session's state (its head), the cursor and the limit, and so the exact answer:
when one commit wakes thousands of long polls at the same cursor, the first builds the bytes
and the others send the same bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class PageBodies:
    """A small LRU of response bodies by ETag."""

    def __init__(self, *, max_entries: int = 1024) -> None:
        self._max_entries = max_entries
        self._bodies: OrderedDict[str, bytes] = OrderedDict()

    def get(self, etag: str, build: Callable[[], bytes]) -> bytes:
        """The body for ``etag``, built by ``build`` the first time."""
        body = self._bodies.get(etag)
        if body is None:
            body = build()
            self._bodies[etag] = body
            if len(self._bodies) > self._max_entries:
                self._bodies.popitem(last=False)
        else:
            self._bodies.move_to_end(etag)
        return body
