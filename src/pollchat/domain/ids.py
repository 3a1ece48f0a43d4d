"""Identifiers the server mints. Prefixes keep a message id apart from a cursor or a session id."""

from __future__ import annotations

import re
import secrets

MESSAGE_PREFIX = "msg_"
_MESSAGE_ID = re.compile(r"msg_[0-9a-f]{24}")
_USER_ID = re.compile(r"u_[0-9a-f]{16}")


def new_message_id() -> str:
    """A fresh message id, ``msg_`` and 24 hex digits."""
    return MESSAGE_PREFIX + secrets.token_hex(12)


def is_well_formed_message_id(text: str) -> bool:
    """Whether ``text`` could be a message id this server minted (anything else names no message)."""
    return _MESSAGE_ID.fullmatch(text) is not None


def new_session_id() -> str:
    """A fresh session id (valid in the contract's session id alphabet)."""
    return "s_" + secrets.token_hex(10)


def new_user_id() -> str:
    """A fresh user id."""
    return "u_" + secrets.token_hex(8)


def is_well_formed_user_id(text: str) -> bool:
    """Whether ``text`` could be a user id this server minted (anything else names no user)."""
    return _USER_ID.fullmatch(text) is not None
