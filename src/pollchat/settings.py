"""Server settings, read once at the edge (CLI flags and ``POLLCHAT_*`` variables).

Nothing below the CLI reads the environment: ``create_app`` receives one ``Settings``.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)\s*$")


def parse_rate(value: str) -> str | None:
    """Validate a rate in the notation ``N/second|minute|hour`` (or ``off``).

    Returns:
        The normalised rate string for the ``limits`` library, or ``None`` for ``off``.
    """
    text = value.strip().lower()
    if text in ("off", "none", "0", ""):
        return None
    match = _RATE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"rate {value!r} is not of the form N/second, N/minute, N/hour or off")
    return f"{int(match.group(1))}/{match.group(2)}"


class Settings(BaseSettings):
    """Every knob of the server; each has a ``POLLCHAT_<NAME>`` environment variable."""

    model_config = SettingsConfigDict(env_prefix="POLLCHAT_", extra="ignore", validate_default=True)

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    database_url: str = Field(
        "sqlite:///pollchat.db",
        description="sqlite:///relative.db, sqlite:////absolute.db or postgresql://user@host:port/db.",
    )
    workers: int = Field(1, ge=1, le=64, description="Worker processes; more than one needs PostgreSQL.")
    assistant: str = Field("echo", description="Who answers as `assistant`: none or echo.")
    admin_token: str | None = Field(
        None, description="Token of the user `admin` (role admin), created or updated at start-up."
    )
    send_rate_limit: str = Field(
        "60/minute", description="Per-user limit on messages sent (a batch counts each): N/second|minute|hour or off."
    )
    poll_rate_limit: str = Field("600/minute", description="Per-user poll limit: N/second|minute|hour or off.")
    session_rate_limit: str = Field("60/minute", description="Per-user limit on sessions created, same notation.")
    action_rate_limit: str = Field(
        "600/minute", description="Per-user limit on every other request (session list, read marks...), same notation."
    )
    rate_limit_url: str = Field(
        "memory://", description="Where rate counters live: memory:// (one process) or redis://host:port/db (shared)."
    )
    max_content_bytes: int = Field(
        32 * 1024, ge=1, description="Largest message content, in UTF-8 bytes (413 past it)."
    )
    max_metadata_bytes: int = Field(4 * 1024, ge=2, description="Largest message metadata object, as JSON bytes.")
    max_batch: int = Field(100, ge=1, description="Most messages in one batch send (413 past it).")
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body in bytes; larger bodies get 413 unread."
    )
    max_page_bytes: int = Field(
        1024 * 1024,
        ge=64 * 1024,
        description="Most bytes of messages in one poll answer; a fuller page stops early with has_more.",
    )
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a request may take to send its headers; a slower connection is closed."
    )
    body_timeout: float = Field(
        30.0, gt=0, description="Seconds a request may take to send its body; a slower one gets 408."
    )
    max_connections: int = Field(
        25_000, ge=10, description="Open connections (or requests in flight) one process serves; more get 503."
    )
    max_wait: float = Field(60.0, gt=0, description="Longest long-poll `wait` a client may ask for, in seconds.")
    max_parked_polls_per_user: int = Field(
        20, ge=1, description="Long polls one user may have parked at once; more get 429."
    )
    inactive_after: float = Field(
        600.0, gt=0, description="Seconds without activity after which a session reports `inactive`."
    )
    gzip_min_bytes: int = Field(1024, ge=0, description="Responses at least this large are gzip-compressed.")
    log_level: str = Field("info", description="Log level of the server: debug, info, warning or error.")

    @field_validator("send_rate_limit", "poll_rate_limit", "session_rate_limit", "action_rate_limit")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        parse_rate(value)
        return value.strip().lower()

    @field_validator("assistant")
    @classmethod
    def _check_assistant(cls, value: str) -> str:
        from pollchat.assistants import ASSISTANTS  # here: the assistants import the storage models

        name = value.strip().lower()
        if name not in ASSISTANTS:
            raise ValueError(f"unknown assistant {value!r}; choose one of {', '.join(ASSISTANTS)}")
        return name

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError(f"unknown log level {value!r}")
        return level
