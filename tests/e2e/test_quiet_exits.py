"""The client commands end as Unix tools do: quietly, and at once, when their output is closed (141)
or on Ctrl-C (130), run as real processes against a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.commands import Lines, spawn
from tests.e2e.conftest import POLLCHAT, ServerProcess, clean_env, free_port

pytestmark = pytest.mark.integration

OUTPUT_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for `yes | head -n 1`
INTERRUPTED = 130  # 128 + SIGINT
PROMPTLY = 5.0


def ended(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """The status and the standard error of a process that must end within ``PROMPTLY`` seconds."""
    started = time.monotonic()
    status = proc.wait(timeout=PROMPTLY)
    assert time.monotonic() - started < PROMPTLY
    assert proc.stderr is not None
    return status, proc.stderr.read().decode()


def test_tail_into_head_ends_quietly(echo_server: ServerProcess) -> None:
    """``pollchat tail | head -n 1``: once head has gone, tail used to run on and print a
    BrokenPipeError traceback for every message."""
    token = echo_server.create_user("head-user")
    session_id = "head-session"
    for i in range(3):
        echo_server.send(token, session_id, f"line {i}")
    args = ["tail", "--url", echo_server.url, "--token", token, "--session", session_id]
    with spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tail:
        assert tail.stdout is not None
        head = subprocess.Popen(["head", "-n", "1"], stdin=tail.stdout, stdout=subprocess.PIPE)
        tail.stdout.close()  # head holds the only read end, as in a shell pipeline
        out, _ = head.communicate(timeout=20)
        assert out.decode().count("\n") == 1 and '"content":"line 0"' in out.decode()
        for i in range(3, 6):  # more to print into the closed pipe
            echo_server.send(token, session_id, f"line {i}")
        status, err = ended(tail)
    assert status == OUTPUT_CLOSED
    assert err == ""


def test_tail_of_a_quiet_session_ends_when_its_reader_does(echo_server: ServerProcess) -> None:
    """Nothing to print: tail still notices the closed pipe instead of waiting for a message."""
    token = echo_server.create_user("quiet-reader")
    echo_server.create_session(token, "quiet-session")
    args = ["tail", "--url", echo_server.url, "--token", token, "--session", "quiet-session"]
    with spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tail:
        assert tail.stdout is not None
        time.sleep(1.5)  # following the session by now
        assert tail.poll() is None
        tail.stdout.close()
        status, err = ended(tail)
    assert status == OUTPUT_CLOSED
    assert err == ""


def test_send_with_its_output_closed_sends_and_ends_quietly(echo_server: ServerProcess) -> None:
    token = echo_server.create_user("closed-sender")
    args = ["send", "--url", echo_server.url, "--token", token, "--session", "closed-send", "nobody reads this"]
    read, write = os.pipe()
    os.close(read)
    try:
        with spawn(args, stdout=write, stderr=subprocess.PIPE) as proc:
            os.close(write)
            write = -1
            status, err = ended(proc)
    finally:
        if write >= 0:
            os.close(write)
    assert status == OUTPUT_CLOSED
    assert err == ""
    assert [m["content"] for m in echo_server.drain("closed-send") if m["type"] == "user"] == ["nobody reads this"]


def test_chat_on_pipes_ends_quietly_when_its_output_is_closed(echo_server: ServerProcess) -> None:
    token = echo_server.create_user("closed-chat")
    args = ["chat", "--url", echo_server.url, "--token", token, "--session", "closed-chat"]
    with spawn(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        Lines(proc.stdout).expect(r"Chatting in session closed-chat\.")
        proc.stdout.close()
        status, err = ended(proc)
    assert status == OUTPUT_CLOSED
    assert err == ""


def test_users_create_with_its_output_closed_ends_quietly(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'users.db'}"
    read, write = os.pipe()
    os.close(read)
    try:
        with subprocess.Popen(
            [POLLCHAT, "users", "create", "carol", "--database", database],
            stdout=write,
            stderr=subprocess.PIPE,
            env=clean_env(),
        ) as proc:
            os.close(write)
            write = -1
            status, err = ended(proc)
    finally:
        if write >= 0:
            os.close(write)
    assert status == OUTPUT_CLOSED
    assert err == ""
    # The user was made all the same: its token can be rotated.
    rotated = subprocess.run(
        [POLLCHAT, "users", "rotate", "carol", "--database", database], capture_output=True, env=clean_env()
    )
    assert rotated.returncode == 0, rotated.stderr


@pytest.mark.parametrize("command", ["tail", "chat"])
def test_following_commands_end_quietly_on_sigint(echo_server: ServerProcess, command: str) -> None:
    token = echo_server.create_user(f"sigint-{command}")
    args = [command, "--url", echo_server.url, "--token", token, "--session", f"sigint-{command}"]
    with spawn(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        time.sleep(1.5)  # following the session by now
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        status, err = ended(proc)
    assert status == INTERRUPTED
    assert err == ""


def test_send_ends_quietly_on_sigint_while_it_retries() -> None:
    """Nobody listens at the URL: send keeps retrying until Ctrl-C."""
    url = f"http://127.0.0.1:{free_port()}"
    args = ["send", "--url", url, "--token", "whatever", "--session", "nowhere", "--timeout", "60", "hello?"]
    with spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        time.sleep(1.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        status, err = ended(proc)
        assert proc.stdout is not None
        assert proc.stdout.read() == b""
    assert status == INTERRUPTED
    assert err == ""
