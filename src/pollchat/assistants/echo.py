"""The echo responder: answers every user message with its own text."""

from __future__ import annotations

from pollchat.domain.records import Message


class EchoResponder:
    """Replies ``Echo: <text>``; the default, so a first run has someone to talk to."""

    name = "echo"

    async def reply(self, message: Message) -> str | None:
        return f"Echo: {message.content}"
