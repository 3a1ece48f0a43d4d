"""The responder interface: something that answers a user's message as ``assistant``."""

from __future__ import annotations

from typing import Protocol

from pollchat.domain.records import Message


class Responder(Protocol):
    """Answers user messages. Language models and human hand-offs plug in here."""

    name: str

    async def reply(self, message: Message) -> str | None:
        """The assistant's answer to ``message``, or None for no answer."""
        ...
