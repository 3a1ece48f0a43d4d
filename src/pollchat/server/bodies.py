"""Serialised poll answers, kept so that one page is turned into JSON (and gzip) once.

A page is named by everything that decides it: the session, its head (every change of a
session bumps it), the position after which the page starts, the limit, and the encoding.
Never by a tag or an ETag standing in for those: two sessions can share a short tag, and a
cache keyed by it once answered one member's poll with another session's page.

When one commit wakes thousands of long polls at the same cursor, the first builds the bytes
and the others send the same bytes. The cache is bounded in entries and in bytes, and a body
too large to be worth keeping is built for its request alone. Entries are never invalidated:
a change of the session bumps its head, so later polls ask for a new key and old keys age out.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple


class PageKey(NamedTuple):
    """What decides a poll answer's bytes."""

    session_id: str
    head: int
    after: int
    limit: int
    encoding: str  # "identity" or "gzip"


class PageBodies:
    """An LRU of response bodies by ``PageKey``, bounded in entries and bytes."""

    def __init__(
        self, *, max_entries: int = 1024, max_bytes: int = 32 * 1024 * 1024, max_entry_bytes: int = 1024 * 1024
    ) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._max_entry_bytes = max_entry_bytes
        self._bodies: OrderedDict[PageKey, bytes] = OrderedDict()
        self._bytes = 0

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._bodies)

    def get(self, key: PageKey) -> bytes | None:
        """The body kept for ``key``, if any."""
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
        return body

    def put(self, key: PageKey, body: bytes) -> None:
        """Keep ``body`` for ``key``, unless it is too large to be worth keeping."""
        if len(body) > self._max_entry_bytes or key in self._bodies:
            return
        self._bodies[key] = body
        self._bytes += len(body)
        while len(self._bodies) > self._max_entries or self._bytes > self._max_bytes:
            _, dropped = self._bodies.popitem(last=False)
            self._bytes -= len(dropped)
