"""What the client hands to applications: messages with a delivery status, and connection state."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

MessageStatus = Literal["sending", "sent", "delivered", "read", "failed"]
ConnectionState = Literal["connected", "polling", "error", "offline"]
EventKind = Literal["new", "update"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A message as the application shows it (the seed's ``ChatMessage``).

    ``id`` is the server's id once the server has the message; before that it is
    ``local:<client_message_id>``.
    """

    id: str
    type: Literal["user", "assistant"]
    content: str
    timestamp: str
    session_id: str
    status: MessageStatus
    client_message_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] | None = None
    edited_at: str | None = None
    error: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ChatMessage:
        """A message from the server's JSON."""
        status = data.get("status", "sent")
        return cls(
            id=str(data["id"]),
            type=data["type"],
            content=str(data["content"]),
            timestamp=str(data["timestamp"]),
            session_id=str(data["session_id"]),
            status=status if status in ("sent", "delivered", "read") else "sent",
            client_message_id=data.get("client_message_id"),
            user_id=data.get("user_id"),
            metadata=data.get("metadata"),
            edited_at=data.get("edited_at"),
        )

    def with_status(self, status: MessageStatus, error: str | None = None) -> ChatMessage:
        """A copy with another status."""
        return replace(self, status=status, error=error)

    @property
    def version(self) -> tuple[str, str, str | None]:
        """What can change about a stored message; equal versions mean nothing new to show."""
        return (self.status, self.content, self.edited_at)


@dataclass(frozen=True, slots=True)
class MessageResponse:
    """The outcome of a send (the seed's ``MessageResponse``)."""

    success: bool
    message_id: str | None
    error: str | None = None
    code: str | None = None
    message: ChatMessage | None = None


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """A message the application has not seen (``new``) or a change to one it has (``update``)."""

    kind: EventKind
    message: ChatMessage


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """The seed's ``ConnectionManager`` state."""

    state: ConnectionState
    last_successful_poll: datetime | None = None
    error_count: int = 0
    retry_attempts: int = 0
    polling_active: bool = False
    last_error: str | None = None


@dataclass(slots=True)
class PollStats:
    """The service's own view of its polling."""

    started_at: float
    requests: int = 0
    useful_polls: int = 0
    empty_polls: int = 0
    not_modified: int = 0
    errors: int = 0
    send_retries: int = 0
    latencies: list[float] = field(default_factory=list)

    def requests_per_minute(self, now: float) -> float:
        """Requests (polls and sends) per minute since the service started."""
        elapsed = max(now - self.started_at, 1e-9)
        return self.requests * 60.0 / elapsed

    def latency_percentile(self, fraction: float) -> float | None:
        """A latency percentile of recent requests, in seconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def record_latency(self, seconds: float) -> None:
        """Keep the latest 1,000 latencies."""
        self.latencies.append(seconds)
        if len(self.latencies) > 1000:
            del self.latencies[: len(self.latencies) - 1000]
