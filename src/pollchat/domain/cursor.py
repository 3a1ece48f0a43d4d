"""Poll cursors and ETags: opaque strings naming a position in one session's change sequence.

A cursor is ``c_<seq>_<tag>``, an ETag ``"<tag>.<head>.<after>.<limit>"``, where ``tag`` is an
HMAC of the session id under the server's secret (kept in storage, so every instance on one
database issues and accepts the same tags). A cursor of another session is refused instead of
silently skipping or replaying changes; and since clients choose session ids but never see the
secret, nobody can search offline for two sessions whose tags collide (a plain hash of 32 bits
once let one member's poll be answered from another session's cached page).

``since`` also takes a message id (the seed's ``lastMessageId``): the position at which that
message was created, so every change after it follows.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict

from pollchat.domain.errors import BadRequest
from pollchat.domain.ids import MESSAGE_PREFIX

_PREFIX = "c_"
# 128 bits: far beyond any online search, and short enough for a query string.
TAG_HEX_DIGITS = 32
TAG_CACHE_SIZE = 65_536


def is_message_id(since: str) -> bool:
    """Whether ``since`` names a message rather than a cursor."""
    return since.startswith(MESSAGE_PREFIX)


class Cursors:
    """Issues and checks the cursors and ETags of one server secret."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret
        # Every poll answer names its session's tag twice (cursor and ETag): remember them,
        # keyed by the whole session id, at most ``TAG_CACHE_SIZE`` of them.
        self._tags: OrderedDict[str, str] = OrderedDict()

    def use_secret(self, secret: bytes) -> None:
        """Key every tag from now on with ``secret`` (read from storage at start-up)."""
        self._secret = secret
        self._tags.clear()

    def tag(self, session_id: str) -> str:
        """The session's tag under the server secret."""
        tag = self._tags.get(session_id)
        if tag is None:
            if self._secret is None:
                raise RuntimeError("cursors are used before the server secret was read")
            digest = hmac.new(self._secret, session_id.encode("utf-8"), hashlib.sha256).hexdigest()
            tag = self._tags[session_id] = digest[:TAG_HEX_DIGITS]
            if len(self._tags) > TAG_CACHE_SIZE:
                self._tags.popitem(last=False)
        return tag

    def encode(self, session_id: str, seq: int) -> str:
        """The cursor for a position in a session."""
        return f"{_PREFIX}{seq}_{self.tag(session_id)}"

    def decode(self, session_id: str, cursor: str, *, head: int) -> int:
        """The position a cursor names; 400 for garbage, another session's cursor, or one ahead of ``head``."""
        body = cursor.removeprefix(_PREFIX)
        seq_text, _, tag = body.partition("_")
        # ASCII only: str.isdigit() also accepts digits such as '²' that int() refuses.
        digits = seq_text.isascii() and seq_text.isdigit()
        if not cursor.startswith(_PREFIX) or not digits or len(seq_text) > 18 or not tag:
            raise BadRequest("`since` is neither a cursor from this server nor a message id", code="bad_cursor")
        # A plain comparison: a tag keeps one member's sessions apart, it grants nothing, so
        # learning it by timing would give nothing the owner check does not already refuse.
        if tag != self.tag(session_id):
            raise BadRequest("`since` is a cursor of another session", code="cursor_wrong_session")
        seq = int(seq_text)
        if seq > head:
            raise BadRequest("`since` is ahead of the session: the cursor was not issued for it", code="cursor_ahead")
        return seq

    def etag(self, session_id: str, *, head: int, after: int, limit: int) -> str:
        """The ETag of the page after ``after`` (at most ``limit``) of a session at ``head``.

        The page is a function of the session's state, and every change of that state bumps
        ``head``: equal ETags mean equal answers.
        """
        return f'"{self.tag(session_id)}.{head}.{after}.{limit}"'
