"""Bearer tokens: minted at random, stored only as a SHA-256 hash.

Tokens carry 256 bits of randomness, so a fast unsalted hash is enough: nobody can guess
a preimage, and a lookup by hash stays one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable

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
    """Turns a bearer token into its user, remembering recent answers for ``ttl`` seconds.

    Every poll carries a token, and looking it up is most of an idle poll's storage work.
    Only tokens that were found are remembered, so a token minted on another instance works
    at once; a token revoked elsewhere keeps working here for at most ``ttl`` seconds, and
    ``forget`` drops every remembered answer at once when this instance changes tokens.
    """

    def __init__(
        self, storage: Storage, *, monotonic: Callable[[], float], ttl: float = 5.0, max_entries: int = 10_000
    ) -> None:
        self._storage = storage
        self._monotonic = monotonic
        self._ttl = ttl
        self._max_entries = max_entries
        self._known: OrderedDict[str, tuple[User, float]] = OrderedDict()

    async def authenticate(self, authorization: str | None) -> User:
        """The user holding the header's token; 401 otherwise."""
        token_hash = hash_token(bearer_token(authorization))
        now = self._monotonic()
        known = self._known.get(token_hash)
        if known is not None and known[1] > now:
            return known[0]
        user = await self._storage.user_by_token_hash(token_hash)
        if user is None:
            self._known.pop(token_hash, None)
            raise Unauthorized("unknown token", code="invalid_token")
        self._known[token_hash] = (user, now + self._ttl)
        self._known.move_to_end(token_hash)
        if len(self._known) > self._max_entries:
            self._known.popitem(last=False)
        return user

    def remembered(self, authorization: str | None) -> User | None:
        """The user of a token looked up lately, without asking storage; None otherwise."""
        try:
            token_hash = hash_token(bearer_token(authorization))
        except Unauthorized:
            return None
        known = self._known.get(token_hash)
        if known is None or known[1] <= self._monotonic():
            return None
        return known[0]

    def forget(self) -> None:
        """Drop every remembered answer (after tokens changed)."""
        self._known.clear()
