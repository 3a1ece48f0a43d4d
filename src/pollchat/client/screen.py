"""The chat screen of ``pollchat chat`` on a terminal, drawn with prompt_toolkit.

Top to bottom: the timeline (each message once, in time order, its status mark updated in
place), a status line (connection state, session, what is queued), and the prompt, which stays
put while messages arrive above it. The screen is redrawn from the ``Timeline`` and the
service's connection status whenever either changes, so nothing is ever printed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import date, datetime

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.data_structures import Point
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import HSplit, Layout, Window
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.processors import BeforeInput
from prompt_toolkit.styles import Style

from pollchat.client.answer import RequestFailed
from pollchat.client.models import ChatMessage, ConnectionStatus, MessageEvent
from pollchat.client.service import PollingChatService
from pollchat.client.terminal import run_command, whoami
from pollchat.client.timeline import STATUS_MARKS, Entry, Timeline, clock, parse_time

# What the status line calls each connection state: "polling" is the service's word for a poll
# that has not answered yet since start-up or trouble.
STATE_NAMES = {"connected": "connected", "polling": "connecting", "error": "error", "offline": "offline"}
INDENT = " " * len("HH:MM ")  # continuation rows of a message start under its text
STYLE = Style.from_dict(
    {
        "time": "#8a8a8a",
        "you": "bold #5fafff",
        "assistant": "bold #87d787",
        "user": "bold #d7af5f",
        "edited": "italic #8a8a8a",
        "mark": "#8a8a8a",
        "mark.read": "#5fafff",
        "failed": "bold #ff5f5f",
        "notice": "italic #8a8a8a",
        "day": "bold #8a8a8a",
        "status": "bg:#303030 #d0d0d0",
        "status.connected": "bg:#303030 bold #87d787",
        "status.connecting": "bg:#303030 bold #d7d75f",
        "status.error": "bg:#303030 bold #ff5f5f",
        "status.offline": "bg:#303030 bold #ff5f5f",
        "prompt": "bold",
    }
)


def message_fragments(entry: Entry) -> StyleAndTextTuples:
    """One timeline line: ``HH:MM who: text (edited)  mark``, or a notice."""
    if entry.notice is not None:
        return [("class:notice", entry.notice)]
    m = entry.message
    assert m is not None
    who = "you" if entry.ours else m.type
    line: StyleAndTextTuples = [
        ("class:time", clock(m.timestamp) + " "),
        (f"class:{who}", who),
        ("", ": " + m.content.replace("\n", "\n" + INDENT)),
    ]
    if entry.edited:
        line.append(("class:edited", " (edited)"))
    if entry.ours:
        line += mark_fragments(m)
    return line


def mark_fragments(message: ChatMessage) -> StyleAndTextTuples:
    """The status mark of one of our messages; a refusal with its reason."""
    if message.status == "failed":
        return [("class:failed", f"  ✗ failed: {message.error or 'refused'} (/retry sends it again)")]
    style = "class:mark.read" if message.status == "read" else "class:mark"
    return [(style, "  " + STATUS_MARKS.get(message.status, message.status))]


def entry_day(entry: Entry) -> date | None:
    """The local day of a stored message; None for notices and messages not stored yet."""
    if entry.message is None or entry.message.id.startswith("local:"):
        return None
    moment = parse_time(entry.message.timestamp)
    return moment.astimezone().date() if moment is not None else None


class _LogToTimeline(logging.Handler):
    """Warnings as notices: anything written to the terminal would tear the screen."""

    def __init__(self, screen: ChatScreen) -> None:
        super().__init__(logging.WARNING)
        self._screen = screen

    def emit(self, record: logging.LogRecord) -> None:
        self._screen.notice(f"-- {record.getMessage()}")


class ChatScreen:
    """The full-screen chat: timeline, status line and prompt."""

    def __init__(self, service: PollingChatService) -> None:
        self._service = service
        self._timeline = Timeline()
        self._scroll = 0  # lines scrolled back from the newest
        self._lines = 0  # lines in the timeline as last drawn
        self._refused = False  # the token was refused: the service has stopped
        self._input = Buffer(multiline=False, history=InMemoryHistory(), accept_handler=self._accept)
        self._view = Window(
            FormattedTextControl(self._timeline_fragments, get_cursor_position=self._timeline_cursor),
            wrap_lines=True,
            dont_extend_height=True,
            # A long message wraps under its text, not under its time.
            get_line_prefix=lambda line, wrap_count: [("", INDENT)] if wrap_count else [],
        )
        body = HSplit(
            [
                Window(),  # takes the room the timeline leaves, so short chats sit just above the prompt
                self._view,
                Window(FormattedTextControl(self._status_fragments), height=1, style="class:status"),
                Window(
                    BufferControl(self._input, input_processors=[BeforeInput("› ", style="class:prompt")]),
                    height=Dimension(min=1, max=5),
                    wrap_lines=True,
                    dont_extend_height=True,
                ),
            ]
        )
        self._app: Application[int] = Application(
            layout=Layout(body, focused_element=self._input),
            key_bindings=self._key_bindings(),
            style=STYLE,
            full_screen=True,
            mouse_support=False,
        )

    async def run(self) -> int:
        """Chat until ``/quit`` or Ctrl-D (returns 0) or Ctrl-C (returns 130); unsent lines stay queued."""
        self._service.on_message(self._on_message)
        self._service.on_status(self._on_status)
        self._service.on_unauthorized(self._on_unauthorized)
        self.notice(f"-- chatting in session {self._service.session_id}; /quit to leave, /retry, /status")
        for message in self._service.pending:  # left in the outbox by an earlier run
            self._timeline.apply(MessageEvent("new", message))
        # Every logger's warnings (the client's, httpx's, asyncio's) as notices, and none on stderr.
        root = logging.getLogger()
        handler = _LogToTimeline(self)
        handlers, root.handlers = root.handlers, [handler]
        me = asyncio.create_task(self._learn_who_i_am())
        try:
            await self._service.start_polling()
            return await self._app.run_async()
        finally:
            me.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await me
            root.handlers = handlers

    def notice(self, text: str) -> None:
        """Add a line of our own to the timeline."""
        self._timeline.notice(text)
        self._app.invalidate()

    async def _learn_who_i_am(self) -> None:
        # In the background: the screen and the history need not wait for it. Our messages from
        # other clients turn into "you" when the answer comes.
        while (user_id := await whoami(self._service)) is None:
            if self._refused:
                return
            await asyncio.sleep(5.0)
        self._timeline.set_me(user_id)
        self._app.invalidate()

    # events

    def _on_message(self, event: MessageEvent) -> None:
        self._timeline.apply(event)
        self._app.invalidate()

    def _on_status(self, status: ConnectionStatus) -> None:
        self._app.invalidate()

    def _on_unauthorized(self, exc: RequestFailed) -> None:
        self._refused = True
        self.notice(f"-- the server refused the token ({exc}); polling and sending have stopped")

    def _accept(self, buffer: Buffer) -> bool:
        self._scroll = 0
        if not run_command(self._service, self._timeline, buffer.text, self.notice):
            self._app.exit(result=0)
        self._app.invalidate()
        return False  # clear the prompt

    # drawing

    def _timeline_fragments(self) -> StyleAndTextTuples:
        fragments: StyleAndTextTuples = []
        entries = self._timeline.entries()
        today = datetime.now().astimezone().date()
        shown: date | None = None  # the day of the message above
        for entry in entries:
            day = entry_day(entry)
            if day is not None and day != shown:
                if shown is not None or day != today:
                    fragments += [("", "\n")] if fragments else []
                    fragments.append(("class:day", f"── {day:%A %d %B %Y} ──"))
                shown = day
            if fragments:
                fragments.append(("", "\n"))
            fragments += message_fragments(entry)
        self._lines = sum(text.count("\n") for _, text, *_ in fragments) + 1 if entries else 0
        return fragments

    def _timeline_cursor(self) -> Point:
        # The timeline window scrolls to keep this point in view: the newest line, or as far
        # back as PageUp went.
        self._scroll = max(0, min(self._scroll, self._lines - 1))
        return Point(x=0, y=max(0, self._lines - 1 - self._scroll))

    def _status_fragments(self) -> StyleAndTextTuples:
        status = self._service.connection_status
        state = STATE_NAMES.get(status.state, status.state)
        if status.state == "offline" and not status.error_count and status.last_error is None:
            state = "connecting"  # not tried yet
        line: StyleAndTextTuples = [("class:status", " "), (f"class:status.{state}", f"● {state}")]
        if state in ("error", "offline") and status.last_error:
            line.append(("class:status", f" ({status.last_error})"))
        line.append(("class:status", f" │ session {self._service.session_id}"))
        queued, failed = len(self._service.pending), len(self._timeline.failed())
        if queued:
            line.append(("class:status", f" │ {queued} queued"))
        if failed:
            line.append(("class:status.error", f" │ {failed} failed: /retry"))
        if self._scroll:
            line.append(("class:status", f" │ ↓ {self._scroll} newer lines (PgDn)"))
        line.append(("class:status", " │ /status /retry /quit"))
        return line

    # keys

    def _key_bindings(self) -> KeyBindings:
        keys = KeyBindings()

        @keys.add("c-c")
        @keys.add("<sigint>")
        def _interrupt(event: KeyPressEvent) -> None:
            event.app.exit(result=130)

        @keys.add("c-d", filter=~self._has_text())
        def _end(event: KeyPressEvent) -> None:
            event.app.exit(result=0)

        @keys.add("pageup")
        def _back(event: KeyPressEvent) -> None:
            self._scroll += self._page()

        @keys.add("pagedown")
        def _forward(event: KeyPressEvent) -> None:
            self._scroll = max(0, self._scroll - self._page())

        return keys

    def _has_text(self) -> Condition:
        return Condition(lambda: bool(self._input.text))

    def _page(self) -> int:
        info = self._view.render_info
        return max(1, (info.window_height if info is not None else 10) - 1)
