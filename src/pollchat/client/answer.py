"""What the server's answers mean to the client: refusals, ``Retry-After``, and poll pages.

Every request that does not get a usable answer becomes one ``RequestFailed``, whatever went
wrong, so the loops decide in one place what to do next. The browser client's ``web/api.js``
reads answers by the same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from pollchat.client.models import ChatMessage


class RequestFailed(Exception):
    """A request that did not get a usable answer.

    ``offline``: no answer came at all (no connection, a connection cut, or nothing in time,
    which is also ``timed_out``). Otherwise the server, or a proxy, answered: ``status``,
    its machine ``code`` and JSON ``body`` when it sent one, and ``retry_after`` seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        offline: bool = False,
        timed_out: bool = False,
        retry_after: float | None = None,
        code: str | None = None,
        status: int | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.offline = offline or timed_out
        self.timed_out = timed_out
        self.retry_after = retry_after
        self.code = code
        self.status = status
        self.body = body
        self.cut = False  # a long poll cut while held by something on the way (set by the poller)


@dataclass(frozen=True, slots=True)
class Page:
    """One poll's answer: the changed messages, where to go on from, and whether to ask again at once."""

    messages: list[ChatMessage]
    cursor: str
    has_more: bool


def retry_after(response: httpx.Response, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date, counted from ``now``), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value.strip()):  # not float(): "inf" would pause for ever
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, says RFC 5322
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def refusal(response: httpx.Response, now: datetime) -> RequestFailed:
    """The RequestFailed for a non-success answer received at ``now``; 408, 425, 429 and 5xx are transient."""
    body: dict[str, Any] | None = None
    try:
        data = response.json()
        message, code = str(data.get("error") or response.reason_phrase), data.get("code")
        body = data
    except (ValueError, AttributeError):
        message, code = f"HTTP {response.status_code}", None
    status = response.status_code
    return RequestFailed(
        message,
        transient=status in (408, 425, 429) or status >= 500,
        retry_after=retry_after(response, now),
        code=code,
        status=status,
        body=body,
    )


def page(response: httpx.Response) -> Page:
    """The page of a 200 poll answer; anything else (a proxy's HTML page, a body cut short) fails, transiently."""
    try:
        body = response.json()
        messages = [ChatMessage.from_api(item) for item in body["messages"]]
        cursor, has_more = body["cursor"], body.get("has_more", False)
        if not isinstance(cursor, str):
            raise TypeError("the cursor is not a string")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _unexpected(response, exc) from exc
    return Page(messages, cursor, bool(has_more))


def _unexpected(response: httpx.Response, exc: Exception) -> RequestFailed:
    return RequestFailed(f"unexpected answer: {type(exc).__name__}", transient=True, status=response.status_code)


def stored_message(response: httpx.Response) -> dict[str, Any]:
    """The message a 2xx send answer acknowledges; an answer without one fails, transiently (a retry is idempotent)."""
    try:
        message = response.json()["message"]
        ChatMessage.from_api(message)
    except (ValueError, TypeError, KeyError) as exc:
        raise _unexpected(response, exc) from exc
    return dict(message)


def batch_results(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    """The ``count`` per-message results of a 200 batch answer; anything else fails, transiently."""
    try:
        results = response.json()["results"]
        if not isinstance(results, list) or len(results) != count or not all(isinstance(r, dict) for r in results):
            raise TypeError("not one result per message")
        for result in results:
            if result.get("message") is not None:
                ChatMessage.from_api(result["message"])
    except (ValueError, TypeError, KeyError) as exc:
        raise _unexpected(response, exc) from exc
    return results


def query_number(value: float) -> str:
    """A number as the browser client writes it in a query string: ``25`` and ``12.5``, never ``25.0``."""
    return str(int(value)) if value == int(value) else repr(value)
