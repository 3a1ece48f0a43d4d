"""Request dependencies: the app's services, the caller, and rate limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pollchat.clock import Clock
from pollchat.domain.cursor import Cursors
from pollchat.domain.errors import Forbidden, TooManyRequests
from pollchat.domain.records import User
from pollchat.domain.rules import may_manage_users
from pollchat.metrics import Metrics
from pollchat.server.auth import Authenticator
from pollchat.server.bodies import PageBodies
from pollchat.server.compression import Compression
from pollchat.server.http import header
from pollchat.server.ratelimit import RateLimiter
from pollchat.services.notifier import Notifier
from pollchat.services.polling import PollService
from pollchat.services.sending import SendService
from pollchat.services.sessions import SessionService
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
    cursors: Cursors
    sessions: SessionService
    sending: SendService
    polling: PollService
    bodies: PageBodies
    compression: Compression


async def get_services(request: Request) -> Services:
    """The services of the app serving this request."""
    # async on purpose: FastAPI runs plain ``def`` dependencies in a thread pool.
    services: Services = request.app.state.services
    return services


bearer = HTTPBearer(auto_error=False, description="A token from `pollchat serve` or `POST /api/v1/admin/users`.")

ServicesDep = Annotated[Services, Depends(get_services)]


async def current_user(
    request: Request,
    services: ServicesDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    """The caller, from its bearer token; 401 without a valid one."""
    return await services.auth.authenticate(header(request.scope, b"authorization").decode("latin-1") or None)


CallerDep = Annotated[User, Depends(current_user)]


async def limited(services: Services, kind: str, user: User, cost: int = 1) -> None:
    """Spend ``cost`` of the user's ``kind`` budget; 429 (counted in the metrics) when it is gone."""
    try:
        await services.limiter.hit(kind, user.id, cost)
    except TooManyRequests:
        services.metrics.rate_limited.labels(kind).inc()
        raise


def _spending(kind: str) -> Any:
    """A dependency: the caller, after spending one of its ``kind`` budget."""

    async def spend(services: ServicesDep, user: CallerDep) -> User:
        await limited(services, kind, user)
        return user

    return Depends(spend)


# Every authenticated route takes its caller through exactly one of these (or, for a batch,
# ``CallerDep`` and a charge of one send per message), so every request spends a budget.
UserDep = Annotated[User, _spending("action")]
SessionCreatorDep = Annotated[User, _spending("session")]
SenderDep = Annotated[User, _spending("send")]


async def require_admin(user: UserDep) -> User:
    """The caller, who must be an admin; 403 otherwise."""
    if not may_manage_users(user):
        raise Forbidden("only admins may manage users", code="admin_only")
    return user


AdminDep = Annotated[User, Depends(require_admin)]
