"""Command-line front ends on ``PollingChatService`` for scripts: ``send``, ``tail`` and chat in plain lines.

Standard output may be a pipe whose reader goes away (``pollchat tail | head -n 1``). Python
ignores SIGPIPE, so a write to it fails with ``BrokenPipeError``; ``LineOutput`` turns the first
such failure, or a pipe seen closed while idle, into ``OutputClosed``, which the command line
ends quietly with the status a shell reports for a tool stopped by SIGPIPE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TextIO

from pollchat.client.models import ChatMessage, ConnectionStatus, MessageEvent
from pollchat.client.service import PollingChatService
from pollchat.client.timeline import STATUS_MARKS, Change, Timeline, clock


class OutputClosed(Exception):
    """Whoever read our standard output has gone (a pipe closed at its other end)."""


def message_json(message: ChatMessage) -> str:
    """One JSON line for a message, in the server's ``ChatMessage`` shape."""
    data: dict[str, Any] = asdict(message)
    if data.get("error") is None:
        data.pop("error", None)
    data["delivered"] = message.status in ("delivered", "read")
    data["read"] = message.status == "read"
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


class LineOutput:
    """Whole lines to a stream, each flushed; notices when the stream's reader has gone."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        """Whether a write failed because nobody reads the stream any more."""
        return self._closed.is_set()

    def line(self, text: str) -> None:
        """Write ``text`` and a newline, and flush; nothing once the stream is closed."""
        if self._closed.is_set():
            return
        try:
            self._stream.write(text + "\n")
            self._stream.flush()
        except BrokenPipeError:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Return once the stream's reader has gone.

        A write that fails says so; a pipe is also watched, so that a command with nothing to
        print (a quiet session) still ends as soon as its reader does: the write end of a pipe
        whose read end is closed polls as an error, which the event loop reports as readable.
        """
        loop = asyncio.get_running_loop()
        fd = self._pipe_fd()
        watching = False
        if fd is not None:
            try:
                loop.add_reader(fd, self._closed.set)
                watching = True
            except (OSError, ValueError, NotImplementedError):
                pass
        try:
            await self._closed.wait()
        finally:
            if watching and fd is not None:
                loop.remove_reader(fd)

    def _pipe_fd(self) -> int | None:
        try:
            fd = self._stream.fileno()
            return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
        except (OSError, ValueError, AttributeError):
            return None


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


async def tail(service: PollingChatService, out: LineOutput) -> None:
    """Print each new or changed message as a JSON line until the output is closed, then raise ``OutputClosed``."""
    service.on_message(lambda event: out.line(message_json(event.message)))
    await service.start_polling()
    await out.wait_closed()
    raise OutputClosed


async def whoami(service: PollingChatService) -> str | None:
    """Our user id, or None while the server cannot say."""
    try:
        return await service.whoami()
    except Exception:
        return None


def run_command(service: PollingChatService, timeline: Timeline, text: str, say: Callable[[str], None]) -> bool:
    """Run one line typed in a chat: a command or a message. False when it was ``/quit``."""
    command = text.strip()
    if command == "/quit":
        return False
    if command == "/retry":
        failed = timeline.failed()
        for message in failed:
            service.retry(message)
        if not failed:
            say("-- nothing to retry")
    elif command == "/status":
        s = service.connection_status
        last = s.last_successful_poll.astimezone().strftime("%H:%M:%S") if s.last_successful_poll else "never"
        say(f"-- {s.state}; last poll {last}; errors {s.error_count}; pending {len(service.pending)}")
    elif command:
        service.enqueue(text)
    return True


