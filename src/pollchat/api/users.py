"""``/api/v1/admin/users``: who holds tokens."""

from __future__ import annotations

from fastapi import APIRouter

from pollchat.api.deps import AdminDep, ServicesDep, UserDep
from pollchat.api.errors import error_responses
from pollchat.auth import hash_token, new_token
from pollchat.models import CreateUserRequest, UserCreatedResponse, UserListResponse, UserResponse, UserView
from pollchat.storage.base import User

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
