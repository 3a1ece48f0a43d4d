"""Bearer tokens: minted at random, stored only as a SHA-256 hash.

Tokens carry 256 bits of randomness, so a fast unsalted hash is enough: nobody can guess
a preimage, and a lookup by hash stays one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets

from pollchat.errors import Unauthorized
from pollchat.storage.base import Storage, User


def new_token() -> str:
    """A fresh bearer token."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; 401 when absent or malformed."""
    if not authorization:
        raise Unauthorized("this request needs an Authorization: Bearer <token> header", code="missing_token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'", code="malformed_token")
    return token


class Authenticator:
    """Turns a bearer token into its user."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def authenticate(self, authorization: str | None) -> User:
        """The user holding the header's token; 401 otherwise."""
        token = bearer_token(authorization)
        user = await self._storage.user_by_token_hash(hash_token(token))
        if user is None:
            raise Unauthorized("unknown token", code="invalid_token")
        return user
