"""How a database that cannot answer reaches a caller: as ``Unavailable`` (503 with Retry-After).

Each driver knows which of its exceptions mean "the database cannot answer now" (a lost
connection, a locked or unwritable file, storage closed under a request) and hands that test
to ``unavailable_on``; the answer the caller gets is made here, the same for every backend.
Anything else (a constraint or a statement the code got wrong) stays what it is: a bug, which
the server reports as a 500 rather than inviting the client to retry it for ever.

Turning an outage into 503 is safe: a failed operation committed nothing, and sends are
idempotent, so the retry the client is told to make can neither lose nor double a message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from pollchat.domain.errors import Unavailable

_P = ParamSpec("_P")
_T = TypeVar("_T")

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


def unavailable_on(
    is_outage: IsOutage,
) -> Callable[[Callable[_P, Coroutine[Any, Any, _T]]], Callable[_P, Coroutine[Any, Any, _T]]]:
    """A decorator turning the exceptions ``is_outage`` accepts into ``Unavailable``."""

    def decorate(method: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        @functools.wraps(method)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            try:
                return await method(*args, **kwargs)
            except Exception as exc:
                if isinstance(exc, Unavailable) or not is_outage(exc):
                    raise
                raise unavailable(exc) from exc

        return wrapper

    return decorate
