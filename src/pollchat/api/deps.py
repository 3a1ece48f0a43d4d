"""Request dependencies: the app's services, the caller, and rate limits."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pollchat.api.bodies import PageBodies
from pollchat.auth import Authenticator
from pollchat.chat import ChatService
from pollchat.clock import Clock
from pollchat.domain.errors import Forbidden, TooManyRequests
from pollchat.domain.records import User
from pollchat.domain.rules import may_manage_users
from pollchat.metrics import Metrics
from pollchat.notifier import Notifier
from pollchat.ratelimit import RateLimiter
from pollchat.settings import Settings
from pollchat.storage.base import Storage


@dataclass(slots=True)
class Services:
    """Everything the app builds at start-up and its routes use."""

    settings: Settings
    clock: Clock
    storage: Storage
    notifier: Notifier
    metrics: Metrics
    limiter: RateLimiter
    auth: Authenticator
    chat: ChatService
    bodies: PageBodies


async def get_services(request: Request) -> Services:
    """The services of the app serving this request."""
    # async on purpose: FastAPI runs plain ``def`` dependencies in a thread pool.
    services: Services = request.app.state.services
    return services


_bearer = HTTPBearer(auto_error=False, description="A token from `pollchat serve` or `POST /api/v1/admin/users`.")

ServicesDep = Annotated[Services, Depends(get_services)]


async def current_user(
    request: Request,
    services: ServicesDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The caller, from its bearer token; 401 without a valid one."""
    return await services.auth.authenticate(request.headers.get("authorization"))


UserDep = Annotated[User, Depends(current_user)]


async def require_admin(user: UserDep) -> User:
    """The caller, who must be an admin; 403 otherwise."""
    if not may_manage_users(user):
        raise Forbidden("only admins may manage users", code="admin_only")
    return user


AdminDep = Annotated[User, Depends(require_admin)]


async def _limit(services: Services, kind: str, user: User) -> None:
    try:
        await services.limiter.hit(kind, user.id)
    except TooManyRequests:
        services.metrics.rate_limited.labels(kind).inc()
        raise


async def send_limited(services: ServicesDep, user: UserDep) -> User:
    """The caller, after spending one send from its budget."""
    await _limit(services, "send", user)
    return user


# Set on a request's scope once its poll was charged, so it is never charged twice.
POLL_CHARGED = "pollchat.poll_charged"


async def charge_poll(services: Services, user: User, scope: MutableMapping[str, Any]) -> None:
    """Spend one poll from the user's budget (once per request)."""
    if not scope.get(POLL_CHARGED):
        scope[POLL_CHARGED] = True
        await _limit(services, "poll", user)


async def poll_limited(request: Request, services: ServicesDep, user: UserDep) -> User:
    """The caller, after spending one poll from its budget."""
    await charge_poll(services, user, request.scope)
    return user


SenderDep = Annotated[User, Depends(send_limited)]
PollerDep = Annotated[User, Depends(poll_limited)]
