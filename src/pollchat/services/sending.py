"""Sending: checking, storing and announcing new messages, and edits of one's own."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pollchat.clock import Clock
from pollchat.domain.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    PayloadTooLarge,
    PollchatError,
    no_message,
)
from pollchat.domain.records import Appended, Generation, Message, MessageType, NewMessage, User
from pollchat.domain.rules import may_post_type, may_see_session
from pollchat.metrics import Metrics
from pollchat.services.notifier import Notifier
from pollchat.services.sessions import SessionService
from pollchat.settings import Settings
from pollchat.storage.base import Storage

MessageListener = Callable[[Message], None]


@dataclass(frozen=True, slots=True)
class SendItem:
    """One message a caller asks to send (the request's fields)."""

    content: str
    session_id: str
    type: MessageType = "user"
    client_message_id: str | None = None
    client_name: str | None = None
    metadata: dict[str, Any] | None = None
    # Set by the server's own assistants only: clients cannot send these fields.
    reply_to: str | None = None
    generation: Generation | None = None


class SendService:
    """Stores messages in order and wakes the polls that wait for them."""

    def __init__(
        self,
        *,
        storage: Storage,
        notifier: Notifier,
        metrics: Metrics,
        settings: Settings,
        clock: Clock,
        sessions: SessionService,
    ) -> None:
        self.storage = storage
        self.notifier = notifier
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.sessions = sessions
        self._listeners: list[MessageListener] = []

    def add_listener(self, listener: MessageListener) -> None:
        """Call ``listener`` with every new message this instance stores (assistants use it)."""
        self._listeners.append(listener)

    def _check(self, user: User, item: SendItem) -> None:
        if not item.content.strip():
            raise BadRequest("`content` must not be empty", code="empty_content")
        if len(item.content.encode("utf-8")) > self.settings.max_content_bytes:
            raise PayloadTooLarge(
                f"`content` is larger than {self.settings.max_content_bytes} bytes", code="content_too_large"
            )
        if item.metadata is not None:
            size = len(json.dumps(item.metadata, separators=(",", ":")).encode("utf-8"))
            if size > self.settings.max_metadata_bytes:
                raise PayloadTooLarge(
                    f"`metadata` is larger than {self.settings.max_metadata_bytes} bytes", code="metadata_too_large"
                )
        if not may_post_type(user, item.type):
            raise Forbidden("only operators and admins may post as `assistant`", code="type_not_allowed")

    async def send(self, user: User, items: Sequence[SendItem]) -> list[Appended]:
        """Store messages in order; each succeeds or fails on its own."""
        if len(items) > self.settings.max_batch:
            raise PayloadTooLarge(f"at most {self.settings.max_batch} messages per batch", code="batch_too_large")
        results: list[Appended | None] = []
        valid: list[NewMessage] = []
        for item in items:
            try:
                self._check(user, item)
            except PollchatError as exc:
                results.append(Appended(None, error=exc))
                continue
            results.append(None)
            valid.append(
                NewMessage(
                    session_id=item.session_id,
                    type=item.type,
                    content=item.content,
                    client_message_id=item.client_message_id,
                    metadata=item.metadata,
                    client_name=item.client_name,
                    reply_to=item.reply_to,
                    generation=item.generation,
                )
            )
        stored = iter(await self.storage.append(valid, author=user, now=self.clock.now()) if valid else [])
        outcome = [r if r is not None else next(stored) for r in results]
        self._after_append(outcome)
        return outcome

    async def send_one(self, user: User, item: SendItem) -> Appended:
        """Store one message; a refusal raises."""
        (result,) = await self.send(user, [item])
        if result.error is not None:
            raise result.error
        return result

    def _after_append(self, outcome: Sequence[Appended]) -> None:
        heads: dict[str, int] = {}
        for result in outcome:
            if result.message is None or not result.created:
                continue
            message = result.message
            heads[message.session_id] = max(heads.get(message.session_id, 0), message.change_seq)
            self.metrics.messages_stored.labels(message.type).inc()
            for listener in self._listeners:
                listener(message)
        for session_id, head in heads.items():
            self.notifier.notify(session_id, head)

    async def edit(self, user: User, message_id: str, content: str) -> Message:
        """Replace the content of one's own message."""
        message = await self.sessions.message(message_id)
        session = await self.storage.get_session(message.session_id) if message is not None else None
        # Another member's message is answered exactly as a missing one: no oracle of ids.
        if message is None or session is None or not may_see_session(user, session.owner_id):
            raise no_message()
        if message.user_id != user.id:
            raise Forbidden("only the author may edit a message", code="not_author")
        if session.closed:
            raise Conflict("the session is closed", code="session_closed")
        self._check(user, SendItem(content=content, session_id=session.id, type=message.type))
        edited = await self.storage.edit(message_id, content=content, now=self.clock.now())
        self.notifier.notify(session.id, edited.change_seq)
        return edited
