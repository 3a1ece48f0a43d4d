"""Poll cursors: opaque strings naming a position in one session's change sequence.

A cursor is ``c_<seq>_<tag>`` where ``tag`` is derived from the session id, so a cursor of
another session is refused instead of silently skipping or replaying changes. ``since`` also
takes a message id (the seed's ``lastMessageId``): the position at which that message was
created, so every change after it follows.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from pollchat.domain.errors import BadRequest
from pollchat.ids import MESSAGE_PREFIX

_PREFIX = "c_"


@lru_cache(maxsize=65_536)  # every poll answer names its session's tag, twice (cursor and ETag)
def _tag(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:8]


def encode_cursor(session_id: str, seq: int) -> str:
    """The cursor for a position in a session."""
    return f"{_PREFIX}{seq}_{_tag(session_id)}"


def is_message_id(since: str) -> bool:
    """Whether ``since`` names a message rather than a cursor."""
    return since.startswith(MESSAGE_PREFIX)


def decode_cursor(session_id: str, cursor: str, *, head: int) -> int:
    """The position a cursor names; 400 for garbage, another session's cursor, or one ahead of ``head``."""
    body = cursor.removeprefix(_PREFIX)
    seq_text, _, tag = body.partition("_")
    # ASCII only: str.isdigit() also accepts digits such as '²' that int() refuses.
    digits = seq_text.isascii() and seq_text.isdigit()
    if not cursor.startswith(_PREFIX) or not digits or len(seq_text) > 18 or not tag:
        raise BadRequest("`since` is neither a cursor from this server nor a message id", code="bad_cursor")
    if tag != _tag(session_id):
        raise BadRequest("`since` is a cursor of another session", code="cursor_wrong_session")
    seq = int(seq_text)
    if seq > head:
        raise BadRequest("`since` is ahead of the session: the cursor was not issued for it", code="cursor_ahead")
    return seq
