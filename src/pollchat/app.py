"""``create_app(settings)``: builds the services, wires the routes, owns start-up and shutdown."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import Receive, Scope, Send

from pollchat import __version__
from pollchat.api import health, messages, sessions, users, web
from pollchat.api.bodies import PageBodies
from pollchat.api.deps import Services
from pollchat.api.errors import install_error_handlers
from pollchat.api.fastpoll import PATH as MESSAGES_PATH
from pollchat.api.fastpoll import PollFront
from pollchat.api.fastsend import SendFront
from pollchat.assistants import create_responder
from pollchat.assistants.runner import AssistantRunner
from pollchat.auth import Authenticator, hash_token, new_token
from pollchat.chat import ChatService
from pollchat.clock import Clock, SystemClock
from pollchat.metrics import Metrics
from pollchat.middleware import BodyLimitMiddleware, MetricsMiddleware, RequestCounter
from pollchat.notifier import Notifier
from pollchat.ratelimit import RateLimiter, create_limit_storage
from pollchat.server import chain_exit_signals
from pollchat.settings import Settings
from pollchat.storage import Storage, create_storage

logger = logging.getLogger(__name__)

ASSISTANT_USER = "assistant"
ADMIN_USER = "admin"

TokenAnnouncer = Callable[[str], None]


def build_services(settings: Settings, *, clock: Clock | None = None, storage: Storage | None = None) -> Services:
    """The app's stateful parts, not yet started."""
    clock = clock or SystemClock()
    storage = storage or create_storage(settings.database_url)
    metrics = Metrics()
    notifier = Notifier(max_parked_per_user=settings.max_parked_polls_per_user, monotonic=clock.monotonic)
    metrics.parked.set_function(lambda: notifier.parked)
    chat = ChatService(storage=storage, notifier=notifier, metrics=metrics, settings=settings, clock=clock)
    # Commits of other instances (PostgreSQL LISTEN/NOTIFY) wake this instance's long polls.
    storage.on_change(notifier.wake)
    auth = Authenticator(storage, monotonic=clock.monotonic)
    # A rotated or revoked token (here, or on another instance) is forgotten at once.
    storage.on_token_change(auth.token_changed)
    return Services(
        settings=settings,
        clock=clock,
        storage=storage,
        notifier=notifier,
        metrics=metrics,
        limiter=RateLimiter(
            send_rate=settings.send_rate_limit,
            poll_rate=settings.poll_rate_limit,
            storage=create_limit_storage(settings.rate_limit_url),
        ),
        auth=auth,
        chat=chat,
        bodies=PageBodies(),
    )


async def ensure_admin(services: Services) -> str | None:
    """Make ``POLLCHAT_ADMIN_TOKEN``'s admin exist, or mint the first admin's token.

    Returns:
        A token that was just minted (to show once), or None.
    """
    storage, now = services.storage, services.clock.now()
    if services.settings.admin_token:
        await storage.put_user(
            name=ADMIN_USER, role="admin", token_hash=hash_token(services.settings.admin_token), now=now
        )
        return None
    if await storage.has_admin():
        return None
    token = new_token()
    await storage.put_user(name=ADMIN_USER, role="admin", token_hash=hash_token(token), now=now)
    return token


async def _start_assistant(services: Services) -> AssistantRunner | None:
    responder = create_responder(services.settings.assistant)
    if responder is None:
        return None
    # The assistant's token is random and never shown: nobody can sign in as it.
    assistant = await services.storage.put_user(
        name=ASSISTANT_USER,
        role="operator",
        token_hash="disabled:" + secrets.token_hex(16),
        now=services.clock.now(),
    )
    runner = AssistantRunner(responder=responder, chat=services.chat, assistant=assistant)
    services.chat.add_listener(runner.submit)
    await runner.start()
    return runner


def _describe_errors_truthfully(app: FastAPI) -> None:
    """Drop FastAPI's generated 422 responses: validation errors answer 400 in the error shape."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class PollchatApp(FastAPI):
    """FastAPI, with polls and sends offered to their fronts before its middleware stack sees them."""

    poll_front: PollFront | None = None
    send_front: SendFront | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == MESSAGES_PATH:
            method = scope["method"]
            if method == "GET" and self.poll_front is not None and await self.poll_front.answer(scope, receive, send):
                return
            if method == "POST" and self.send_front is not None:
                await self.send_front.handle(scope, receive, send, super().__call__)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    storage: Storage | None = None,
    announce_token: TokenAnnouncer | None = None,
    wake_on_signals: bool = False,
) -> PollchatApp:
    """The ASGI app for ``settings``.

    Args:
        announce_token: called with the first admin's token when start-up mints one.
        wake_on_signals: answer parked long polls at once on SIGTERM/SIGINT (for servers;
            tests that run the app in-process leave the signals alone).
    """
    services = build_services(settings, clock=clock, storage=storage)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        restore_signals = chain_exit_signals(services.notifier.close) if wake_on_signals else None
        await services.storage.open()
        runner: AssistantRunner | None = None
        try:
            token = await ensure_admin(services)
            services.auth.forget()
            if token is not None and announce_token is not None:
                announce_token(token)
            runner = await _start_assistant(services)
            app.state.assistant = runner
            yield
        finally:
            if restore_signals is not None:
                restore_signals()
            services.notifier.close()
            if runner is not None:
                await runner.stop()
            await services.storage.close()

    app = PollchatApp(
        title="pollchat",
        version=__version__,
        description="Chat over plain HTTP polling: short polls, long polls, ETags, idempotent sends.",
        lifespan=lifespan,
    )
    _describe_errors_truthfully(app)
    app.state.services = services
    app.state.assistant = None
    install_error_handlers(app)
    for module in (health, messages, sessions, users, web):
        app.include_router(module.router)
    app.mount("/web", web.static_files(), name="web")
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(GZipMiddleware, minimum_size=settings.gzip_min_bytes)
    requests = RequestCounter(services.metrics)
    app.add_middleware(MetricsMiddleware, requests=requests)
    app.poll_front = PollFront(services=services, requests=requests)
    app.send_front = SendFront(services=services, requests=requests, path=MESSAGES_PATH)
    return app
