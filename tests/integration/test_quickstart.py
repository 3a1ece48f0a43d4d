"""The README's quick start, run as written: a first start, then chat with nothing but curl."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing
from tests.servers import ServerFactory, clean_env

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8000"
TOKEN_LINK = re.compile(r"#token=([A-Za-z0-9_\-]+)")


def readme_curl_block() -> str:
    """The shell block of the quick start that chats with curl."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    found = [b for b in blocks if "TOKEN=" in b and "curl" in b]
    assert len(found) == 1, "README.md has no single quick-start block chatting with curl"
    return found[0]


def json_values(text: str) -> list[Any]:
    """The JSON documents printed one after another (curl -s adds no newline)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        values.append(value)
    return values


async def shell(script: str, timeout: float = 60) -> str:
    done = await asyncio.to_thread(
        subprocess.run, ["sh", "-c", script], capture_output=True, text=True, env=clean_env(), timeout=timeout
    )
    assert done.returncode == 0, f"{script}\nexit {done.returncode}: {done.stderr}"
    return done.stdout


async def test_chat_with_curl_as_the_readme_shows(servers: ServerFactory) -> None:
    if shutil.which("curl") is None:
        missing("curl not installed")
    server = await servers.start(admin_token=None, env={"POLLCHAT_ASSISTANT": "echo"})
    tokens = TOKEN_LINK.findall(server.stdout)
    assert len(tokens) == 1, server.output()
    # One working link: no "#token=<token>" placeholder printed before the real one, and a
    # first screen short enough to read.
    assert "#token=<" not in server.stdout and server.stdout.count("#token=") == 1, server.output()
    assert len([line for line in server.stdout.splitlines() if line.strip()]) <= 6, server.output()
    token = tokens[0]

    # The curl line the first start prints works as printed.
    printed = [line for line in server.stdout.splitlines() if line.strip().startswith("Or: curl ")]
    assert len(printed) == 1, server.output()
    listed = json_values(await shell(shlex.join(shlex.split(printed[0].strip().removeprefix("Or: ")))))
    assert listed[0]["success"] is True and listed[0]["sessions"] == []

    # The README's block, with the printed token and this server's address.
    block = readme_curl_block()
    assert README_URL in block
    script = re.sub(r"^TOKEN=.*$", f"TOKEN={shlex.quote(token)}", block, count=1, flags=re.MULTILINE)
    # The block names its session by the clock: keep one name, so that running it again is a replay.
    session = re.search(r"^SESSION=(.*?)\s+#", block, re.MULTILINE)
    assert session is not None, "the quick start no longer picks its own session id"
    session_id = (await shell(f"echo {session.group(1)}")).strip()
    assert session_id.startswith("chat-") and len(session_id) > len("chat-")
    script = re.sub(r"^SESSION=.*$", f"SESSION={session_id}", script, count=1, flags=re.MULTILINE)
    script = script.replace(README_URL, server.url)
    sent, first_poll = json_values(await shell(script))
    assert sent["success"] is True, sent
    assert sent["message"]["content"] == "hello"
    assert sent["message"]["client_message_id"] == "m1"
    assert first_poll["success"] is True, first_poll
    assert sent["message_id"] in [m["id"] for m in first_poll["messages"]]

    # Follow the cursor with long polls until the echo's reply (and the delivery of "hello") arrive.
    latest = {m["id"]: m for m in first_poll["messages"]}
    cursor = first_poll["cursor"]
    deadline = time.monotonic() + 30
    while not (
        any(m["type"] == "assistant" for m in latest.values()) and latest[sent["message_id"]]["status"] == "delivered"
    ):
        assert time.monotonic() < deadline, f"no echo within 30 s: {latest}"
        url = f"{server.url}/api/v1/admin/chat/messages?session_id={session_id}&since={cursor}&wait=10"
        (answer,) = json_values(await shell(f"curl -s -H 'Authorization: Bearer {token}' '{url}'"))
        assert answer["success"] is True, answer
        latest.update({m["id"]: m for m in answer["messages"]})
        cursor = answer["cursor"]

    replies = [m for m in latest.values() if m["type"] == "assistant"]
    assert [m["content"] for m in replies] == ["Echo: hello"]

    # Sending the same client_message_id again is a replay: 200, the same message, no second echo.
    replay, _ = json_values(await shell(script))
    assert replay["message_id"] == sent["message_id"]
    (final,) = json_values(
        await shell(
            f"curl -s -H 'Authorization: Bearer {token}'"
            f" '{server.url}/api/v1/admin/chat/messages?session_id={session_id}&limit=500'"
        )
    )
    assert [m["content"] for m in final["messages"]].count("hello") == 1
    assert [m["content"] for m in final["messages"]].count("Echo: hello") == 1
