"""Rows to records, shared by the SQL backends: both select the columns in these orders.

Rows are read by position, which SQLite tuples and asyncpg records both support.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pollchat.clock import parse_iso
from pollchat.domain.records import Message, Session, User

USER_COLUMNS = "id, name, role, created_at"
SESSION_COLUMNS = "id, owner_id, client_name, created_at, last_activity, closed, message_count, last_message_id, head"
MESSAGE_COLUMNS = (
    "id, session_id, user_id, type, content, created_at, client_message_id, metadata, delivered, read,"
    " created_seq, change_seq, edited_at, reply_to, generation, error"
)

Row = Sequence[Any]


def user_of(row: Row) -> User:
    """A ``User`` from a row of ``USER_COLUMNS``."""
    return User(id=row[0], name=row[1], role=row[2], created_at=parse_iso(row[3]))


def session_of(row: Row) -> Session:
    """A ``Session`` from a row of ``SESSION_COLUMNS``."""
    return Session(
        id=row[0],
        owner_id=row[1],
        client_name=row[2],
        created_at=parse_iso(row[3]),
        last_activity=parse_iso(row[4]),
        closed=bool(row[5]),
        message_count=row[6],
        last_message_id=row[7],
        head=row[8],
    )


def message_of(row: Row) -> Message:
    """A ``Message`` from a row of ``MESSAGE_COLUMNS``."""
    return Message(
        id=row[0],
        session_id=row[1],
        user_id=row[2],
        type=row[3],
        content=row[4],
        timestamp=parse_iso(row[5]),
        client_message_id=row[6],
        metadata=json.loads(row[7]) if row[7] is not None else None,
        delivered=bool(row[8]),
        read=bool(row[9]),
        created_seq=row[10],
        change_seq=row[11],
        edited_at=parse_iso(row[12]) if row[12] else None,
        reply_to=row[13],
        generation=row[14],
        error=row[15],
    )
