"""``/api/v1/admin/chat/messages``: send, batch send, poll, edit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse

from pollchat.api.deps import PollerDep, SenderDep, Services, ServicesDep
from pollchat.api.errors import error_responses
from pollchat.chat import PollResult, SendItem
from pollchat.domain.errors import BadRequest
from pollchat.domain.records import Appended
from pollchat.domain.rules import (
    IF_NONE_MATCH_MAX,
    PAGE_LIMIT_DEFAULT,
    PAGE_LIMIT_MAX,
    SESSION_ID_PATTERN,
    SINCE_MAX,
    WAIT_MAX,
)
from pollchat.models import (
    BatchSendRequest,
    BatchSendResponse,
    ChatMessage,
    EditMessageRequest,
    GetMessagesResponse,
    MessageResponse,
    SendMessageRequest,
    SendMessageResponse,
)

router = APIRouter(prefix="/api/v1/admin/chat/messages", tags=["messages"])


def send_item(request: SendMessageRequest) -> SendItem:
    """What the chat service is asked to send."""
    return SendItem(
        content=request.content,
        session_id=request.session_id,
        type=request.type,
        client_message_id=request.client_message_id,
        client_name=request.client_name,
        metadata=request.metadata,
    )


def _result(result: Appended) -> SendMessageResponse:
    if result.message is None:
        error = result.error
        return SendMessageResponse(
            success=False,
            error=str(error),
            code=getattr(error, "code", "error"),
        )
    return SendMessageResponse(success=True, message_id=result.message.id, message=ChatMessage.of(result.message))


@router.post(
    "",
    status_code=201,
    response_model=SendMessageResponse,
    responses={
        200: {"model": SendMessageResponse, "description": "A replay of an earlier send"},
        **error_responses(403, 404, 409, 413, 429),
    },
    summary="Send a message",
)
async def send_message(body: SendMessageRequest, user: SenderDep, services: ServicesDep) -> JSONResponse:
    """Store one message (201), or answer a replay of ``client_message_id`` with the first one (200)."""
    return send_response(await services.chat.send_one(user, send_item(body)))


def send_response(result: Appended) -> JSONResponse:
    """The answer to a stored send: 201, or 200 for a replay."""
    return JSONResponse(_result(result).model_dump(mode="json"), status_code=201 if result.created else 200)


@router.post(
    "/batch",
    response_model=BatchSendResponse,
    responses=error_responses(413, 429),
    summary="Send several messages in order",
)
async def send_batch(body: BatchSendRequest, user: SenderDep, services: ServicesDep) -> BatchSendResponse:
    """Store messages in request order; each succeeds or fails on its own."""
    results = await services.chat.send(user, [send_item(m) for m in body.messages])
    return BatchSendResponse(results=[_result(r) for r in results])


@router.get(
    "",
    response_model=GetMessagesResponse,
    responses={304: {"description": "Unchanged since the ETag given in If-None-Match"}, **error_responses(404, 429)},
    summary="Poll for messages",
)
async def get_messages(
    user: PollerDep,
    services: ServicesDep,
    session_id: Annotated[str, Query(pattern=SESSION_ID_PATTERN, description="The session to poll.")],
    since: Annotated[
        str | None, Query(max_length=SINCE_MAX, description="A cursor from an earlier poll, or a message id.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX, description="Most messages per answer.")] = PAGE_LIMIT_DEFAULT,
    wait: Annotated[float, Query(ge=0, le=WAIT_MAX, description="Long poll: seconds to hold an empty answer.")] = 0,
    if_none_match: Annotated[str | None, Header(max_length=IF_NONE_MATCH_MAX)] = None,
) -> Response:
    """Every message created or changed after ``since``, oldest change first."""
    if wait > services.settings.max_wait:
        raise BadRequest(f"`wait` is at most {services.settings.max_wait:g} seconds", code="wait_too_long")
    result = await services.chat.poll(
        user, session_id, since=since or None, limit=limit, wait=wait, if_none_match=if_none_match
    )
    headers = {"ETag": result.etag, "Cache-Control": "private, no-cache"}
    if result.not_modified or result.page is None:
        return Response(status_code=304, headers=headers)
    return Response(page_body(services, result), media_type="application/json", headers=headers)


def page_body(services: Services, result: PollResult) -> bytes:
    """The JSON of a poll's page, built once per ETag."""
    page = result.page
    assert page is not None

    def build() -> bytes:
        answer = GetMessagesResponse(
            messages=[ChatMessage.of(m) for m in page.messages], has_more=page.has_more, cursor=result.cursor
        )
        return answer.model_dump_json().encode()

    return services.bodies.get(result.etag, build)


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
    message = await services.chat.edit(user, message_id, body.content)
    return MessageResponse(message=ChatMessage.of(message))
