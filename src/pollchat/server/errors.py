"""Every refusal becomes ``{"success": false, "error": ..., "code": ...}``, here and only here."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from pollchat.domain.errors import BadRequest, PollchatError
from pollchat.server.models import ErrorResponse

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the refusals a route can answer (401 and 400 always)."""
    described = {
        400: "Bad input",
        401: "No or unknown token",
        403: "The caller's role does not allow this",
        404: "No such object, or not the caller's",
        409: "The object's state refuses this",
        405: "The path does not take this method",
        413: "Too large",
        429: "Rate limited; see Retry-After",
        503: "Unavailable; see Retry-After",
    }
    return {s: {"model": ErrorResponse, "description": described[s]} for s in sorted({400, 401, *statuses})}


def error_response(
    status: int,
    message: str,
    code: str,
    retry_after: float | None = None,
    details: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The one error shape."""
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    content = {**(details or {}), "success": False, "error": message, "code": code}
    return JSONResponse(content, status_code=status, headers=headers)


def failure_response(exc: Exception) -> JSONResponse:
    """The answer to a request that raised ``exc``: a ``PollchatError``'s own status, else 500.

    Server-side failures are logged; refusals of the caller (4xx) and 503 are not.
    """
    if isinstance(exc, ValidationError):
        exc = invalid_request(exc.errors())
    if isinstance(exc, PollchatError):
        if exc.status_code >= 500 and exc.status_code != 503:
            logger.error("internal error: %s", exc.message)
        return error_response(exc.status_code, exc.message, exc.code, exc.retry_after, exc.details)
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "internal error; the request changed nothing it could not finish", "internal_error")


# Where an input error is, as FastAPI names it; the wording below names the field alone.
_LOCATIONS = ("body", "query", "path", "header")


def invalid_request(errors: Sequence[Any]) -> BadRequest:
    """One refusal for a request that failed validation, worded the same on every endpoint."""
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in _LOCATIONS)
        kind = error.get("type")
        if kind == "json_invalid":
            return BadRequest("the body is not valid JSON", code="invalid_json")
        if kind == "extra_forbidden":
            parts.append(f"unknown field `{where}`")
        elif kind == "missing":
            parts.append(f"`{where}` is required")
        else:
            message = str(error.get("msg", "invalid"))
            parts.append(f"`{where}`: {message}" if where else message)
    return BadRequest("; ".join(parts) or "invalid request", code="invalid_request")


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception the app can raise to the error shape."""

    async def on_pollchat_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PollchatError)
        return failure_response(exc)

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return failure_response(invalid_request(exc.errors()))

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, str(exc.detail), code)

    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return failure_response(exc)

    app.add_exception_handler(PollchatError, on_pollchat_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
