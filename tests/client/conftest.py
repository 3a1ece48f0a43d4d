"""Fixtures for the client library: fake time, a seeded random source and an in-memory fake server.

Nothing here sleeps for real. ``FakeClock`` is a virtual clock: ``sleep`` records the delay the
client asked for and parks the caller until the test moves time past its deadline, which
``run_until``/``run_for`` do by running the event loop until it is idle and then jumping to the
next deadline. ``FakeServer`` implements the parts of the HTTP contract the client uses, behind
an ``httpx.MockTransport``, and can be told to fail in the ways a network and a server fail.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from pollchat.client import ConnectionStatus, MessageEvent, PollingChatService, PollingStrategy

API = "/api/v1/admin/chat"
BASE_URL = "http://chat.test"
TOKEN = "tok-alice"
SESSION = "s1"
SEED = 20260101


# fake time


@dataclass(frozen=True)
class Sleep:
    """A delay the client asked the clock for."""

    who: Literal["poll", "send"]
    seconds: float
    at: float


class FakeClock:
    """The client ``Clock`` protocol on virtual time.

    ``sleep`` records each requested delay (tagged ``send`` when the client's sender task asks,
    ``poll`` otherwise) and waits until fake time reaches its deadline. ``wait`` is the same
    without the record, for the fake server's long polls.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._start_wall = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._start = 1000.0
        self._mono = self._start
        self.sleeps: list[Sleep] = []
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    # the Clock protocol

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> datetime:
        return self._start_wall + timedelta(seconds=self._mono - self._start)

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        name = task.get_name() if task is not None else ""
        who: Literal["poll", "send"] = "send" if name.startswith("pollchat-send") else "poll"
        self.sleeps.append(Sleep(who, seconds, self._mono))
        await self.wait(seconds)

    # for the fake server and the tests

    @property
    def elapsed(self) -> float:
        """Fake seconds since the clock was made."""
        return self._mono - self._start

    def poll_sleeps(self) -> list[float]:
        return [s.seconds for s in self.sleeps if s.who == "poll"]

    def send_sleeps(self) -> list[float]:
        return [s.seconds for s in self.sleeps if s.who == "send"]

    async def wait(self, seconds: float) -> None:
        """Wait ``seconds`` of fake time without recording it."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._mono + seconds, next(self._seq), future))
        await future

    def _next_deadline(self) -> float | None:
        while self._timers and self._timers[0][2].done():
            heapq.heappop(self._timers)  # cancelled sleeps
        return self._timers[0][0] if self._timers else None

    def _jump(self, to: float) -> None:
        self._mono = max(self._mono, to)
        while self._timers and self._timers[0][0] <= self._mono:
            _, _, future = heapq.heappop(self._timers)
            if not future.done():
                future.set_result(None)

    @staticmethod
    async def settle() -> None:
        """Run the event loop until every task waits for time or for something the test does."""
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        idle = 0
        for _ in range(100_000):
            await asyncio.sleep(0)
            if ready is None:
                idle += 1
                if idle >= 200:
                    return
            elif not ready:
                idle += 1
                if idle >= 3:
                    return
            else:
                idle = 0
        raise AssertionError("the event loop never went idle")

    async def run_until(self, condition: Callable[[], bool], *, within: float = 600.0) -> None:
        """Let fake time pass, deadline by deadline, until ``condition`` holds (at most ``within`` seconds)."""
        limit = self._mono + within
        while True:
            await self.settle()
            if condition():
                return
            deadline = self._next_deadline()
            if deadline is None:
                raise AssertionError("condition not met and nothing is scheduled (deadlock)")
            if deadline > limit:
                raise AssertionError(f"condition not met within {within} fake seconds")
            self._jump(deadline)

    async def run_for(self, seconds: float) -> None:
        """Let ``seconds`` of fake time pass, running everything due meanwhile."""
        end = self._mono + seconds
        while True:
            await self.settle()
            deadline = self._next_deadline()
            if deadline is None or deadline > end:
                break
            self._jump(deadline)
        self._jump(end)
        await self.settle()


# the fake server


@dataclass
class Fault:
    """One way for the next matching request(s) to fail."""

    route: str
    kind: Literal["connect", "read_error", "status", "lost_ack", "slow"]
    status: int = 503
    retry_after: float | None = None
    code: str | None = None
    error: str | None = None
    times: int = 1
    delay: float = 0.0  # "slow": the answer, decided on arrival, leaves after this many fake seconds


@dataclass
class StoredMessage:
    id: str
    session_id: str
    type: str
    content: str
    user_id: str
    timestamp: str
    client_message_id: str | None
    metadata: dict[str, Any] | None
    created_seq: int
    change_seq: int
    delivered: bool = False
    read: bool = False
    edited_at: str | None = None

    def api(self) -> dict[str, Any]:
        status = "read" if self.read else "delivered" if self.delivered else "sent"
        return {
            "id": self.id,
            "type": self.type,
            "content": self.content,
            "timestamp": self.timestamp,
            "session_id": self.session_id,
            "status": status,
            "user_id": self.user_id,
            "client_message_id": self.client_message_id,
            "metadata": self.metadata,
            "delivered": self.delivered or self.read,
            "read": self.read,
            "edited_at": self.edited_at,
        }


@dataclass
class Session:
    id: str
    owner: str
    client_name: str | None
    created_at: str
    closed: bool = False
    head: int = 0
    idempotency: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    """A request as the fake server received it."""

    method: str
    route: str
    params: dict[str, str]
    body: Any
    headers: dict[str, str]
    at: float


def _error(status: int, error: str, code: str, retry_after: float | None = None) -> httpx.Response:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return httpx.Response(status, json={"success": False, "error": error, "code": code}, headers=headers)


class FakeServer:
    """The contract's chat endpoints, in memory, on the fake clock.

    Sessions keep a change sequence: every store or change of a message takes the next number,
    and the cursor ``c_<n>`` names a position in it, so a poll returns each changed message once
    in its latest state, oldest change first.
    """

    def __init__(self, clock: FakeClock, *, batch_limit: int = 100, max_content: int = 32 * 1024) -> None:
        self.clock = clock
        self.batch_limit = batch_limit
        self.max_content = max_content
        self.users: dict[str, dict[str, str]] = {
            TOKEN: {"id": "u_alice", "name": "alice", "role": "member"},
            "tok-bob": {"id": "u_bob", "name": "bob", "role": "member"},
            "tok-op": {"id": "u_op", "name": "op", "role": "operator"},
        }
        self.sessions: dict[str, Session] = {}
        self.messages: dict[str, StoredMessage] = {}
        self.requests: list[Seen] = []
        self.faults: list[Fault] = []
        self.down = False
        self.gets_in_flight = 0
        self.max_gets_in_flight = 0
        self.replay_pages = 0  # answer that many next polls with the previous 200 body again
        self.repeat_old = False  # add every older message of the session to each poll answer
        self.auto_deliver = False  # the other side fetches each user message the moment it is stored
        self.max_wait: float | None = None  # refuse longer waits with 400 wait_too_long ...
        self.says_max_wait = True  # ... whose body names the maximum (older servers did not)
        self._last_page: dict[str, Any] | None = None
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self.transport = httpx.MockTransport(self.handle)

    # telling it what to do

    def fail(
        self,
        route: str,
        kind: Literal["connect", "read_error", "status", "lost_ack", "slow"] = "status",
        *,
        status: int = 503,
        retry_after: float | None = None,
        code: str | None = None,
        error: str | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """Make the next ``times`` requests to ``route`` (send, batch, poll, sessions, session, me or *) fail.

        ``connect`` refuses the connection, ``read_error`` drops it before any work, ``status``
        answers an error status (with ``Retry-After`` when given), ``lost_ack`` does the work and
        then drops the connection, ``slow`` answers correctly but ``delay`` fake seconds late.
        """
        self.faults.append(Fault(route, kind, status, retry_after, code, error, times, delay))

    # acting as the other side

    def post(self, session_id: str, content: str, *, type: str = "assistant", user_id: str = "u_op") -> dict[str, Any]:
        """Store a message as somebody else would."""
        session = self._session_for(session_id, user_id)
        return self._store(session, {"content": content, "type": type}, user_id).api()

    def mark_delivered(self, message_id: str) -> None:
        self._change(message_id, delivered=True)

    def mark_read(self, message_id: str) -> None:
        self._change(message_id, read=True)

    def edit(self, message_id: str, content: str) -> None:
        self._change(message_id, content=content, edited_at=self.clock.now().isoformat())

    def open_session(self, session_id: str = SESSION, owner: str = "u_alice") -> None:
        """Create a session as its owner would."""
        self.sessions[session_id] = Session(session_id, owner, None, self.clock.now().isoformat())

    def close_session(self, session_id: str, closed: bool = True) -> None:
        self.sessions[session_id].closed = closed

    # looking at it

    def stored(self, session_id: str = SESSION) -> list[StoredMessage]:
        """The session's messages in storage order."""
        return sorted((m for m in self.messages.values() if m.session_id == session_id), key=lambda m: m.created_seq)

    def contents(self, session_id: str = SESSION) -> list[str]:
        return [m.content for m in self.stored(session_id)]

    def seen(self, route: str) -> list[Seen]:
        return [r for r in self.requests if r.route == route]

    # internals

    def _session_for(self, session_id: str, user_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            session = Session(session_id, user_id, None, self.clock.now().isoformat())
            self.sessions[session_id] = session
        return session

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _change(self, message_id: str, **changes: Any) -> None:
        message = self.messages[message_id]
        session = self.sessions[message.session_id]
        for key, value in changes.items():
            setattr(message, key, value)
        session.head += 1
        message.change_seq = session.head
        self._notify()

    def _store(self, session: Session, body: dict[str, Any], user_id: str) -> StoredMessage:
        session.head += 1
        message = StoredMessage(
            id=f"msg_{next(self._ids):06d}",
            session_id=session.id,
            type=body.get("type") or "user",
            content=body["content"],
            user_id=user_id,
            timestamp=self.clock.now().isoformat().replace("+00:00", "Z"),
            client_message_id=body.get("client_message_id"),
            metadata=body.get("metadata"),
            created_seq=session.head,
            change_seq=session.head,
        )
        self.messages[message.id] = message
        if message.client_message_id:
            session.idempotency[(user_id, message.client_message_id)] = message.id
        self._notify()
        return message

    def _take_fault(self, route: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.route in (route, "*"):
                fault.times -= 1
                return fault
        return None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        applied: list[Fault] = []
        response = await self._handle(request, applied)
        for fault in applied:
            if fault.kind == "slow":
                await self.clock.wait(fault.delay)
        return response

    async def _handle(self, request: httpx.Request, applied: list[Fault]) -> httpx.Response:
        path = request.url.path
        method = request.method
        route = {
            ("POST", f"{API}/messages"): "send",
            ("POST", f"{API}/messages/batch"): "batch",
            ("GET", f"{API}/messages"): "poll",
            ("POST", f"{API}/sessions"): "sessions",
            ("GET", "/api/v1/admin/users/me"): "me",
        }.get((method, path), "other")
        if method == "GET" and path.startswith(f"{API}/sessions/"):
            route = "session"
        body = json.loads(request.content) if request.content else None
        self.requests.append(
            Seen(method, route, dict(request.url.params), body, dict(request.headers), self.clock.monotonic())
        )
        if self.down:
            raise httpx.ConnectError("connection refused (server down)", request=request)
        fault = self._take_fault(route)
        if fault is not None:
            applied.append(fault)
        if fault is not None and fault.kind == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if fault is not None and fault.kind == "read_error":
            raise httpx.ReadError("connection reset", request=request)
        if fault is not None and fault.kind == "status":
            if fault.status == 500:
                return httpx.Response(500, text="Internal Server Error")
            return _error(
                fault.status, fault.error or f"refused with {fault.status}", fault.code or "refused", fault.retry_after
            )
        user = self.users.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if user is None:
            return _error(401, "missing or unknown token", "unauthorized")
        if route == "poll":
            self.gets_in_flight += 1
            self.max_gets_in_flight = max(self.max_gets_in_flight, self.gets_in_flight)
            try:
                return await self._poll(request, user)
            finally:
                self.gets_in_flight -= 1
        if route == "send":
            status, result = self._send_one(body, user)
            if fault is not None and fault.kind == "lost_ack":
                raise httpx.ReadError("connection lost before the answer", request=request)
            return httpx.Response(status, json=result)
        if route == "batch":
            items = body["messages"]
            if len(items) > self.batch_limit:
                return _error(413, f"at most {self.batch_limit} messages per batch", "batch_too_large")
            results = [self._send_one(item, user)[1] for item in items]
            if fault is not None and fault.kind == "lost_ack":
                raise httpx.ReadError("connection lost before the answer", request=request)
            return httpx.Response(200, json={"success": True, "results": results})
        if route == "sessions":
            session_id = (body or {}).get("id") or f"s_{next(self._ids)}"
            if session_id in self.sessions:
                return _error(409, "that session exists", "session_exists")
            session = Session(session_id, user["id"], (body or {}).get("client_name"), self.clock.now().isoformat())
            self.sessions[session_id] = session
            return httpx.Response(201, json={"success": True, "session": self._session_api(session)})
        if route == "me":
            return httpx.Response(200, json={"success": True, "user": user})
        if route == "session":
            found = self.sessions.get(path.rsplit("/", 1)[-1])
            if found is None or (found.owner != user["id"] and user["role"] == "member"):
                return _error(404, "no such session", "session_not_found")
            return httpx.Response(200, json={"success": True, "session": self._session_api(found)})
        return _error(404, "no such endpoint", "not_found")

    def _session_api(self, session: Session) -> dict[str, Any]:
        return {
            "id": session.id,
            "client_name": session.client_name,
            "created_at": session.created_at,
            "last_activity": session.created_at,
            "status": "closed" if session.closed else "active",
            "message_count": len(self.stored(session.id)),
            "last_message_id": None,
        }

    def _send_one(self, body: dict[str, Any], user: dict[str, str]) -> tuple[int, dict[str, Any]]:
        def refuse(status: int, error: str, code: str) -> tuple[int, dict[str, Any]]:
            return status, {"success": False, "error": error, "code": code}

        content = body.get("content")
        if not isinstance(content, str) or not content:
            return refuse(400, "content must be a non-empty string", "bad_request")
        if len(content.encode()) > self.max_content:
            return refuse(413, f"content is larger than {self.max_content} bytes", "content_too_large")
        if body.get("type", "user") != "user" and user["role"] == "member":
            return refuse(403, "a member can post only user messages", "type_not_allowed")
        session = self.sessions.get(body["session_id"])
        if session is not None and session.owner != user["id"] and user["role"] == "member":
            return refuse(404, "no such session", "session_not_found")
        session = self._session_for(body["session_id"], user["id"])
        cmid = body.get("client_message_id")
        if cmid and (user["id"], cmid) in session.idempotency:
            first = self.messages[session.idempotency[(user["id"], cmid)]]
            return 200, {"success": True, "message_id": first.id, "message": first.api()}
        if session.closed:
            return refuse(409, "the session is closed", "session_closed")
        message = self._store(session, body, user["id"])
        answer = {"success": True, "message_id": message.id, "message": message.api()}
        if self.auto_deliver:
            self.mark_delivered(message.id)
        return 201, answer

    def _position(self, session: Session, since: str | None) -> int | httpx.Response:
        if not since:
            return 0
        if since.startswith("msg_"):
            message = self.messages.get(since)
            if message is None or message.session_id != session.id:
                return _error(400, "`since` names no message of this session", "unknown_message")
            return message.created_seq
        if not since.startswith("c_") or not since[2:].isdigit():
            return _error(400, "`since` is not a cursor", "bad_cursor")
        after = int(since[2:])
        if after > session.head:
            return _error(400, "`since` is ahead of the session", "cursor_ahead")
        return after

    def _page(self, session: Session, after: int, limit: int) -> tuple[list[StoredMessage], bool, int]:
        changed = sorted(
            (m for m in self.messages.values() if m.session_id == session.id and m.change_seq > after),
            key=lambda m: m.change_seq,
        )
        page = changed[:limit]
        upto = page[-1].change_seq if page else after
        return page, len(changed) > limit, upto

    async def _poll(self, request: httpx.Request, user: dict[str, str]) -> httpx.Response:
        params = request.url.params
        session = self.sessions.get(params.get("session_id", ""))
        if session is None or (session.owner != user["id"] and user["role"] == "member"):
            return _error(404, "no such session", "session_not_found")
        if self.replay_pages and self._last_page is not None:
            self.replay_pages -= 1
            return httpx.Response(200, json=self._last_page)
        position = self._position(session, params.get("since"))
        if isinstance(position, httpx.Response):
            return position
        after = position
        limit = int(params.get("limit", "100"))
        wait = float(params.get("wait", "0"))
        if self.max_wait is not None and wait > self.max_wait:
            refused = _error(400, f"`wait` is at most {self.max_wait:g} seconds", "wait_too_long")
            if not self.says_max_wait:
                return refused
            return httpx.Response(400, json={**json.loads(refused.content), "max_wait": self.max_wait})
        etag = f'"{session.id}:{after}:{limit}:{session.head}"'
        if not wait and request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        deadline = self.clock.monotonic() + wait
        page, has_more, upto = self._page(session, after, limit)
        while not page and self.clock.monotonic() < deadline:
            changed = self._changed
            timer = asyncio.ensure_future(self.clock.wait(deadline - self.clock.monotonic()))
            woken = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({timer, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (timer, woken):
                    task.cancel()
                await asyncio.gather(timer, woken, return_exceptions=True)
            page, has_more, upto = self._page(session, after, limit)
        messages = [m.api() for m in page]
        if self.repeat_old:
            older = [m.api() for m in self.stored(session.id) if m.change_seq <= after]
            messages = older + messages
        body = {"success": True, "messages": messages, "has_more": has_more, "cursor": f"c_{upto}"}
        self._last_page = body
        etag = f'"{session.id}:{after}:{limit}:{session.head}"'
        return httpx.Response(200, json=body, headers={"ETag": etag})


# fixtures


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> FakeServer:
    """The fake server, with session ``s1`` of user ``u_alice`` (the services' default) already open."""
    fake = FakeServer(clock)
    fake.open_session()
    return fake


@pytest.fixture
def state_path(tmp_path: Path) -> str:
    return str(tmp_path / "client-state.json")


ServiceFactory = Callable[..., PollingChatService]


@pytest.fixture
async def make_service(clock: FakeClock, server: FakeServer) -> AsyncIterator[ServiceFactory]:
    """``make_service(**kwargs)``: a ``PollingChatService`` on the fake server, fake clock and a seeded rng."""
    made: list[PollingChatService] = []

    def make(
        *,
        strategy: PollingStrategy | None = None,
        seed: int = SEED,
        session_id: str = SESSION,
        token: str = TOKEN,
        **kwargs: Any,
    ) -> PollingChatService:
        kwargs.setdefault("transport", server.transport)
        service = PollingChatService(
            BASE_URL,
            token,
            session_id,
            strategy=strategy,
            clock=clock,
            rng=random.Random(seed),
            **kwargs,
        )
        made.append(service)
        return service

    yield make
    crashed = []
    for service in made:
        # A poller or sender that died with an exception would otherwise go unnoticed.
        for task in (service._poller, service._sender):
            if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
                crashed.append(task.exception())
        await service.aclose()
    assert not crashed, crashed


class Recorder:
    """Everything a service hands to the application through its callbacks, with the fake time."""

    def __init__(self, service: PollingChatService, clock: FakeClock) -> None:
        self.clock = clock
        self.log: list[tuple[float, MessageEvent | ConnectionStatus]] = []
        service.on_message(self._add)
        service.on_status(self._add)

    def _add(self, item: MessageEvent | ConnectionStatus) -> None:
        self.log.append((self.clock.monotonic(), item))

    @property
    def events(self) -> list[MessageEvent]:
        return [item for _, item in self.log if isinstance(item, MessageEvent)]

    @property
    def statuses(self) -> list[ConnectionStatus]:
        return [item for _, item in self.log if isinstance(item, ConnectionStatus)]

    def states(self) -> list[str]:
        """Connection states in order, repeats collapsed."""
        out: list[str] = []
        for status in self.statuses:
            if not out or out[-1] != status.state:
                out.append(status.state)
        return out

    def new_times(self) -> list[float]:
        return [at for at, item in self.log if isinstance(item, MessageEvent) and item.kind == "new"]

    def new_contents(self) -> list[str]:
        return [e.message.content for e in self.events if e.kind == "new"]

    def of(self, client_message_id: str) -> list[tuple[str, str]]:
        """(kind, status) of every event about one of our own messages."""
        return [(e.kind, e.message.status) for e in self.events if e.message.client_message_id == client_message_id]


def short(**overrides: Any) -> PollingStrategy:
    """A short-polling strategy (the seed's intervals unless overridden)."""
    return PollingStrategy(mode="short", **overrides)


def within_jitter(value: float, nominal: float, jitter: float = 0.2) -> bool:
    """Whether ``value`` is ``nominal`` give or take ``jitter`` (a fraction), allowing float rounding."""
    return nominal * (1 - jitter) - 1e-9 <= value <= nominal * (1 + jitter) + 1e-9
