"""The set-up scripts: what they install, and that they ask first."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKE_APT = """#!/bin/sh
echo "$* policy=$(test -x "$POLLCHAT_POLICY_RC_D" && "$POLLCHAT_POLICY_RC_D"; echo $?)" >> "$APT_LOG"
"""


def run_system_deps(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    apt = bin_dir / "apt-get"
    apt.write_text(FAKE_APT)
    apt.chmod(0o755)
    log = tmp_path / "apt.log"
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "APT_LOG": str(log),
        "POLLCHAT_CHROMIUM": str(tmp_path / "no-chromium"),  # so that chromium is missing
        "POLLCHAT_POLICY_RC_D": str(tmp_path / "policy-rc.d"),
        **env,
    }
    done = subprocess.run(
        [str(ROOT / "scripts/system-deps")], env=environment, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    return done, log.read_text().splitlines() if log.exists() else []


def test_system_deps_says_what_and_why_and_can_be_declined(tmp_path: Path) -> None:
    """``scripts/test`` as root installed system packages without a word, and could not be told not to."""
    done, calls = run_system_deps(tmp_path, POLLCHAT_SYSTEM_DEPS="no")
    assert done.returncode == 0, done.stderr
    assert "chromium: the browser tests" in done.stderr
    assert "Not installing" in done.stderr
    assert calls == []


@pytest.mark.skipif(os.geteuid() != 0, reason="installing needs root")
def test_system_deps_installs_with_every_service_kept_stopped(tmp_path: Path) -> None:
    """The nginx package enabled and started a system service."""
    done, calls = run_system_deps(tmp_path, POLLCHAT_SYSTEM_DEPS="yes")
    assert done.returncode == 0, done.stderr
    assert "Installing chromium" in done.stderr
    install = [c for c in calls if c.startswith("install")]
    assert install == ["install -y -qq chromium policy=101"]  # no service may start meanwhile
    assert not (tmp_path / "policy-rc.d").exists()  # and the block is lifted afterwards


def test_packaging_metadata_names_its_licence_as_an_spdx_string() -> None:
    """The deprecated ``project.license`` table made every install print the same warning three times."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["license"] == "MIT"  # an SPDX expression, not a table
    assert config["project"]["license-files"] == ["LICENSE"] and (ROOT / "LICENSE").is_file()
    assert "setuptools>=77" in config["build-system"]["requires"]  # the first to read SPDX strings
