"""The HTTP API's request and response schemas (the seed's shapes plus the contract's fields)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)

from pollchat.clock import isoformat
from pollchat.domain.records import Generation, Message, Session
from pollchat.domain.rules import (
    CLIENT_MESSAGE_ID_MAX,
    CLIENT_NAME_MAX,
    PAGE_LIMIT_DEFAULT,
    PAGE_LIMIT_MAX,
    READ_UP_TO_MAX,
    SESSION_ID_PATTERN,
    SINCE_MAX,
    USER_NAME_PATTERN,
    WAIT_MAX,
)

SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
ClientMessageId = Annotated[str, StringConstraints(min_length=1, max_length=CLIENT_MESSAGE_ID_MAX)]
ClientName = Annotated[str, StringConstraints(max_length=CLIENT_NAME_MAX)]


MAX_JSON_DEPTH = 64


def _unstorable(value: object) -> str | None:
    """Why a parsed JSON value cannot be stored and answered as it came, or None.

    Iterative on purpose: deeply nested input must be refused, not overflow the stack.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"values may nest at most {MAX_JSON_DEPTH} levels deep"
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "strings must be valid Unicode (no lone surrogates)"
        elif isinstance(item, float) and not math.isfinite(item):
            # Python's JSON parser takes NaN and Infinity, but JSON has no such numbers.
            return "numbers must be finite (NaN and Infinity are not JSON)"
        elif isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


class _Request(BaseModel):
    # Strict: a number is not a string. Unknown fields (a typo such as ``sesion_id``, or a
    # field the server owns such as ``id`` or ``status``) are refused, naming the field.
    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="after")
    def _valid_unicode(self) -> Self:
        # JSON can carry lone surrogates ("\ud800"); they are not text and cannot be stored.
        values = list(self.__dict__.values())
        if any(isinstance(v, str) and "\x00" in v for v in values):
            # PostgreSQL text cannot hold NUL; refused on every backend so they behave alike.
            raise ValueError("strings must not contain NUL characters")
        problem = _unstorable(values)
        if problem is not None:
            raise ValueError(problem)
        return self


class PollQuery(BaseModel):
    """``GET /messages``: the query of a poll (values arrive as text and are read as numbers)."""

    # Parameters the API does not know are ignored, as browsers and proxies add their own.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    session_id: SessionId = Field(description="The session to poll.")
    since: str | None = Field(None, max_length=SINCE_MAX, description="A cursor from an earlier poll, or a message id.")
    limit: int = Field(PAGE_LIMIT_DEFAULT, ge=1, le=PAGE_LIMIT_MAX, description="Most messages per answer.")
    wait: float = Field(
        0, ge=0, le=WAIT_MAX, description="Long poll: seconds to hold an empty answer (at most the server's maximum)."
    )


class SendMessageRequest(_Request):
    """``POST /messages``: one message to send."""

    content: str = Field(description="Message text; non-empty, at most the server's content limit.")
    session_id: SessionId = Field(description="Session to post into; created for the caller if new.")
    client_name: ClientName | None = Field(None, description="Name of the client, kept on a new session.")
    client_message_id: ClientMessageId | None = Field(
        None, description="Idempotency key: the same key in the same session stores one message."
    )
    type: Literal["user", "assistant"] = Field("user", description="`assistant` needs role operator or admin.")
    metadata: dict[str, Any] | None = Field(None, description="A JSON object of at most 4 KiB.")


class BatchSendRequest(_Request):
    """``POST /messages/batch``: several messages, stored in order."""

    messages: list[SendMessageRequest] = Field(min_length=1)


class EditMessageRequest(_Request):
    """``PATCH /messages/{id}``: new content for one's own message."""

    content: str


class CreateSessionRequest(_Request):
    """``POST /sessions``."""

    client_name: ClientName | None = None
    id: SessionId | None = Field(None, description="Pick the id yourself; one is minted when absent.")


class UpdateSessionRequest(_Request):
    """``PATCH /sessions/{id}``."""

    status: Literal["active", "closed"] | None = Field(None, description="`closed` refuses new messages.")
    client_name: ClientName | None = None


class ReadRequest(_Request):
    """``POST /sessions/{id}/read``: the other side's messages up to this one are read."""

    up_to: str = Field(min_length=1, max_length=READ_UP_TO_MAX)


class CreateUserRequest(_Request):
    """``POST /users``."""

    name: Annotated[str, StringConstraints(pattern=USER_NAME_PATTERN)]
    role: Literal["member", "operator", "admin"] = "member"