class LineChat:
    """The chat in plain lines, for scripts and for terminals that cannot show the chat screen.

    Each event is a line of its own: a new message as ``[HH:MM:SS] who: text  mark``, a later
    status of ours as ``  mark 'text'``, an edit as ``  (edited) who: text``, text that grew as
    ``  (updated) who: text``, a refusal as ``  ✗ not sent: ...``, and ``-- connection: state``
    as it changes. The messages of one page (the history, say) come out in time order.
    """

    def __init__(self, service: PollingChatService, out: LineOutput) -> None:
        self._service = service
        self._out = out
        self._timeline = Timeline()
        self._batch: list[MessageEvent] = []
        self._shown: tuple[str, str | None] | None = None  # the connection line last printed

    async def run(self, lines: asyncio.Queue[str | None]) -> None:
        """Chat until ``/quit`` or end of input; raises ``OutputClosed`` when the output is."""
        self._timeline.set_me(await whoami(self._service))
        self._service.on_message(self._on_message)
        self._service.on_status(self._on_status)
        await self._service.start_polling()
        self._out.line(f"Chatting in session {self._service.session_id}. /quit to leave, /retry, /status.")
        # The state reached while we asked who we are was not reported to us: show it now.
        self._on_status(self._service.connection_status)
        closed = asyncio.ensure_future(self._out.wait_closed())
        try:
            while True:
                typed = asyncio.ensure_future(lines.get())
                await asyncio.wait({typed, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed.done():
                    typed.cancel()
                    raise OutputClosed
                line = typed.result()
                if line is None or not run_command(self._service, self._timeline, line.rstrip("\n"), self._out.line):
                    break
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closed
        self._flush()
        pending = len(self._service.pending)
        if pending:
            self._out.line(f"-- {pending} message(s) not yet sent stay queued")
        if self._out.closed:
            raise OutputClosed

    def _on_message(self, event: MessageEvent) -> None:
        # The events of one poll arrive together, in change order: print them on the next turn
        # of the loop, new messages sorted by time.
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append(event)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        changes = [self._timeline.apply(event) for event in batch]
        order = {entry.key: n for n, entry in enumerate(self._timeline.entries())}
        new = sorted((c for c in changes if c.kind == "new"), key=lambda c: order[c.key])
        for change in [*new, *(c for c in changes if c.kind != "new")]:
            text = self._describe(change)
            if text is not None:
                self._out.line(text)

    def _describe(self, change: Change) -> str | None:
        m = change.message
        who = "you" if change.ours else m.type
        if m.status == "failed" and change.kind in ("new", "status"):
            return f"  ✗ not sent: {m.content!r} ({m.error}); type /retry to send it again"
        if change.kind == "new":
            return f"[{clock(m.timestamp, seconds=True)}] {who}: {m.content}  {STATUS_MARKS.get(m.status, m.status)}"
        if change.kind == "edit":
            return f"  (edited) {who}: {m.content}"
        if change.kind == "content":
            return f"  (updated) {who}: {m.content}"
        if change.kind == "status" and change.ours:
            return f"  {STATUS_MARKS.get(m.status, m.status)} {m.content[:40]!r}"
        return None

    def _on_status(self, status: ConnectionStatus) -> None:
        # Only what a person needs to know: the state and, when in trouble, why. Other status
        # changes (a retry count, polling stopped at /quit) would repeat the same line.
        error = status.last_error if status.state in ("error", "offline") else None
        if status.state == "offline" and not status.error_count and error is None:
            return  # not tried yet
        if (status.state, error) == self._shown:
            return
        self._shown = (status.state, error)
        self._out.line(f"-- connection: {status.state}" + (f" ({error})" if error else ""))


async def read_lines(stream: TextIO, queue: asyncio.Queue[str | None]) -> None:
    """Feed a queue with lines typed on ``stream``; None at end of input."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    if not _pollable(stream):  # a regular file, /dev/null: reads never block for long
        while line := await loop.run_in_executor(None, stream.readline):
            await queue.put(line)
        await queue.put(None)
        return
    # Non-blocking reads on a terminal or a pipe: nothing is left blocked when the chat ends.
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stream)
    try:
        while raw := await reader.readline():
            await queue.put(raw.decode("utf-8", errors="replace"))
        await queue.put(None)
    finally:
        transport.close()
        # The descriptor is shared with the shell that started us: give it back blocking.
        with contextlib.suppress(OSError, ValueError):
            os.set_blocking(stream.fileno(), True)


def _pollable(stream: TextIO) -> bool:
    """Whether the event loop can wait for input on ``stream``: a pipe, a socket or a terminal."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
        return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stream.isatty()
    except (OSError, ValueError, AttributeError):
        return False
