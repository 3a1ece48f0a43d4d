"""Operations on sessions, for every SQL backend (see ``command.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pollchat.clock import isoformat
from pollchat.domain.errors import Conflict, no_session
from pollchat.domain.records import Session
from pollchat.storage.command import Operation, Statement, fetch_all, fetch_one
from pollchat.storage.rows import SESSION_COLUMNS, session_of

_INSERT = "INSERT INTO sessions (id, owner_id, client_name, created_at, last_activity) VALUES (?, ?, ?, ?, ?)"
# A missing session yields no row: the one to lock does not exist yet.
_LOCK = "SELECT owner_id, closed, head FROM sessions WHERE id = ? FOR UPDATE"


def insert(session_id: str, *, owner_id: str, client_name: str | None, stamp: str, returning: str) -> Statement:
    """Create the session unless it exists; the ``returning`` columns come back only when created."""
    return fetch_one(
        f"{_INSERT} ON CONFLICT (id) DO NOTHING RETURNING {returning}",
        session_id,
        owner_id,
        client_name,
        stamp,
        stamp,
    )


def create_session(*, session_id: str, owner_id: str, client_name: str | None, now: datetime) -> Operation[Session]:
    """Store a new empty session; an id in use is a ``Conflict``."""
    stamp = isoformat(now)
    row = yield insert(session_id, owner_id=owner_id, client_name=client_name, stamp=stamp, returning=SESSION_COLUMNS)
    if row is None:
        raise Conflict(f"session {session_id!r} exists", code="session_exists")
    return session_of(row)


def lock_session(session_id: str, *, owner_id: str, client_name: str | None, stamp: str) -> Operation[Any]:
    """The ``(owner_id, closed, head)`` of the session, created for ``owner_id`` if new, locked until commit.

    The row lock serialises the writers of one session (on SQLite the single writer does), so
    their change sequence numbers are taken in commit order, and ``head`` stays the session's
    head until this transaction moves it.
    """
    row = yield fetch_one(_LOCK, session_id)
    if row is None:
        row = yield insert(
            session_id, owner_id=owner_id, client_name=client_name, stamp=stamp, returning="owner_id, closed, head"
        )
        if row is None:
            # A racing writer created it meanwhile; the insert waited for its commit.
            row = yield fetch_one(_LOCK, session_id)
    return row


def get_session(session_id: str) -> Operation[Session | None]:
    """One session, whoever owns it."""
    row = yield fetch_one(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", session_id)
    return session_of(row) if row is not None else None


def list_sessions(
    *, owner_id: str | None, status: str | None, inactive_before: datetime, limit: int
) -> Operation[list[Session]]:
    """Sessions, newest activity first; ``owner_id`` None means all of them."""
    where: list[str] = []
    params: list[Any] = []
    if owner_id is not None:
        where.append("owner_id = ?")
        params.append(owner_id)
    if status == "closed":
        where.append("closed = 1")
    elif status in ("active", "inactive"):
        where.append("closed = 0 AND last_activity " + (">= ?" if status == "active" else "< ?"))
        params.append(isoformat(inactive_before))
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    rows = yield fetch_all(
        f"SELECT {SESSION_COLUMNS} FROM sessions {clause} ORDER BY last_activity DESC, id LIMIT ?", *params, limit
    )
    return [session_of(row) for row in rows]


def update_session(
    session_id: str, *, closed: bool | None, client_name: str | None, now: datetime
) -> Operation[Session]:
    """Change a session's status or client name (and its last activity); unknown: ``NotFound``."""
    row = yield fetch_one(
        "UPDATE sessions SET closed = COALESCE(?, closed), client_name = COALESCE(?, client_name),"
        f" last_activity = ? WHERE id = ? RETURNING {SESSION_COLUMNS}",
        None if closed is None else int(closed),
        client_name,
        isoformat(now),
        session_id,
    )
    if row is None:
        raise no_session(session_id)
    return session_of(row)
