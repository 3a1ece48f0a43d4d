"""When and how answers are compressed: one rule for every route.

An answer of at least ``min_bytes`` goes out gzipped to a client that accepts gzip, at level
``LEVEL``, and says ``Vary: Accept-Encoding``. The hot endpoint applies the rule itself, since
it keeps each page's compressed bytes for all the polls that ask for that page; every other
route gets it from ``cold_layer``, Starlette's GZip middleware set to the same rule.
"""

from __future__ import annotations

import gzip

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp

LEVEL = 6


class Compression:
    """The compression rule of one server."""

    def __init__(self, *, min_bytes: int) -> None:
        self.min_bytes = min_bytes

    def applies(self, size: int) -> bool:
        """Whether an answer of ``size`` bytes is compressed (for clients that accept it)."""
        return size >= self.min_bytes

    @staticmethod
    def accepted(accept_encoding: bytes) -> bool:
        """Whether a request's ``Accept-Encoding`` takes gzip."""
        return b"gzip" in accept_encoding

    @staticmethod
    def compress(body: bytes) -> bytes:
        """``body`` gzipped."""
        return gzip.compress(body, LEVEL)

    def cold_layer(self, app: ASGIApp) -> ASGIApp:
        """``app`` with its answers compressed by this rule."""
        return GZipMiddleware(app, minimum_size=self.min_bytes, compresslevel=LEVEL)
