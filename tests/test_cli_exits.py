"""How ``pollchat`` commands end when interrupted: the shell's 130 for Ctrl-C, nothing printed."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pollchat import cli


class InterruptedStorage:
    """A database that is never reached: Ctrl-C comes while opening it."""

    async def open(self) -> None:
        raise KeyboardInterrupt

    async def close(self) -> None:
        pass


def test_cli_users_ends_quietly_on_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """click's own answer to Ctrl-C was "Aborted!" and status 1."""
    monkeypatch.setattr(cli, "create_storage", lambda url: InterruptedStorage())
    result = CliRunner().invoke(cli.main, ["users", "create", "dave", "--database", "sqlite:///unused.db"])
    assert result.exit_code == cli.INTERRUPTED == 130
    assert result.output == ""
