"""``pollchat users``: create, rotate and revoke tokens straight in the database."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pollchat.cli import main
from pollchat.domain.records import User
from pollchat.server.app import create_app
from pollchat.server.auth import hash_token
from pollchat.settings import Settings
from pollchat.storage import create_storage
from tests.conftest import Api, FakeClock, running
from tests.server.support import assert_error
from tests.servers import clean_env, pollchat_command
from tests.storage.conftest import empty_database


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chat.db'}"


def users(database: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["users", *args, "--database", database], env={"POLLCHAT_DATABASE_URL": None})


def holder(database: str, token: str) -> User | None:
    """Who holds ``token`` in the database."""

    async def look() -> User | None:
        storage = create_storage(database)
        await storage.open()
        try:
            return await storage.user_by_token_hash(hash_token(token))
        finally:
            await storage.close()

    return asyncio.run(look())


def created(database: str, name: str) -> str:
    result = users(database, "create", name)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_cli_users_rotate_prints_a_new_token_and_the_old_one_stops(database: str) -> None:
    old = created(database, "alice")
    alice = holder(database, old)
    assert alice is not None and alice.name == "alice"
    result = users(database, "rotate", "alice")
    assert result.exit_code == 0, result.output
    new = result.stdout.strip()
    assert len(new) >= 32 and " " not in new and new != old
    assert holder(database, old) is None
    assert holder(database, new) == alice


def test_cli_users_revoke_leaves_no_working_token_until_rotated(database: str) -> None:
    token = created(database, "alice")
    bob = created(database, "bob")
    alice = holder(database, token)
    result = users(database, "revoke", "alice")
    assert result.exit_code == 0, result.output
    assert "alice" in result.stdout
    assert holder(database, token) is None
    assert holder(database, bob) is not None
    rotated = users(database, "rotate", "alice")
    assert rotated.exit_code == 0, rotated.output
    assert holder(database, rotated.stdout.strip()) == alice


@pytest.mark.parametrize("command", ["rotate", "revoke"])
def test_cli_users_unknown_name_fails_cleanly(database: str, command: str) -> None:
    token = created(database, "alice")
    result = users(database, command, "nobody")
    assert result.exit_code == 1
    assert "no user named 'nobody'" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert holder(database, token) is not None


async def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``pollchat ARGS`` as its own process, as an operator at a shell would run it."""
    return await asyncio.to_thread(
        subprocess.run, [*pollchat_command(), *args], capture_output=True, text=True, env=clean_env(), timeout=60
    )


async def remembered_alice(api: Api) -> str:
    """A new user's token, just used for a poll: the instance remembers it."""
    token = await api.user("alice")
    await api.send(token, "s1", "hello")
    assert (await api.poll(token, "s1")).status_code == 200
    assert api.app.state.services.auth.remembered(f"Bearer {token}") is not None
    return token


async def test_cli_users_revoke_reaches_a_server_on_postgres_at_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The command's NOTIFY makes a running instance forget the token; its clock stands still, so time cannot."""
    async with empty_database("postgres", tmp_path) as url:
        async with running(create_app(make_settings(database_url=url), clock=FakeClock())) as api:
            token = await remembered_alice(api)
            done = await run_cli("users", "revoke", "alice", "--database", url)
            assert done.returncode == 0, done.stderr
            async with asyncio.timeout(10):
                while (await api.poll(token, "s1")).status_code != 401:
                    await asyncio.sleep(0.01)
            assert_error(await api.http.get("/api/v1/admin/users/me", headers=api.auth(token)), 401)


async def test_cli_users_rotate_on_sqlite_reaches_a_running_server_within_the_ttl(
    make_settings: Callable[..., Settings],
) -> None:
    """Nothing tells a server that another process wrote its SQLite file: a remembered token ages out."""
    settings = make_settings()
    clock = FakeClock()
    async with running(create_app(settings, clock=clock)) as api:
        token = await remembered_alice(api)
        done = await run_cli("users", "rotate", "alice", "--database", settings.database_url)
        assert done.returncode == 0, done.stderr
        new = done.stdout.strip()
        assert (await api.poll(new, "s1")).status_code == 200  # a new token works at once
        clock.advance(5.1)
        assert_error(await api.poll(token, "s1"), 401, "invalid_token")
