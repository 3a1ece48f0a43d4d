"""Settings: the rate notation and the ``POLLCHAT_*`` environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pollchat.settings import Settings, parse_rate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/second", "10/second"),
        ("60/minute", "60/minute"),
        ("1/hour", "1/hour"),
        (" 5 / Minute ", "5/minute"),
        ("007/SECOND", "7/second"),
        ("off", None),
        ("OFF", None),
        ("none", None),
        ("0", None),
        ("", None),
        ("  ", None),
    ],
)
def test_parse_rate_accepts(text: str, expected: str | None) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text",
    ["0/second", "-1/minute", "10/day", "10/minutes", "10 per minute", "ten/second", "10", "/minute", "1.5/second"],
)
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


@pytest.mark.usefixtures("no_env")
def test_defaults() -> None:
    settings = Settings()
    assert (settings.host, settings.port, settings.database_url) == ("127.0.0.1", 8000, "sqlite:///pollchat.db")
    assert (settings.assistant, settings.admin_token, settings.log_level) == ("echo", None, "info")
    assert (settings.send_rate_limit, settings.poll_rate_limit) == ("60/minute", "600/minute")
    assert (settings.max_wait, settings.max_parked_polls_per_user, settings.inactive_after) == (60.0, 20, 600.0)


@pytest.mark.usefixtures("no_env")
def test_reads_pollchat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "HOST": "0.0.0.0",
        "PORT": "9001",
        "DATABASE_URL": "sqlite:////var/lib/chat.db",
        "ASSISTANT": " None ",
        "ADMIN_TOKEN": "secret",
        "SEND_RATE_LIMIT": "5/Second",
        "POLL_RATE_LIMIT": "off",
        "MAX_CONTENT_BYTES": "100",
        "MAX_BATCH": "7",
        "MAX_WAIT": "2.5",
        "MAX_PARKED_POLLS_PER_USER": "3",
        "INACTIVE_AFTER": "30",
        "GZIP_MIN_BYTES": "0",
        "LOG_LEVEL": "DEBUG",
    }.items():
        monkeypatch.setenv(f"POLLCHAT_{name}", value)
    monkeypatch.setenv("UNRELATED_PORT", "1")
    settings = Settings()
    assert (settings.host, settings.port, settings.database_url) == ("0.0.0.0", 9001, "sqlite:////var/lib/chat.db")
    assert (settings.assistant, settings.admin_token, settings.log_level) == ("none", "secret", "debug")
    assert (settings.send_rate_limit, settings.poll_rate_limit) == ("5/second", "off")
    assert (settings.max_content_bytes, settings.max_batch, settings.max_wait) == (100, 7, 2.5)
    assert (settings.max_parked_polls_per_user, settings.inactive_after, settings.gzip_min_bytes) == (3, 30.0, 0)


@pytest.mark.usefixtures("no_env")
def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLCHAT_PORT", "9001")
    assert Settings(port=9002).port == 9002


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("PORT", "eighty"),
        ("SEND_RATE_LIMIT", "fast"),
        ("POLL_RATE_LIMIT", "10/day"),
        ("LOG_LEVEL", "loud"),
        ("MAX_WAIT", "0"),
        ("MAX_CONTENT_BYTES", "0"),
        ("MAX_BATCH", "0"),
        ("MAX_BODY_BYTES", "10"),
        ("MAX_PARKED_POLLS_PER_USER", "0"),
        ("INACTIVE_AFTER", "-5"),
        ("GZIP_MIN_BYTES", "-1"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"POLLCHAT_{name}", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert name.lower() in str(info.value)
