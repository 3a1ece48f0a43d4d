"""Bearer tokens: minted at random, stored only as a SHA-256 hash.

Tokens carry 256 bits of randomness, so a fast unsalted hash is enough: nobody can guess
a preimage, and a lookup by hash stays one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable

from pollchat.domain.errors import Unauthorized
from pollchat.domain.records import User
from pollchat.storage.base import Storage


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
    at once. Storage announces every token change it commits or hears of (``token_changed``,
    wired to ``Storage.on_token_change``): a rotated or revoked token stops working at once
    here, and on PostgreSQL on every other instance too. The ``ttl`` only bounds changes
    nobody announces, such as ``pollchat users`` writing a SQLite file under a running server.

    A lookup that was in flight while a change was announced may have read the old row, so
    its answer is used once but not remembered.
    """

    def __init__(
        self, storage: Storage, *, monotonic: Callable[[], float], ttl: float = 5.0, max_entries: int = 10_000
    ) -> None:
        self._storage = storage
        self._monotonic = monotonic
        self._ttl = ttl
        self._max_entries = max_entries
        self._known: OrderedDict[str, tuple[User, float]] = OrderedDict()
        self._generation = 0  # grows with every forget: a lookup spanning one is not remembered

    async def authenticate(self, authorization: str | None) -> User:
        """The user holding the header's token; 401 otherwise."""
        token_hash = hash_token(bearer_token(authorization))
        now = self._monotonic()
        known = self._known_user(token_hash, now)
        if known is not None:
            return known
        generation = self._generation
        user = await self._storage.user_by_token_hash(token_hash)
        if user is None:
            self._known.pop(token_hash, None)
            raise Unauthorized("unknown token", code="invalid_token")
        if generation != self._generation:
            return user
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
        return self._known_user(token_hash, self._monotonic())

    def _known_user(self, token_hash: str, now: float) -> User | None:
        known = self._known.get(token_hash)
        return known[0] if known is not None and known[1] > now else None

    def forget(self) -> None:
        """Drop every remembered answer (after tokens changed)."""
        self._generation += 1
        self._known.clear()

    def forget_user(self, user_id: str) -> None:
        """Drop the remembered answers naming one user (its token or role changed)."""
        self._generation += 1
        stale = [token_hash for token_hash, (user, _) in self._known.items() if user.id == user_id]
        for token_hash in stale:
            del self._known[token_hash]

    def token_changed(self, user_id: str | None) -> None:
        """Storage's announcement: one user's token changed, or (None) perhaps anyone's."""
        if user_id is None:
            self.forget()
        else:
            self.forget_user(user_id)
