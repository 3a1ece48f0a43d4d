"""The README documents every setting and every ``pollchat serve`` flag."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from pollchat.cli import serve
from pollchat.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def readme() -> str:
    return README.read_text(encoding="utf-8")


def settings_rows() -> dict[str, str]:
    """The rows of the README's settings table, by the variable they start with."""
    rows: dict[str, str] = {}
    for line in readme().splitlines():
        match = re.match(r"^\|\s*`(POLLCHAT_[A-Z0-9_]+)`\s*\|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def serve_flags() -> list[tuple[str, str]]:
    """Each ``pollchat serve`` option as (its long flag, the setting it sets)."""
    flags = []
    for param in serve.params:
        if isinstance(param, click.Option) and not param.hidden:
            long = [opt for opt in param.opts if opt.startswith("--")]
            assert long, f"option {param.name} has no long flag"
            assert param.name is not None
            flags.append((long[0], param.name))
    return flags


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_has_a_documented_variable(name: str) -> None:
    variable = f"POLLCHAT_{name.upper()}"
    assert variable in settings_rows(), f"{variable} is not in the settings table of README.md"


@pytest.mark.parametrize(("flag", "setting"), serve_flags(), ids=[flag for flag, _ in serve_flags()])
def test_every_serve_flag_is_documented_with_its_variable(flag: str, setting: str) -> None:
    assert setting in Settings.model_fields, f"{flag} sets {setting!r}, which is no setting"
    row = settings_rows().get(f"POLLCHAT_{setting.upper()}")
    assert row is not None, f"POLLCHAT_{setting.upper()} is not in the settings table of README.md"
    assert f"`{flag}`" in row, f"the README row of POLLCHAT_{setting.upper()} does not name {flag}"


def test_the_settings_table_names_only_real_settings() -> None:
    documented = set(settings_rows())
    real = {f"POLLCHAT_{name.upper()}" for name in Settings.model_fields}
    assert documented <= real, f"README.md documents settings that do not exist: {sorted(documented - real)}"


def test_there_are_settings_and_flags_to_check() -> None:
    assert len(Settings.model_fields) >= 10
    assert {flag for flag, _ in serve_flags()} >= {"--host", "--port", "--database", "--assistant"}


def api_table_paths() -> list[tuple[str, str]]:
    """(method, path) of every row of the README's API table, with ``/api/v1`` in front."""
    found: list[tuple[str, str]] = []
    for line in readme().splitlines():
        cell = re.match(r"^\|\s*((?:`[A-Z]+[^|]*?`(?:,\s*)?)+)\s*\|", line)
        if not cell:
            continue
        spans = re.findall(r"`([A-Z]+)(?: ([^`]+))?`", cell.group(1))
        paths = [path for _, path in spans if path]
        for method, path in spans:
            for target in [path] if path else paths:
                bare = re.sub(r"[?\[].*$", "", target)  # without the query or its options
                found.append((method, bare if bare.startswith("/api/") else "/api/v1" + bare))
    return found


def test_every_path_of_the_readmes_api_table_exists() -> None:
    """The README said ``GET /health`` was at the root; it is ``/api/v1/health``."""
    from pollchat.server.app import create_app

    schema = create_app(Settings(database_url="sqlite:///:memory:")).openapi()["paths"]
    rows = api_table_paths()
    assert len(rows) >= 12
    for method, path in rows:
        template = re.sub(r"\{[^}]+\}", "{}", path)
        known = {re.sub(r"\{[^}]+\}", "{}", p): ops for p, ops in schema.items()}
        assert template in known, f"README names {method} {path}, which the API does not have"
        assert method.lower() in known[template], f"README names {method} {path}, but the path has no {method}"
