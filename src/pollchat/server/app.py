"""``create_app(settings)``: builds the services, wires the routes, owns start-up and shutdown."""

from __future__ import annotations

import gc
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import Message, Receive, Scope, Send

from pollchat import __version__
from pollchat.assistants import create_responder
from pollchat.assistants.runner import AssistantRunner
from pollchat.clock import Clock, SystemClock
from pollchat.domain.cursor import Cursors
from pollchat.domain.errors import PollchatError
from pollchat.metrics import Metrics, RequestCounter
from pollchat.server.auth import Authenticator, hash_token, new_token
from pollchat.server.bodies import PageBodies
from pollchat.server.compression import Compression
from pollchat.server.deps import Services
from pollchat.server.errors import failure_response, install_error_handlers
from pollchat.server.http import (
    BODY_METHODS,
    UNREAD_BODY_CODES,
    BodyReader,
    ClientDisconnected,
    Endpoint,
    check_headers,
    read_as_json,
    replay_body,
)
from pollchat.server.messages_endpoint import PATH as MESSAGES_PATH
from pollchat.server.messages_endpoint import MessagesEndpoint
from pollchat.server.ratelimit import RateLimiter, create_limit_storage
from pollchat.server.routes import health, messages, sessions, users, web
from pollchat.server.signals import chain_exit_signals
from pollchat.services.notifier import Notifier
from pollchat.services.polling import PollService
from pollchat.services.sending import SendService
from pollchat.services.sessions import SessionService
from pollchat.settings import Settings
from pollchat.storage import Storage, create_storage

logger = logging.getLogger(__name__)

ASSISTANT_USER = "assistant"
ADMIN_USER = "admin"

# Called once the app can serve: with the first admin's token when start-up minted one, else None.
TokenAnnouncer = Callable[[str | None], None]

API_DESCRIPTION = """Chat over plain HTTP polling: short polls, long polls, ETags, idempotent sends.

Every request under `/api/v1/admin` needs `Authorization: Bearer <token>`. **Session ids are
shared by every user**: a send to a session id nobody uses creates that session for the caller,
while a session id someone else uses answers 404, exactly as a session that does not exist.
Let the server make an unguessable id (`POST /api/v1/admin/chat/sessions` without `id`), or pick
a random one, so that nobody takes your id first.
"""
# A refused body is still read up to this many bytes (or four times the limit), so that the
# client reads its 413 instead of a connection reset.
_DRAIN_BYTES = 64 * 1024 * 1024


