"""Starting and stopping real servers: SIGTERM with parked polls, the first admin token, users from the shell."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, API
from tests.servers import ServerFactory, auth, clean_env, free_port, pollchat_command

pytestmark = pytest.mark.integration

TOKEN_LINK = re.compile(r"#token=([A-Za-z0-9_\-]+)")


async def parked_polls(http: httpx.AsyncClient) -> float:
    r = await http.get("/metrics")
    assert r.status_code == 200
    match = re.search(r"^pollchat_parked_long_polls (\S+)$", r.text, re.MULTILINE)
    assert match, r.text
    return float(match.group(1))


async def test_sigterm_answers_parked_polls_and_exits_cleanly(servers: ServerFactory) -> None:
    server = await servers.start()
    async with httpx.AsyncClient(base_url=server.url, headers=auth(ADMIN_TOKEN), timeout=40.0) as http:
        r = await http.post(f"{API}/sessions", json={"id": "waiting"})
        assert r.status_code == 201, r.text
        r = await http.get(f"{API}/messages", params={"session_id": "waiting"})
        cursor = r.json()["cursor"]

        poll = asyncio.create_task(
            http.get(f"{API}/messages", params={"session_id": "waiting", "since": cursor, "wait": 30})
        )
        try:
            deadline = time.monotonic() + 10
            while await parked_polls(http) < 1:
                assert not poll.done(), poll.result().text
                assert time.monotonic() < deadline, "the long poll never parked"
                await asyncio.sleep(0.05)

            sent = await http.post(
                f"{API}/messages",
                json={"content": "just before SIGTERM", "session_id": "other", "client_message_id": "k"},
            )
            assert sent.status_code == 201, sent.text

            server.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            answer = await asyncio.wait_for(asyncio.shield(poll), timeout=5)
            answered_after = time.monotonic() - signalled
        finally:
            if not poll.done():
                poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["messages"] == []
    assert body["cursor"] == cursor
    assert answered_after < 5
    code = await server.wait_exit(15)
    assert code == 0, f"exit code {code}:\n{server.output()}"
    assert "Traceback" not in server.stderr, server.output()

    restarted = await servers.start(port=server.port)
    async with httpx.AsyncClient(base_url=restarted.url, headers=auth(ADMIN_TOKEN), timeout=10.0) as http:
        r = await http.get(f"{API}/messages", params={"session_id": "other"})
        assert r.status_code == 200, r.text
        assert [(m["id"], m["content"]) for m in r.json()["messages"]] == [
            (sent.json()["message_id"], "just before SIGTERM")
        ]


async def test_first_start_prints_an_admin_token_once(servers: ServerFactory) -> None:
    first = await servers.start(admin_token=None)
    tokens = TOKEN_LINK.findall(first.stdout)
    assert len(tokens) == 1, first.output()
    token = tokens[0]
    async with httpx.AsyncClient(base_url=first.url, headers=auth(token), timeout=10.0) as http:
        r = await http.post("/api/v1/admin/users", json={"name": "bob", "role": "member"})
        assert r.status_code == 201, r.text
        assert r.json()["user"]["role"] == "member"

    first.send_signal(signal.SIGTERM)
    assert await first.wait_exit(15) == 0, first.output()

    second = await servers.start(admin_token=None, port=first.port)
    assert TOKEN_LINK.search(second.stdout) is None, second.output()
    assert "First start" not in second.stdout and token not in second.stdout, second.output()
    async with httpx.AsyncClient(base_url=second.url, headers=auth(token), timeout=10.0) as http:
        r = await http.get("/api/v1/admin/users/me")
        assert r.status_code == 200, r.text
        assert r.json()["user"]["role"] == "admin"


async def test_users_create_from_the_shell_while_serving(servers: ServerFactory) -> None:
    server = await servers.start()
    done = await asyncio.to_thread(
        subprocess.run,
        [*pollchat_command(), "users", "create", "carol", "--role", "operator", "--database", servers.database_url],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    assert token and " " not in token

    async with httpx.AsyncClient(base_url=server.url, headers=auth(token), timeout=10.0) as http:
        r = await http.get("/api/v1/admin/users/me")
        assert r.status_code == 200, r.text
        assert r.json()["user"]["name"] == "carol"
        assert r.json()["user"]["role"] == "operator"
        # An operator, not an admin: it may post as assistant but not manage users.
        r = await http.post(f"{API}/messages", json={"content": "hi", "session_id": "ops", "type": "assistant"})
        assert r.status_code == 201, r.text
        r = await http.get("/api/v1/admin/users")
        assert r.status_code == 403, r.text

    # The same name again is refused without a traceback.
    again = await asyncio.to_thread(
        subprocess.run,
        [*pollchat_command(), "users", "create", "carol", "--database", servers.database_url],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert again.returncode != 0
    assert "Traceback" not in again.stderr, again.stderr
    assert "carol" in again.stderr


async def test_flags_win_over_the_environment(servers: ServerFactory) -> None:
    env_port, flag_port = free_port(), free_port()
    while flag_port == env_port:
        flag_port = free_port()
    server = await servers.start(port=flag_port, env={"POLLCHAT_PORT": str(env_port)})
    assert server.port == flag_port
    async with httpx.AsyncClient(timeout=2.0) as http:
        r = await http.get(f"http://127.0.0.1:{flag_port}/api/v1/health")
        assert r.status_code == 200
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{env_port}/api/v1/health")


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"POLLCHAT_SEND_RATE_LIMIT": "lots"}, [], ["send_rate_limit", "lots"]),
        ({"POLLCHAT_POLL_RATE_LIMIT": "10/fortnight"}, [], ["poll_rate_limit", "10/fortnight"]),
        ({}, ["--assistant", "oracle"], ["assistant", "oracle"]),
        ({}, ["--log-level", "loud"], ["log", "loud"]),
    ],
    ids=["send-rate", "poll-rate", "assistant", "log-level"],
)
async def test_bad_settings_exit_with_a_clear_message(
    servers: ServerFactory, env: dict[str, str], args: list[str], expected: list[str]
) -> None:
    server = servers.spawn(env=env, args=args)
    code = await server.wait_exit(30)
    assert code is not None, f"pollchat serve kept running:\n{server.output()}"
    assert code != 0
    output = server.stdout + server.stderr
    assert "Traceback" not in output, output
    for word in expected:
        assert word in server.stderr, server.output()
