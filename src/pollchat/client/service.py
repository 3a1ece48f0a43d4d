"""``PollingChatService``: the seed's client, in asyncio.

Two tasks per service. The *poller* keeps exactly one poll in flight, follows the server's
cursor and hands each message to the application once, in cursor order, later changes as
updates. The *sender* drains the outbox in order: the head message is retried with the same
``client_message_id`` until the server acknowledges or refuses it, so a retry can never store
a message twice and a later message never overtakes an earlier one. A refused message is set
aside as ``failed`` and the queue moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, Literal

import httpx

from pollchat.client.answer import (
    Page,
    RequestFailed,
    batch_results,
    page,
    query_number,
    refusal,
    stored_message,
)
from pollchat.client.clock import Clock, SystemClock
from pollchat.client.models import (
    ChatMessage,
    ConnectionState,
    ConnectionStatus,
    MessageEvent,
    MessageResponse,
    PollStats,
)
from pollchat.client.outbox import Outbox, Outgoing
from pollchat.client.strategy import PollingStrategy

logger = logging.getLogger(__name__)

API = "/api/v1/admin/chat"
MAX_BATCH = 100
# Codes of a refused ``since``: a garbage cursor, another session's, or one ahead of the session.
CURSOR_REFUSED = frozenset({"bad_cursor", "cursor_wrong_session", "cursor_ahead", "unknown_message"})
# A long poll that fails after this long in flight (or half its wait) was cut while held.
CUT_AFTER = 5.0
# This many cuts in a row, with no long poll ending normally between them, switch to short polls...
CUTS_BEFORE_FALLBACK = 3
# ...for this long, then long polls are tried again.
FALLBACK_SECONDS = 300.0
MessageCallback = Callable[[MessageEvent], None]
StatusCallback = Callable[[ConnectionStatus], None]
UnauthorizedCallback = Callable[[RequestFailed], None]


def was_cut(exc: RequestFailed, *, wait: float, elapsed: float) -> bool:
    """Whether a poll that asked for ``wait`` and failed with ``exc`` after ``elapsed`` seconds was cut while held."""
    # Something on the way gave up on it (a proxy's read timeout, a load balancer's idle timeout):
    # a transient failure after a while held, not the server's say-so (a Retry-After) nor our own
    # timeout. The browser client draws the same line.
    if not exc.transient or exc.timed_out or exc.retry_after is not None:
        return False
    return wait > 0 and elapsed >= min(CUT_AFTER, wait / 2)


class PollingChatService:
    """Chat in one session over HTTP polling: ordered idempotent sends, adaptive polls, offline queue.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        token: a bearer token.
        session_id: the session to chat in (created by the first send if new).
        strategy: polling intervals; long polling by default.
        state_path: a file that keeps unsent messages and the cursor across restarts.
        transport: an httpx transport (tests pass ``httpx.MockTransport``).
        cursor: where to start following the session (default: the state file's, else the start).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        session_id: str,
        *,
        strategy: PollingStrategy | None = None,
        client_name: str | None = None,
        state_path: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        request_timeout: float = 15.0,
        cursor: str | None = None,
    ) -> None:
        self.session_id = session_id
        self.strategy = strategy or PollingStrategy()
        self.client_name = client_name
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._timeout = request_timeout
        # One pooled keep-alive connection: a poll and a send may overlap, nothing more.
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"},
            transport=transport,
            timeout=request_timeout,
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
        )
        self._outbox = Outbox(state_path)
        self._cursor: str | None = cursor or self._outbox.cursor
        self._given_cursor = cursor
        self._fresh_read = False  # the cursor was dropped, and no poll after a cursor has worked since
        self._synced = False  # a page without has_more has come: caught up with the session
        self._cuts = 0  # long polls cut in a row
        self._fallback_until = 0.0  # short polls until then: something cuts long polls
        self._etag: str | None = None
        self._seen: dict[str, tuple[str, str, str | None]] = {}
        self._local: dict[str, ChatMessage] = {}  # by client_message_id, our own sends
        self._waiters: dict[str, asyncio.Future[MessageResponse]] = {}
        self._outbox_changed = asyncio.Event()
        self._poll_now = asyncio.Event()
        self._sender_wake = asyncio.Event()  # cuts a send retry's own delay short
        self._poll_lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._message_callbacks: list[MessageCallback] = []
        self._status_callbacks: list[StatusCallback] = []
        self._unauthorized_callbacks: list[UnauthorizedCallback] = []
        self._unauthorized_reported = False
        self._send_refused: RequestFailed | None = None  # the 401 that stopped the sender
        self._subscribers: list[asyncio.Queue[MessageEvent | ConnectionStatus]] = []
        self._status = ConnectionStatus(state="offline")
        self._last_activity: float | None = None
        self.stats = PollStats(started_at=self._clock.monotonic())
        for item in self._outbox.pending():
            self._local[item.client_message_id] = self._local_message(item)

    # public API

    @property
    def connection_status(self) -> ConnectionStatus:
        """Connection state, last successful poll, error count, retry attempts, polling active."""
        return self._status

    @property
    def pending(self) -> list[ChatMessage]:
        """Our messages not yet acknowledged, in send order."""
        return [self._local[i.client_message_id] for i in self._outbox.pending()]

    @property
    def cursor(self) -> str | None:
        """Where polling has got to."""
        return self._cursor

    def on_message(self, callback: MessageCallback) -> None:
        """Call ``callback`` for every new or changed message."""
        self._message_callbacks.append(callback)

    def on_status(self, callback: StatusCallback) -> None:
        """Call ``callback`` whenever the connection status changes."""
        self._status_callbacks.append(callback)

    def on_unauthorized(self, callback: UnauthorizedCallback) -> None:
        """Call ``callback`` once when the server refuses the token (401); polling and sending have stopped."""
        self._unauthorized_callbacks.append(callback)

    def events(self) -> AsyncIterator[MessageEvent | ConnectionStatus]:
        """Every message event and status change from now on, as an async iterator.

        The subscription starts with this call, not with the first ``anext``: nothing that
        happens in between is lost.
        """
        queue: asyncio.Queue[MessageEvent | ConnectionStatus] = asyncio.Queue()
        self._subscribers.append(queue)
        return self._follow(queue)

    async def _follow(
        self, queue: asyncio.Queue[MessageEvent | ConnectionStatus]
    ) -> AsyncIterator[MessageEvent | ConnectionStatus]:
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def start_polling(self) -> None:
        """Start the poller and the sender (either may be running already, or stopped by a 401)."""
        self._unauthorized_reported = False
        if self._poller is None or self._poller.done():
            self._set_status(polling_active=True)
            self._poller = asyncio.create_task(self._poll_loop(), name=f"pollchat-poll-{self.session_id}")
        await self.start_sending()

    async def start_sending(self) -> None:
        """Start only the sender (for scripts that send without following the session)."""
        if self._sender is None or self._sender.done():
            self._send_refused = None
            self._sender = asyncio.create_task(self._send_loop(), name=f"pollchat-send-{self.session_id}")

    async def stop_polling(self) -> None:
        """Stop both tasks; unsent messages stay queued (and in the state file)."""
        tasks = [task for task in (self._poller, self._sender) if task is not None]
        self._poller = self._sender = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_status(polling_active=False)

    async def aclose(self) -> None:
        """Stop and release the connection."""
        await self.stop_polling()
        await self._http.aclose()

    async def __aenter__(self) -> PollingChatService:
        await self.start_polling()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def set_polling_interval(self, seconds: float) -> None:
        """Poll at a fixed interval with short polls (the seed's ``setPollingInterval``)."""
        self.strategy = replace(
            self.strategy, mode="short", base_interval=seconds, active_interval=seconds, inactive_interval=seconds
        )
        self._poll_now.set()

    def enqueue(self, content: str, *, type: str = "user", metadata: dict[str, Any] | None = None) -> ChatMessage:
        """Queue a message and return it at once with status ``sending``."""
        item = Outgoing(
            client_message_id=str(uuid.uuid4()),
            session_id=self.session_id,
            content=content,
            type=type,
            created_at=self._clock.now().isoformat(),
            metadata=metadata,
        )
        self._outbox.add(item)
        message = self._local_message(item)
        self._local[item.client_message_id] = message
        self._touch()
        self._emit(MessageEvent("new", message))
        self._outbox_changed.set()
        return message

    async def send_message(
        self, content: str, *, type: str = "user", metadata: dict[str, Any] | None = None
    ) -> MessageResponse:
        """Send a message; returns once the server acknowledged it or refused it for good.

        The message is queued first, so while the server is unreachable this waits (the sender
        keeps retrying); the polling tasks must be running. When the server refuses the token,
        this returns the refusal at once and the message stays queued.
        """
        message = self.enqueue(content, type=type, metadata=metadata)
        assert message.client_message_id is not None
        return await self.wait_for(message.client_message_id)

    async def wait_for(self, client_message_id: str) -> MessageResponse:
        """Wait until a queued message is acknowledged or refused."""
        current = self._local.get(client_message_id)
        if current is not None and current.status not in ("sending",):
            return self._response(current)
        if self._send_refused is not None:
            exc = self._send_refused
            return MessageResponse(False, None, error=str(exc), code=exc.code, message=current)
        future = self._waiters.get(client_message_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[client_message_id] = future
        return await asyncio.shield(future)

    def retry(self, message: ChatMessage) -> ChatMessage:
        """Queue a ``failed`` message again (same ``client_message_id``), at the end of the queue."""
        if message.status != "failed" or message.client_message_id is None:
            raise ValueError("only a failed message can be retried")
        item = Outgoing(
            client_message_id=message.client_message_id,
            session_id=message.session_id,
            content=message.content,
            type=message.type,
            created_at=message.timestamp,
            metadata=message.metadata,
        )
        self._outbox.add(item)
        again = message.with_status("sending")
        self._local[item.client_message_id] = again
        self._emit(MessageEvent("update", again))
        self._outbox_changed.set()
        return again

    async def whoami(self) -> str:
        """The id of the user this service's token belongs to."""
        response = await self._request("GET", "/api/v1/admin/users/me")
        if response.status_code != 200:
            raise refusal(response, self._clock.now())
        return str(response.json()["user"]["id"])

    async def get_messages(self, session_id: str, last_message_id: str | None = None) -> list[ChatMessage]:
        """One fetch of a session's messages after ``last_message_id`` (all of them when None)."""
        messages: list[ChatMessage] = []
        since = last_message_id
        while True:
            async with self._poll_lock:
                answer = await self._get(session_id, since=since, wait=0, etag=None)
            assert answer is not None
            messages += answer.messages
            since = answer.cursor
            if not answer.has_more:
                return messages

    # polling

    async def _poll_loop(self) -> None:
        errors = 0
        while True:
            retry_after: float | None = None
            # Cleared before the poll, not after: a send acknowledged while it is in flight may
            # be missing from its page, so it must still cut the pause that follows short.
            self._poll_now.clear()
            try:
                has_more = await self._poll_once()
                errors = 0
                if has_more:
                    continue
            except RequestFailed as exc:
                if exc.status == 401:
                    # The token is refused: every poll would be. Stop, and say so, until the
                    # application starts polling again (with a service holding a new token).
                    self._failed(exc, errors + 1)
                    self._set_status(polling_active=False)
                    self._report_unauthorized(exc)
                    return
                if await self._got_past(exc):
                    continue
                errors += 1
                retry_after = exc.retry_after
                self._failed(exc, errors)
            await self._pause(errors=errors, retry_after=retry_after)

    async def _got_past(self, exc: RequestFailed) -> bool:
        """Deal with a failed poll that needs no pause; True when the next poll may go out at once."""
        if exc.cut:
            self._cut_short()
            return True
        if exc.code == "session_not_found":
            return await self._create_session()
        lowered = self.strategy.with_lower_wait((exc.body or {}).get("max_wait"))
        if exc.code == "wait_too_long" and lowered is not None:
            # This server holds polls for less time than we asked: ask for what it allows, at
            # once. Retrying the refused wait would flip between error and connected for ever.
            logger.info(
                "the server refused wait=%g; asking for %g", self.strategy.long_poll_wait, lowered.long_poll_wait
            )
            self.strategy = lowered
            return True
        if exc.code in CURSOR_REFUSED and self._cursor is not None and self._cursor != self._given_cursor:
            # A cursor saved earlier that the server cannot use (its data was reset, say):
            # follow the session from its start instead of failing for ever. When the fresh
            # read's cursor is refused too (instances that disagree), starting over at once
            # would hammer the server: then it is an error with the usual backoff.
            logger.warning("the server refused the cursor %r (%s); starting over", self._cursor, exc)
            again = self._fresh_read
            self._cursor = self._etag = None
            self._outbox.set_cursor(None)
            self._fresh_read = True
            return not again
        return False

    def _cut_short(self) -> None:
        # A long poll cut while held says nothing about the server or the network: it is made
        # again at once, and no error is shown (should the network really be gone, that poll
        # says so). Enough cuts in a row mean something cuts every long poll: short-poll a while.
        self._cuts += 1
        if self._cuts >= CUTS_BEFORE_FALLBACK:
            self._cuts = 0
            self._fallback_until = self._clock.monotonic() + FALLBACK_SECONDS
            logger.warning("long polls keep being cut on the way; short polls for %g s", FALLBACK_SECONDS)

    def _effective_mode(self) -> Literal["long", "short"]:
        if self.strategy.mode == "short" or self._clock.monotonic() < self._fallback_until:
            return "short"
        return "long"

    async def _pause(self, *, errors: int, retry_after: float | None) -> None:
        since = None if self._last_activity is None else self._clock.monotonic() - self._last_activity
        delay = self.strategy.poll_delay(
            errors=errors, seconds_since_activity=since, rng=self._rng, mode=self._effective_mode()
        )
        # The server's Retry-After (e.g. a poll rate limit) is a floor that no send cuts short;
        # the rest of the delay is ours, and a send may end it early.
        floor = 0.0 if retry_after is None else self.strategy.retry_after_delay(retry_after, self._rng)
        delay = max(delay, floor)
        if delay > 0:
            if floor > 0:
                await self._clock.sleep(floor)
            if delay > floor:
                # A send wakes a short-polling client early: an answer is likely soon.
                await self._sleep_or_wake(delay - floor, self._poll_now)

    async def _sleep_or_wake(self, delay: float, wake: asyncio.Event) -> None:
        loop_task = asyncio.current_task()
        # Named after the loop that sleeps, so a clock (a test's) can tell whose pause it is.
        name = f"{loop_task.get_name() if loop_task is not None else 'pollchat'}-pause"
        sleeper = asyncio.create_task(self._clock.sleep(delay), name=name)
        waker = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)

    async def _create_session(self) -> bool:
        """Create our session, which the first send would otherwise create; True if it now exists."""
        body: dict[str, Any] = {"id": self.session_id}
        if self.client_name:
            body["client_name"] = self.client_name
        try:
            response = await self._request("POST", f"{API}/sessions", json=body)
            if response.status_code == 409:
                # It exists now: a send of ours created it meanwhile (then we may read it, and
                # the poll is simply repeated), or it is somebody else's (then the 404 stands).
                response = await self._request("GET", f"{API}/sessions/{self.session_id}")
                return response.status_code == 200
        except RequestFailed:
            return False
        return response.status_code == 201

    async def _poll_once(self) -> bool:
        # Catching up (the first pages of a session, a connection just back) is done with wait=0,
        # so history and "connected" show at once instead of after a whole long poll; parking
        # starts from the next poll.
        recovering = self._status.state != "connected" or bool(self._status.error_count)
        long = self._effective_mode() == "long" and self._synced and not recovering
        wait = self.strategy.long_poll_wait if long else 0
        since = self._cursor
        async with self._poll_lock:
            if self._status.state != "connected" or self._status.error_count:
                self._set_status(state="polling")
            started = self._clock.monotonic()
            try:
                answer = await self._get(self.session_id, since=since, wait=wait, etag=self._etag)
            except RequestFailed as exc:
                exc.cut = was_cut(exc, wait=wait, elapsed=self._clock.monotonic() - started)
                raise
        if since is not None:
            self._fresh_read = False
        if wait:
            self._cuts = 0  # a long poll that ended normally
        if recovering and len(self._outbox):
            self._sender_wake.set()  # the server answers again: queued sends go out now
        self._set_status(
            state="connected", error_count=0, retry_attempts=0, last_successful_poll=self._clock.now(), last_error=None
        )
        if answer is None:  # 304
            self.stats.not_modified += 1
            return False
        if answer.messages:
            self.stats.useful_polls += 1
        else:
            self.stats.empty_polls += 1
        for message in answer.messages:
            self._receive(message)
        self._cursor = answer.cursor
        self._outbox.set_cursor(self._cursor)
        self._synced = self._synced or not answer.has_more
        return answer.has_more

    async def _get(self, session_id: str, *, since: str | None, wait: float, etag: str | None) -> Page | None:
        params: dict[str, Any] = {"session_id": session_id}
        if since:
            params["since"] = since
        if wait:
            params["wait"] = query_number(wait)
        headers = {"If-None-Match": etag} if etag and not wait else {}
        timeout = httpx.Timeout(self._timeout, read=wait + self._timeout)
        response = await self._request("GET", f"{API}/messages", params=params, headers=headers, timeout=timeout)
        if response.status_code == 304:
            return None
        if response.status_code != 200:
            raise refusal(response, self._clock.now())
        answer = page(response)
        if session_id == self.session_id:
            self._etag = response.headers.get("etag")
        return answer

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        started = self._clock.monotonic()
        self.stats.requests += 1
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.ConnectError as exc:
            raise RequestFailed(f"cannot reach the server: {exc}", transient=True, offline=True) from exc
        except httpx.TimeoutException as exc:
            raise RequestFailed("the server did not answer in time", transient=True, timed_out=True) from exc
        except httpx.TransportError as exc:
            raise RequestFailed(f"connection failed: {type(exc).__name__}", transient=True, offline=True) from exc
        self.stats.record_latency(self._clock.monotonic() - started)
        return response

    def _failed(self, exc: RequestFailed, errors: int) -> None:
        self.stats.errors += 1
        # Offline: no answer came (no connection, a connection cut, nothing in time). A server
        # that answers, even with 5xx or a proxy's page, is reachable: that is an error. The
        # browser client draws the same line, where fetch cannot tell a refusal from a reset.
        state: ConnectionState = "offline" if exc.offline else "error"
        self._set_status(state=state, error_count=errors, retry_attempts=errors, last_error=str(exc))

    def _receive(self, message: ChatMessage) -> None:
        local = self._local.get(message.client_message_id) if message.client_message_id else None
        previous = self._seen.get(message.id)
        if previous == message.version:
            return
        self._seen[message.id] = message.version
        if local is not None and local.session_id == message.session_id:
            # Our own send, reported back by the server: an update of what the app shows.
            self._local[message.client_message_id or ""] = message
            self._emit(MessageEvent("update", message))
            return
        if previous is None:
            self._touch()
        self._emit(MessageEvent("new" if previous is None else "update", message))

    # sending

    async def _send_loop(self) -> None:
        attempt = 0
        one_by_one = False
        while True:
            if not len(self._outbox):
                self._outbox_changed.clear()
                one_by_one = False
                await self._outbox_changed.wait()
                continue
            batch = self._outbox.head(1 if one_by_one else MAX_BATCH)
            try:
                await self._send_batch(batch)
                attempt = 0
            except RequestFailed as exc:
                if exc.status == 401:
                    # Refused for who sends, not for what: the queue is kept (in the state file
                    # too) for a later start with a valid token; waiting callers hear why now.
                    self._send_refused = exc
                    self._release_waiters(exc)
                    self._report_unauthorized(exc)
                    return
                if not exc.transient and len(batch) > 1:
                    # A server with a smaller batch limit: send the backlog one by one.
                    one_by_one = True
                    continue
                if not exc.transient:
                    # The whole request was refused (e.g. a closed session): fail the head only,
                    # so the queue keeps moving and the application sees why.
                    self._settle(batch[0], None, str(exc), exc.code)
                    continue
                attempt += 1
                self.stats.send_retries += 1
                await self._retry_pause(attempt, exc)

    async def _retry_pause(self, attempt: int, exc: RequestFailed) -> None:
        # The server's Retry-After is a floor; the rest of the delay is ours, and a poll that
        # finds the server again ends it: queued messages need not sit out their backoff.
        floor = exc.retry_after or 0.0
        delay = max(self.strategy.send_delay(attempt, self._rng), floor)
        self._set_status(retry_attempts=attempt, last_error=str(exc))
        self._sender_wake.clear()
        if floor > 0:
            await self._clock.sleep(floor)
        if delay > floor:
            await self._sleep_or_wake(delay - floor, self._sender_wake)

    async def _send_batch(self, batch: list[Outgoing]) -> None:
        if len(batch) == 1:
            response = await self._request("POST", f"{API}/messages", json=batch[0].request(self.client_name))
            if response.status_code in (200, 201):
                self._settle(batch[0], stored_message(response), None, None)
                return
            raise refusal(response, self._clock.now())
        response = await self._request(
            "POST", f"{API}/messages/batch", json={"messages": [i.request(self.client_name) for i in batch]}
        )
        if response.status_code != 200:
            raise refusal(response, self._clock.now())
        for item, result in zip(batch, batch_results(response, len(batch)), strict=True):
            self._settle(item, result.get("message"), result.get("error"), result.get("code"))

    def _settle(self, item: Outgoing, stored: dict[str, Any] | None, error: str | None, code: str | None) -> None:
        self._outbox.remove({item.client_message_id})
        local = self._local[item.client_message_id]
        if stored is not None:
            message = ChatMessage.from_api(stored)
            if local.status in ("sending", "failed"):
                self._local[item.client_message_id] = message
                self._seen.setdefault(message.id, message.version)
                self._emit(MessageEvent("update", message))
            response = MessageResponse(True, message.id, message=message)
        else:
            failed = local.with_status("failed", error)
            self._local[item.client_message_id] = failed
            self._emit(MessageEvent("update", failed))
            response = MessageResponse(False, None, error=error, code=code, message=failed)
        future = self._waiters.pop(item.client_message_id, None)
        if future is not None and not future.done():
            future.set_result(response)
        self._poll_now.set()

    def _release_waiters(self, exc: RequestFailed) -> None:
        for client_message_id, future in list(self._waiters.items()):
            if not future.done():
                message = self._local.get(client_message_id)
                future.set_result(MessageResponse(False, None, error=str(exc), code=exc.code, message=message))
        self._waiters.clear()

    def _report_unauthorized(self, exc: RequestFailed) -> None:
        # Once, whichever loop hears it first: the application has one thing to do (sign in again).
        if self._unauthorized_reported:
            return
        self._unauthorized_reported = True
        for callback in self._unauthorized_callbacks:
            try:
                callback(exc)
            except Exception:
                logger.exception("a pollchat callback failed")

    # helpers

    def _local_message(self, item: Outgoing) -> ChatMessage:
        return ChatMessage(
            id=f"local:{item.client_message_id}",
            type="assistant" if item.type == "assistant" else "user",
            content=item.content,
            timestamp=item.created_at,
            session_id=item.session_id,
            status="sending",
            client_message_id=item.client_message_id,
            metadata=item.metadata,
        )

    @staticmethod
    def _response(message: ChatMessage) -> MessageResponse:
        if message.status == "failed":
            return MessageResponse(False, None, error=message.error, message=message)
        return MessageResponse(True, message.id, message=message)

    def _touch(self) -> None:
        self._last_activity = self._clock.monotonic()

    def _set_status(self, **changes: Any) -> None:
        status = replace(self._status, **changes)
        before = self._status
        self._status = status
        # A new poll time alone is not news; a change of state, activity or error count is.
        if replace(status, last_successful_poll=None, last_error=None) != replace(
            before, last_successful_poll=None, last_error=None
        ):
            self._emit(status)

    def _emit(self, event: MessageEvent | ConnectionStatus) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)
        callbacks: list[Any] = self._message_callbacks if isinstance(event, MessageEvent) else self._status_callbacks
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                logger.exception("a pollchat callback failed")
