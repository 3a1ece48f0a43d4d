"""The error tree: every refusal is a ``PollchatError`` with an HTTP status and a machine code.

The server turns each into ``{"success": false, "error": "...", "code": "..."}`` in one place
(``pollchat.server.errors``); storage and services raise these without knowing about HTTP.
"""

from __future__ import annotations

from typing import Any


class PollchatError(Exception):
    """Base of every error pollchat reports to a caller."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        # Machine-readable facts a client can act on (``max_wait`` of ``wait_too_long``, say),
        # answered beside ``error`` and ``code``.
        self.details = details or {}


class BadRequest(PollchatError):
    """The request is malformed or a value is out of range."""

    status_code = 400
    code = "bad_request"


class Unauthorized(PollchatError):
    """No token, or a token nobody holds."""

    status_code = 401
    code = "unauthorized"


class Forbidden(PollchatError):
    """The caller is known but its role does not allow this."""

    status_code = 403
    code = "forbidden"


class NotFound(PollchatError):
    """The object does not exist, or the caller may not know it exists."""

    status_code = 404
    code = "not_found"


class MethodNotAllowed(PollchatError):
    """The path exists, but not for this method."""

    status_code = 405
    code = "method_not_allowed"


class RequestTimeout(PollchatError):
    """The client took too long to send its request."""

    status_code = 408
    code = "request_timeout"


class Conflict(PollchatError):
    """The object's state refuses this (a closed session, a duplicate name)."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(PollchatError):
    """A body, a content or a batch is larger than the server accepts."""

    status_code = 413
    code = "payload_too_large"


class TooManyRequests(PollchatError):
    """A per-user limit was reached; ``retry_after`` says when to come back."""

    status_code = 429
    code = "rate_limited"


class Unavailable(PollchatError):
    """The server cannot serve now (storage down, shutting down); retry later."""

    status_code = 503
    code = "unavailable"


class ConfigurationError(PollchatError):
    """Settings that cannot work (an unknown database scheme, a missing driver)."""

    code = "configuration_error"


# One sentence for one situation, whichever layer finds it. A session that exists but is
# someone else's is told exactly as one that does not exist.


def no_session(session_id: str) -> NotFound:
    """The refusal for a session that is missing or not the caller's."""
    return NotFound(
        f"no session {session_id!r} that you can use (session ids are shared by every user: pick one nobody"
        " else uses, or let POST /api/v1/admin/chat/sessions make one)",
        code="session_not_found",
    )


def no_message() -> NotFound:
    """The refusal for a message that is missing or in a session the caller may not see."""
    return NotFound("no such message", code="message_not_found")


def no_user() -> NotFound:
    """The refusal for a user id that names nobody."""
    return NotFound("no such user", code="user_not_found")
