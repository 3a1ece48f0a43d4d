"""``/api/v1/admin/chat/sessions``: create, list, get, update, read marks."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from pollchat.domain.ids import new_session_id
from pollchat.domain.rules import PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, SESSION_ID_PATTERN
from pollchat.server.deps import ServicesDep, SessionCreatorDep, UserDep
from pollchat.server.errors import error_responses
from pollchat.server.models import (
    ChatSession,
    CreateSessionRequest,
    ReadRequest,
    ReadResponse,
    SessionListResponse,
    SessionResponse,
    UpdateSessionRequest,
)

router = APIRouter(prefix="/api/v1/admin/chat/sessions", tags=["sessions"])

SessionPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN)]


@router.post("", status_code=201, response_model=SessionResponse, responses=error_responses(409))
async def create_session(
    user: SessionCreatorDep, services: ServicesDep, body: CreateSessionRequest | None = None
) -> SessionResponse:
    """Start a session owned by the caller."""
    session = await services.sessions.create(
        user,
        session_id=(body.id if body else None) or new_session_id(),
        client_name=body.client_name if body else None,
    )
    return SessionResponse(session=ChatSession.of(session, inactive_before=services.sessions.inactive_before))


@router.get("", response_model=SessionListResponse, responses=error_responses())
async def list_sessions(
    user: UserDep,
    services: ServicesDep,
    status: Annotated[Literal["active", "inactive", "closed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = PAGE_LIMIT_DEFAULT,
) -> SessionListResponse:
    """The caller's sessions (every session for operators and admins), newest activity first."""
    sessions = await services.sessions.list_visible(user, status=status, limit=limit)
    cutoff = services.sessions.inactive_before
    return SessionListResponse(sessions=[ChatSession.of(s, inactive_before=cutoff) for s in sessions])


@router.get("/{session_id}", response_model=SessionResponse, responses=error_responses(404))
async def get_session(session_id: SessionPath, user: UserDep, services: ServicesDep) -> SessionResponse:
    """One session."""
    session = await services.sessions.visible(user, session_id)
    return SessionResponse(session=ChatSession.of(session, inactive_before=services.sessions.inactive_before))


@router.patch("/{session_id}", response_model=SessionResponse, responses=error_responses(404))
async def update_session(
    session_id: SessionPath, body: UpdateSessionRequest, user: UserDep, services: ServicesDep
) -> SessionResponse:
    """Close (or reopen) a session, or rename its client."""
    session = await services.sessions.update(user, session_id, status=body.status, client_name=body.client_name)
    return SessionResponse(session=ChatSession.of(session, inactive_before=services.sessions.inactive_before))


@router.post("/{session_id}/read", response_model=ReadResponse, responses=error_responses(403, 404))
async def mark_read(session_id: SessionPath, body: ReadRequest, user: UserDep, services: ServicesDep) -> ReadResponse:
    """The other side's messages up to ``up_to`` are read; their authors see it on their next poll."""
    cursor = await services.sessions.mark_read(user, session_id, body.up_to)
    return ReadResponse(cursor=cursor)
