"""``/api/v1/admin/users``: who holds tokens, and rotating or revoking them.

A user's token is rotated (``POST .../{id}/token``) or revoked (``DELETE .../{id}/token``) by
an admin, for anyone, or by the user itself (its own id, or ``me``). Anyone else asking gets
403 whether or not the id names a user, so a non-admin learns nothing about other users; an
admin naming no user gets 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from pollchat.domain.errors import Forbidden, no_user
from pollchat.domain.ids import is_well_formed_user_id
from pollchat.domain.records import User
from pollchat.domain.rules import may_manage_users
from pollchat.server.auth import hash_token, new_token
from pollchat.server.deps import AdminDep, ServicesDep, UserDep
from pollchat.server.errors import error_responses
from pollchat.server.models import (
    CreateUserRequest,
    TokenResponse,
    UserCreatedResponse,
    UserListResponse,
    UserResponse,
    UserView,
)

router = APIRouter(prefix="/api/v1/admin/users", tags=["users"])


def view(user: User) -> UserView:
    """The API view of a user."""
    return UserView(id=user.id, name=user.name, role=user.role)


@router.post("", status_code=201, response_model=UserCreatedResponse, responses=error_responses(403, 409))
async def create_user(body: CreateUserRequest, _admin: AdminDep, services: ServicesDep) -> UserCreatedResponse:
    """Create a user and show its token, this once (only its hash is stored)."""
    token = new_token()
    user = await services.storage.create_user(
        name=body.name, role=body.role, token_hash=hash_token(token), now=services.clock.now()
    )
    return UserCreatedResponse(user=view(user), token=token)


@router.get("", response_model=UserListResponse, responses=error_responses(403))
async def list_users(_admin: AdminDep, services: ServicesDep) -> UserListResponse:
    """Every user."""
    return UserListResponse(users=[view(u) for u in await services.storage.list_users()])


@router.get("/me", response_model=UserResponse, responses=error_responses())
async def whoami(user: UserDep) -> UserResponse:
    """The caller."""
    return UserResponse(user=view(user))


TargetId = Annotated[str, Path(description="A user id, or `me` for the caller.")]


def _target(user_id: str, caller: User) -> str:
    """The id whose token the caller may change; 403 for another's unless admin, 404 for nobody."""
    if user_id in ("me", caller.id):
        return caller.id
    if not may_manage_users(caller):
        raise Forbidden("only admins may change another user's token", code="not_your_token")
    if not is_well_formed_user_id(user_id):
        # Checked before storage: a malformed id (NUL, a megabyte of text) names no user.
        raise no_user()
    return user_id


@router.post("/{user_id}/token", response_model=TokenResponse, responses=error_responses(403, 404))
async def rotate_token(user_id: TargetId, caller: UserDep, services: ServicesDep) -> TokenResponse:
    """Mint a new token for the user and show it, this once; the old one stops working at once."""
    token = new_token()
    user = await services.storage.rotate_token(_target(user_id, caller), token_hash=hash_token(token))
    return TokenResponse(user=view(user), token=token)


@router.delete("/{user_id}/token", response_model=UserResponse, responses=error_responses(403, 404))
async def revoke_token(user_id: TargetId, caller: UserDep, services: ServicesDep) -> UserResponse:
    """Revoke the user's token at once; it has none until an admin rotates one in."""
    user = await services.storage.revoke_token(_target(user_id, caller))
    return UserResponse(user=view(user))