def build_services(settings: Settings, *, clock: Clock | None = None, storage: Storage | None = None) -> Services:
    """The app's stateful parts, not yet started."""
    clock = clock or SystemClock()
    storage = storage or create_storage(settings.database_url)
    metrics = Metrics()
    notifier = Notifier(max_parked_per_user=settings.max_parked_polls_per_user, monotonic=clock.monotonic)
    metrics.parked.set_function(lambda: notifier.parked)
    # Commits of other instances (PostgreSQL LISTEN/NOTIFY) wake this instance's long polls.
    storage.on_change(notifier.wake)
    auth = Authenticator(storage, monotonic=clock.monotonic)
    # A rotated or revoked token (here, or on another instance) is forgotten at once.
    storage.on_token_change(auth.token_changed)
    cursors = Cursors()  # keyed with the server secret once storage is open
    sessions = SessionService(storage=storage, notifier=notifier, settings=settings, clock=clock, cursors=cursors)
    return Services(
        settings=settings,
        clock=clock,
        storage=storage,
        notifier=notifier,
        metrics=metrics,
        limiter=RateLimiter.from_settings(settings, storage=create_limit_storage(settings.rate_limit_url)),
        auth=auth,
        cursors=cursors,
        sessions=sessions,
        sending=SendService(
            storage=storage, notifier=notifier, metrics=metrics, settings=settings, clock=clock, sessions=sessions
        ),
        polling=PollService(
            storage=storage,
            notifier=notifier,
            metrics=metrics,
            clock=clock,
            sessions=sessions,
            cursors=cursors,
            max_page_bytes=settings.max_page_bytes,
        ),
        bodies=PageBodies(),
        compression=Compression(min_bytes=settings.gzip_min_bytes),
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
    runner = AssistantRunner(responder=responder, sending=services.sending, assistant=assistant)
    services.sending.add_listener(runner.submit)
    await runner.start()
    return runner


def _describe_truthfully(app: FastAPI) -> None:
    """Describe the hot routes too, and drop FastAPI's 422 responses (validation errors answer 400)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            routes = [*app.routes, *messages.documented.routes]
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=routes)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class PollchatApp:
    """The ASGI app: the checks every request meets, then the hot endpoint or FastAPI.

    Every request passes here once: its headers are checked (one ``Authorization``, one
    ``Content-Type``...), its body read whole within the limit, its answer counted, and a
    failure turned into the error shape. Then ``/api/v1/admin/chat/messages`` goes to its
    plain-ASGI endpoint, everything else to FastAPI (the cold routes, the OpenAPI document,
    ``/docs``, the web page), which describes the hot routes too.
    """

    def __init__(self, *, framework: FastAPI, services: Services, endpoints: dict[str, Endpoint]) -> None:
        self.framework = framework
        self.services = services
        self.state = framework.state
        self._endpoints = endpoints
        self._framework_stack = services.compression.cold_layer(framework)
        self._requests = RequestCounter(services.metrics)
        max_bytes = services.settings.max_body_bytes
        self._bodies = BodyReader(
            max_bytes=max_bytes,
            drain_bytes=max(4 * max_bytes, _DRAIN_BYTES),
            timeout=services.settings.body_timeout,
        )

    def lifespan(self) -> AbstractAsyncContextManager[Any]:
        """Start-up and shutdown, for running the app without a server (tests)."""
        return self.framework.router.lifespan_context(self.framework)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document."""
        return self.framework.openapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.framework(scope, receive, send)
            return
        endpoint = self._endpoints.get(scope["path"])
        if endpoint is None:
            await self._framework_request(scope, receive, send)
            return
        # The hot path, inline: a parked poll holds this frame, the endpoint's and the poll's.
        status = 500
        try:
            receive = await self._admit(scope, receive)
            status = await endpoint(scope, receive, send)
        except Exception as exc:
            status = await self._refuse(exc, scope, receive, send)
        finally:
            self._requests.count(scope["method"], scope["path"], status)

    async def _admit(self, scope: Scope, receive: Receive) -> Receive:
        """Check the request's headers and read its body (bounded): what every route needs first."""
        check_headers(scope)
        if scope["method"] not in BODY_METHODS:
            return receive
        read_as_json(scope)
        body = await self._bodies.read(scope, receive)
        if body is None:
            raise ClientDisconnected
        return replay_body(body, receive)

    async def _refuse(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer a request that raised ``exc`` in the error shape; returns the status."""
        if isinstance(exc, ClientDisconnected):
            return 499  # nobody to answer: the client went away before its request was whole
        response = failure_response(exc)
        if isinstance(exc, PollchatError) and exc.code in UNREAD_BODY_CODES:
            response.headers["connection"] = "close"  # the rest of a refused body is not read
        await response(scope, receive, send)
        return response.status_code

    async def _framework_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, started = 500, False

        async def counted(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            receive = await self._admit(scope, receive)
            await self._framework_stack(scope, receive, counted)
        except Exception as exc:
            if started:
                raise
            status = await self._refuse(exc, scope, receive, counted)
        finally:
            self._requests.count(scope["method"], getattr(scope.get("route"), "path", None) or "unmatched", status)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    storage: Storage | None = None,
    announce_token: TokenAnnouncer | None = None,
    wake_on_signals: bool = False,
    freeze_after_startup: bool = False,
) -> PollchatApp:
    """The ASGI app for ``settings``.

    Args:
        announce_token: called once start-up is done, with the first admin's token when it
            minted one (to show once), else with None.
        wake_on_signals: answer parked long polls at once on SIGTERM/SIGINT (for servers;
            tests that run the app in-process leave the signals alone).
        freeze_after_startup: take what start-up built out of every later garbage collection
            (for server processes, whose start-up objects live as long as they do).
    """
    services = build_services(settings, clock=clock, storage=storage)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        restore_signals = chain_exit_signals(services.notifier.close) if wake_on_signals else None
        await services.storage.open()
        services.cursors.use_secret(await services.storage.server_secret())
        runner: AssistantRunner | None = None
        try:
            token = await ensure_admin(services)
            services.auth.forget()
            if announce_token is not None:
                announce_token(token)
            runner = await _start_assistant(services)
            app.state.assistant = runner
            if freeze_after_startup:
                gc.freeze()
            yield
        finally:
            if restore_signals is not None:
                restore_signals()
            services.notifier.close()
            if runner is not None:
                await runner.stop()
            await services.storage.close()

    framework = FastAPI(
        title="pollchat",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by routes.web from the package's own files
        redoc_url=None,
    )
    _describe_truthfully(framework)
    framework.state.services = services
    framework.state.assistant = None
    install_error_handlers(framework)
    for module in (health, messages, sessions, users, web):
        framework.include_router(module.router)
    framework.mount("/web", web.static_files(), name="web")
    return PollchatApp(
        framework=framework, services=services, endpoints={MESSAGES_PATH: MessagesEndpoint(services=services)}
    )
