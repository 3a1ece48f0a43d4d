"""How a database that cannot answer reaches a caller: as ``Unavailable`` (503 with Retry-After).

Each driver knows which of its exceptions mean "the database cannot answer now" (a lost
connection, a locked or unwritable file, storage closed under a request) and hands that test
to ``as_unavailable`` or ``outages_unavailable``; the answer the caller gets is made here, the same for every backend.
Anything else (a constraint or a statement the code got wrong) stays what it is: a bug, which
the server reports as a 500 rather than inviting the client to retry it for ever.

Turning an outage into 503 is safe: a failed operation committed nothing, and sends are
idempotent, so the retry the client is told to make can neither lose nor double a message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pollchat.domain.errors import PollchatError, Unavailable

IsOutage = Callable[[BaseException], bool]
RETRY_AFTER_SECONDS = 1.0


def unavailable(cause: BaseException | str) -> Unavailable:
    """The refusal for a database that cannot answer, naming what went wrong without its details."""
    what = cause if isinstance(cause, str) else type(cause).__name__
    return Unavailable(
        f"the database cannot answer now ({what}); retry shortly",
        code="storage_unavailable",
        retry_after=RETRY_AFTER_SECONDS,
    )


def closed() -> Unavailable:
    """The refusal for a request reaching storage that is closed (shutting down) or not yet open."""
    return unavailable("storage is closed")


def as_unavailable(exc: Exception, is_outage: IsOutage) -> Unavailable | None:
    """The ``Unavailable`` to raise from ``exc`` when ``is_outage`` says it is one, else ``None``."""
    if isinstance(exc, PollchatError) or not is_outage(exc):
        return None
    return unavailable(exc)


@contextmanager
def outages_unavailable(is_outage: IsOutage) -> Iterator[None]:
    """Within the block, turn the exceptions ``is_outage`` accepts into ``Unavailable``."""
    try:
        yield
    except Exception as exc:
        refusal = as_unavailable(exc, is_outage)
        if refusal is None:
            raise
        raise refusal from exc
