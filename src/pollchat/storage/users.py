"""Operations on users and their tokens, for every SQL backend (see ``command.py``)."""

from __future__ import annotations

from datetime import datetime

from pollchat.clock import isoformat, parse_iso
from pollchat.domain.errors import Conflict, no_user
from pollchat.domain.ids import new_user_id
from pollchat.domain.records import Role, User
from pollchat.storage.command import Lock, Operation, TokenChanged, execute, fetch_all, fetch_one
from pollchat.storage.rows import USER_COLUMNS, user_of

_INSERT = "INSERT INTO users (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)"
# The hash a user without a working token holds: unique like every hash (it names the user),
# and never a SHA-256 hex digest, so no token can match it.
_REVOKED = "'revoked:' || id"


def create_user(*, name: str, role: Role, token_hash: str, now: datetime) -> Operation[User]:
    """Store a new user; a taken name is a ``Conflict``."""
    user = User(id=new_user_id(), name=name, role=role, created_at=now)
    # ON CONFLICT (name), not a look first: two instances creating one name at once must not
    # both pass the look and leave one of them with a unique violation for an answer.
    row = yield fetch_one(
        f"{_INSERT} ON CONFLICT (name) DO NOTHING RETURNING id", user.id, name, role, token_hash, isoformat(now)
    )
    if row is None:
        raise Conflict(f"a user named {name!r} exists", code="user_exists")
    return user


def put_user(*, name: str, role: Role, token_hash: str, now: datetime) -> Operation[User]:
    """Create the user, or set its role and token if the name exists."""
    # Two put_user of one name (instances starting together) must not both insert it.
    yield Lock("users")
    row = yield fetch_one("SELECT id, name, role, created_at, token_hash FROM users WHERE name = ?", name)
    # A token given to another user by hand wins: the old holder loses it.
    taken = yield fetch_all(
        f"UPDATE users SET token_hash = {_REVOKED} WHERE token_hash = ? AND name != ? RETURNING id",
        token_hash,
        name,
    )
    for (user_id,) in taken:
        yield TokenChanged(user_id)
    if row is None:
        user = User(id=new_user_id(), name=name, role=role, created_at=now)
        yield execute(_INSERT, user.id, name, role, token_hash, isoformat(now))
        return user
    if (row[2], row[4]) != (role, token_hash):
        yield execute("UPDATE users SET role = ?, token_hash = ? WHERE id = ?", role, token_hash, row[0])
        yield TokenChanged(row[0])
    return User(id=row[0], name=row[1], role=role, created_at=parse_iso(row[3]))


def set_token(user_id: str, token_hash: str | None) -> Operation[User]:
    """Give the user ``token_hash``, or the revoked marker for ``None``; unknown user: ``NotFound``."""
    if token_hash is not None:
        holder = yield fetch_one("SELECT 1 FROM users WHERE token_hash = ? AND id != ?", token_hash, user_id)
        if holder is not None:
            raise Conflict("another user holds this token", code="token_in_use")
    row = yield fetch_one(
        f"UPDATE users SET token_hash = COALESCE(CAST(? AS TEXT), {_REVOKED}) WHERE id = ? RETURNING {USER_COLUMNS}",
        token_hash,
        user_id,
    )
    if row is None:
        raise no_user()
    yield TokenChanged(user_id)
    return user_of(row)


def user_by_token_hash(token_hash: str) -> Operation[User | None]:
    """The user holding a token, if any."""
    row = yield fetch_one(f"SELECT {USER_COLUMNS} FROM users WHERE token_hash = ?", token_hash)
    return user_of(row) if row is not None else None


def list_users() -> Operation[list[User]]:
    """Every user, oldest first."""
    rows = yield fetch_all(f"SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id")
    return [user_of(row) for row in rows]


def has_admin() -> Operation[bool]:
    """Whether any user has role admin."""
    row = yield fetch_one("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1")
    return row is not None
