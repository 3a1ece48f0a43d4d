"""``/api/v1/admin/chat/messages``: batch send and edit, and the description of the hot routes.

``GET`` and ``POST`` of the collection itself are answered by ``MessagesEndpoint`` in plain
ASGI; the routes declared in ``documented`` only describe them in the OpenAPI document, from
the same models the endpoint validates with. They are never mounted, so nothing here can
answer a poll or a send in a second way.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query

from pollchat.domain.rules import IF_NONE_MATCH_MAX
from pollchat.server.deps import CallerDep, SenderDep, ServicesDep, bearer, limited
from pollchat.server.errors import error_responses
from pollchat.server.messages_endpoint import PATH, send_item, send_result
from pollchat.server.models import (
    BatchSendRequest,
    BatchSendResponse,
    ChatMessage,
    EditMessageRequest,
    GetMessagesResponse,
    MessageResponse,
    PollQuery,
    SendMessageRequest,
    SendMessageResponse,
)

router = APIRouter(prefix=PATH, tags=["messages"])
documented = APIRouter(prefix=PATH, tags=["messages"], dependencies=[Depends(bearer)])


@documented.post(
    "",
    status_code=201,
    response_model=SendMessageResponse,
    responses={
        200: {"model": SendMessageResponse, "description": "A replay of an earlier send"},
        **error_responses(403, 404, 405, 409, 413, 429),
    },
    summary="Send a message",
)
async def send_message(body: SendMessageRequest) -> None:
    """Store one message (201), or answer a replay of ``client_message_id`` with the first one (200).

    A session id that does not exist yet is created for the caller. A reused
    ``client_message_id`` with another ``content`` or ``type`` is refused with 409.
    """


@documented.get(
    "",
    response_model=GetMessagesResponse,
    responses={
        304: {"description": "Unchanged since the ETag given in If-None-Match"},
        **error_responses(404, 405, 429),
    },
    summary="Poll for messages",
)
async def get_messages(
    query: Annotated[PollQuery, Query()],
    if_none_match: Annotated[str | None, Header(max_length=IF_NONE_MATCH_MAX)] = None,
) -> None:
    """Every message created or changed after ``since``, oldest change first.

    With ``wait`` an empty answer is held until something changes; a ``wait`` above the
    server's maximum is refused with code ``wait_too_long`` and the maximum as ``max_wait``.
    """


@router.post(
    "/batch",
    response_model=BatchSendResponse,
    responses=error_responses(413, 429),
    summary="Send several messages in order",
)
async def send_batch(body: BatchSendRequest, user: CallerDep, services: ServicesDep) -> BatchSendResponse:
    """Store messages in request order; each succeeds or fails on its own."""
    await limited(services, "send", user, cost=len(body.messages))
    results = await services.sending.send(user, [send_item(m) for m in body.messages])
    return BatchSendResponse(results=[send_result(r) for r in results])


@router.patch(
    "/{message_id}",
    response_model=MessageResponse,
    responses=error_responses(403, 404, 409, 413, 429),
    summary="Edit one's own message",
)
async def edit_message(
    message_id: str, body: EditMessageRequest, user: SenderDep, services: ServicesDep
) -> MessageResponse:
    """Replace the content; pollers see the change as an update."""
    message = await services.sending.edit(user, message_id, body.content)
    return MessageResponse(message=ChatMessage.of(message))
