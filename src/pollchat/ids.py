"""Identifiers the server mints. Prefixes keep a message id apart from a cursor or a session id."""

from __future__ import annotations

import secrets

MESSAGE_PREFIX = "msg_"


def new_message_id() -> str:
    """A fresh message id, ``msg_`` and 24 hex digits."""
    return MESSAGE_PREFIX + secrets.token_hex(12)


def new_session_id() -> str:
    """A fresh session id (valid in the contract's session id alphabet)."""
    return "s_" + secrets.token_hex(10)


def new_user_id() -> str:
    """A fresh user id."""
    return "u_" + secrets.token_hex(8)