class ChatMessage(BaseModel):
    """A message as clients see it."""

    id: str
    type: Literal["user", "assistant"]
    content: str
    timestamp: str = Field(description="ISO 8601, UTC.")
    session_id: str
    status: Literal["sent", "delivered", "read"] = Field(description="`read` implies delivered.")
    user_id: str
    client_message_id: str | None = None
    metadata: dict[str, Any] | None = None
    delivered: bool
    read: bool
    edited_at: str | None = None
    reply_to: str | None = Field(None, description="The user message this assistant reply answers.")
    generation: Generation | None = Field(
        None,
        description="How a generated reply stands: streaming, done, stopped or failed; null if nobody generated it.",
    )
    error: str | None = Field(None, description="Why a failed generation failed.")

    @classmethod
    def of(cls, message: Message) -> ChatMessage:
        """The API view of a stored message."""
        status: Literal["sent", "delivered", "read"] = (
            "read" if message.read else "delivered" if message.delivered else "sent"
        )
        return cls(
            id=message.id,
            type=message.type,
            content=message.content,
            timestamp=isoformat(message.timestamp),
            session_id=message.session_id,
            status=status,
            user_id=message.user_id,
            client_message_id=message.client_message_id,
            metadata=message.metadata,
            delivered=message.delivered or message.read,
            read=message.read,
            edited_at=isoformat(message.edited_at) if message.edited_at else None,
            reply_to=message.reply_to,
            generation=message.generation,
            error=message.error,
        )


class ChatSession(BaseModel):
    """A session as clients see it."""

    id: str
    client_name: str | None
    created_at: str
    last_activity: str
    status: Literal["active", "inactive", "closed"]
    message_count: int
    last_message_id: str | None
    owner_id: str

    @classmethod
    def of(cls, session: Session, *, inactive_before: datetime) -> ChatSession:
        """The API view of a stored session."""
        status: Literal["active", "inactive", "closed"] = (
            "closed" if session.closed else "inactive" if session.last_activity < inactive_before else "active"
        )
        return cls(
            id=session.id,
            client_name=session.client_name,
            created_at=isoformat(session.created_at),
            last_activity=isoformat(session.last_activity),
            status=status,
            message_count=session.message_count,
            last_message_id=session.last_message_id,
            owner_id=session.owner_id,
        )


class UserView(BaseModel):
    """A user, without its token."""

    id: str
    name: str
    role: Literal["member", "operator", "admin"]


class SendMessageResponse(BaseModel):
    """The seed's ``SendMessageResponse``: the stored message's id, or the error.

    A success has the shape of every other success: no ``error`` and ``code``, which only a
    refused item of a batch carries.
    """

    success: bool
    message_id: str | None = None
    message: ChatMessage | None = None
    error: str | None = None
    code: str | None = None

    @model_serializer(mode="wrap")
    def _one_shape(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.success:
            data.pop("error", None)
            data.pop("code", None)
        return data


class BatchSendResponse(BaseModel):
    """Results in request order."""

    success: bool = True
    results: list[SendMessageResponse]


class GetMessagesResponse(BaseModel):
    """A page of changes after the cursor."""

    success: bool = True
    messages: list[ChatMessage]
    has_more: bool
    cursor: str = Field(description="Opaque; pass back as `since`.")


class MessageResponse(BaseModel):
    """One message."""

    success: bool = True
    message: ChatMessage


class SessionResponse(BaseModel):
    """One session."""

    success: bool = True
    session: ChatSession


class SessionListResponse(BaseModel):
    """Sessions, newest activity first."""

    success: bool = True
    sessions: list[ChatSession]


class ReadResponse(BaseModel):
    """Acknowledges a read mark."""

    success: bool = True
    cursor: str


class UserCreatedResponse(BaseModel):
    """A new user and its token, shown this once."""

    success: bool = True
    user: UserView
    token: str


class TokenResponse(BaseModel):
    """A user and its new token, shown this once (the old token no longer works)."""

    success: bool = True
    user: UserView
    token: str


class UserResponse(BaseModel):
    """One user."""

    success: bool = True
    user: UserView


class UserListResponse(BaseModel):
    """Every user."""

    success: bool = True
    users: list[UserView]


class HealthResponse(BaseModel):
    """The server can serve."""

    success: bool = True
    status: Literal["ok"] = "ok"
    version: str


class ErrorResponse(BaseModel):
    """Every refusal."""

    success: Literal[False] = False
    error: str = Field(description="A human sentence.")
    code: str = Field(description="A machine code.")
