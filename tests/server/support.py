"""Helpers shared by the API tests: the error shape, metrics, parked long polls."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_TOKEN, API, Api


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is a refusal with ``status`` in the one error shape (and ``code`` when given)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["success"] is False, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["code"], str) and body["code"], body
    if code is not None:
        assert body["code"] == code, body
    return body


async def all_sessions(api: Api) -> list[dict[str, Any]]:
    """Every session, as the admin sees them."""
    r = await api.http.get(f"{API}/sessions", headers=api.auth(ADMIN_TOKEN))
    assert r.status_code == 200, r.text
    sessions: list[dict[str, Any]] = r.json()["sessions"]
    return sessions


async def all_messages(api: Api, session_id: str) -> list[dict[str, Any]]:
    """Every message of a session in its latest state, read by the admin.

    The admin is an operator: its fetch marks the owner's messages delivered, so use this only
    where delivery does not matter.
    """
    messages, _ = await api.drain(ADMIN_TOKEN, session_id)
    return messages


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus exposition ``text`` (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def wait_parked(api: Api, count: int, timeout: float = 5.0) -> None:
    """Wait until ``count`` long polls are parked on the app's notifier."""
    notifier = api.app.state.services.notifier
    async with asyncio.timeout(timeout):
        while notifier.parked < count:
            await asyncio.sleep(0.005)


async def create_session(api: Api, token: str, session_id: str, **extra: Any) -> dict[str, Any]:
    """Create a session through the API and return it."""
    r = await api.http.post(f"{API}/sessions", json={"id": session_id, **extra}, headers=api.auth(token))
    assert r.status_code == 201, r.text
    session: dict[str, Any] = r.json()["session"]
    return session


async def close_session(api: Api, token: str, session_id: str, status: str = "closed") -> httpx.Response:
    """PATCH a session's status."""
    return await api.http.patch(f"{API}/sessions/{session_id}", json={"status": status}, headers=api.auth(token))
