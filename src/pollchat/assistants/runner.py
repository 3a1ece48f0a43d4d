"""Runs a responder inside the server: new user messages in, assistant replies out.

The runner asks the responder, posts the reply with the idempotency key ``reply:<message id>``
and then marks the user's message delivered, so a message answered twice (a catch-up after a
restart, two instances) still gets one reply.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from pollchat.assistants.base import Responder
from pollchat.domain.errors import PollchatError
from pollchat.domain.records import Message, User
from pollchat.services.sending import SendItem, SendService

logger = logging.getLogger(__name__)

CATCH_UP_LIMIT = 1000


class AssistantRunner:
    """One worker task answering user messages in arrival order."""

    def __init__(self, *, responder: Responder, sending: SendService, assistant: User) -> None:
        self._responder = responder
        self._sending = sending
        self._assistant = assistant
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def submit(self, message: Message) -> None:
        """Queue a new message; only ``user`` messages of other authors are answered."""
        if message.type == "user" and message.user_id != self._assistant.id:
            self._queue.put_nowait(message)

    async def start(self) -> None:
        """Queue what an earlier run left unanswered, then start the worker."""
        since = self._sending.clock.now() - timedelta(seconds=self._sending.settings.inactive_after)
        for message in await self._sending.storage.pending_user_messages(since=since, limit=CATCH_UP_LIMIT):
            self.submit(message)
        self._task = asyncio.create_task(self._work(), name=f"assistant-{self._responder.name}")

    async def stop(self) -> None:
        """Stop the worker; unanswered messages are picked up by the next start."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def drain(self) -> None:
        """Wait until every queued message is answered (for tests and orderly shutdown)."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._answer(message)
            except PollchatError as exc:
                logger.info("assistant skipped message %s: %s", message.id, exc.message)
            except Exception:
                logger.exception("assistant failed on message %s", message.id)
            finally:
                self._queue.task_done()

    async def _answer(self, message: Message) -> None:
        # Reply first, then mark delivered: a crash in between leaves the message pending,
        # the next start answers it again, and the idempotency key keeps that to one reply.
        text = await self._responder.reply(message)
        if text is not None:
            await self._sending.send_one(
                self._assistant,
                SendItem(
                    content=text,
                    session_id=message.session_id,
                    type="assistant",
                    client_message_id=f"reply:{message.id}",
                    reply_to=message.id,
                    generation="done",
                ),
            )
        head = await self._sending.storage.mark_delivered(
            message.session_id, [message.id], now=self._sending.clock.now()
        )
        self._sending.notifier.notify(message.session_id, head)
