"""Command-line front ends on ``PollingChatService``: ``send`` and ``tail`` for scripts, ``chat`` for people."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any, TextIO

from pollchat.client.models import ChatMessage, ConnectionStatus, MessageEvent
from pollchat.client.service import PollingChatService

STATUS_MARKS = {"sending": "…", "sent": "✓", "delivered": "✓✓", "read": "✓✓ read", "failed": "✗ failed"}


def message_json(message: ChatMessage) -> str:
    """One JSON line for a message, in the server's ``ChatMessage`` shape."""
    data: dict[str, Any] = asdict(message)
    if data.get("error") is None:
        data.pop("error", None)
    data["delivered"] = message.status in ("delivered", "read")
    data["read"] = message.status == "read"
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


async def send_once(service: PollingChatService, text: str, *, timeout: float) -> ChatMessage:
    """Send one message, retrying with one ``client_message_id`` until acknowledged, refused or timed out."""
    await service.start_sending()
    message = service.enqueue(text)
    assert message.client_message_id is not None
    async with asyncio.timeout(timeout):
        response = await service.wait_for(message.client_message_id)
    if not response.success or response.message is None:
        raise RuntimeError(response.error or "refused")
    return response.message


async def tail(service: PollingChatService, out: TextIO) -> None:
    """Print each new or changed message as a JSON line, for ever."""

    def show(event: MessageEvent) -> None:
        out.write(message_json(event.message) + "\n")
        out.flush()

    service.on_message(show)
    await service.start_polling()
    await asyncio.Event().wait()


class TerminalChat:
    """A line-based chat: messages with their status, the connection state, and a prompt."""

    def __init__(self, service: PollingChatService, *, out: TextIO = sys.stdout) -> None:
        self._service = service
        self._out = out
        self._failed: list[ChatMessage] = []
        self._me: str | None = None
        self._shown: tuple[str, str | None] | None = None  # the connection line last printed

    def _print(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    @staticmethod
    def _clock(timestamp: str) -> str:
        try:
            return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
        except ValueError:
            return "--:--:--"

    def _on_message(self, event: MessageEvent) -> None:
        m = event.message
        # Our own unsent messages have no user id yet.
        who = "you" if m.user_id is None or m.user_id == self._me else m.type
        mark = STATUS_MARKS.get(m.status, m.status)
        if m.status == "failed":
            self._failed.append(m)
            self._print(f"  ✗ not sent: {m.content!r} ({m.error}); type /retry to send it again")
        elif event.kind == "new":
            self._print(f"[{self._clock(m.timestamp)}] {who}: {m.content}  {mark}")
        elif who == "you":
            self._print(f"  {mark} {m.content[:40]!r}")
        elif m.edited_at:
            self._print(f"  (edited) {who}: {m.content}")

    def _on_status(self, status: ConnectionStatus) -> None:
        # Only what a person needs to know: the state and, when in trouble, why. Other status
        # changes (a retry count, polling stopped at /quit) would repeat the same line.
        error = status.last_error if status.state in ("error", "offline") else None
        if (status.state, error) == self._shown:
            return
        self._shown = (status.state, error)
        self._print(f"-- connection: {status.state}" + (f" ({error})" if error else ""))

    async def run(self, lines: asyncio.Queue[str | None]) -> None:
        """Chat until ``/quit`` or end of input."""
        self._me = await self._whoami()
        self._service.on_message(self._on_message)
        self._service.on_status(self._on_status)
        await self._service.start_polling()
        self._print(f"Chatting in session {self._service.session_id}. /quit to leave, /retry, /status.")
        # The state reached while we asked who we are was not reported to us: show it now.
        self._on_status(self._service.connection_status)
        while True:
            line = await lines.get()
            if line is None or line.strip() == "/quit":
                break
            text = line.rstrip("\n")
            if text == "/retry":
                failed, self._failed = self._failed, []
                for message in failed:
                    self._service.retry(message)
            elif text == "/status":
                s = self._service.connection_status
                self._print(
                    f"-- {s.state}; last poll {s.last_successful_poll}; errors {s.error_count};"
                    f" pending {len(self._service.pending)}"
                )
            elif text.strip():
                self._service.enqueue(text)
        pending = len(self._service.pending)
        if pending:
            self._print(f"-- {pending} message(s) not yet sent stay queued")

    async def _whoami(self) -> str | None:
        try:
            return await self._service.whoami()
        except Exception:
            return None


async def read_lines(stream: TextIO, queue: asyncio.Queue[str | None]) -> None:
    """Feed a queue with lines typed on ``stream``; None at end of input."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        # Non-blocking reads on a terminal or a pipe: nothing is left blocked when the chat ends.
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stream)
    except (OSError, ValueError):
        while line := await loop.run_in_executor(None, stream.readline):  # a regular file
            await queue.put(line)
        await queue.put(None)
        return
    while raw := await reader.readline():
        await queue.put(raw.decode("utf-8", errors="replace"))
    await queue.put(None)
