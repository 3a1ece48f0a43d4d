"""The Python client: ``PollingChatService`` and what it hands to applications.

It talks to a pollchat server over HTTP only and never imports server code.
"""

from __future__ import annotations

from pollchat.client.answer import RequestFailed
from pollchat.client.clock import Clock, SystemClock
from pollchat.client.models import (
    ChatMessage,
    ConnectionState,
    ConnectionStatus,
    MessageEvent,
    MessageResponse,
    MessageStatus,
    PollStats,
)
from pollchat.client.outbox import Outbox, Outgoing
from pollchat.client.service import PollingChatService
from pollchat.client.strategy import PollingStrategy

__all__ = [
    "ChatMessage",
    "Clock",
    "ConnectionState",
    "ConnectionStatus",
    "MessageEvent",
    "MessageResponse",
    "MessageStatus",
    "Outbox",
    "Outgoing",
    "PollStats",
    "PollingChatService",
    "PollingStrategy",
    "RequestFailed",
    "SystemClock",
]
