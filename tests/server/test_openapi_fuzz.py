"""Schemathesis over the app's own OpenAPI description: no input makes any operation answer 5xx.

Every operation is called as the admin, with inputs generated from its schema (valid and
invalid ones), against an in-process app whose lifespan schemathesis starts and stops. A few
sessions with short ids are seeded so generated ids sometimes name a real session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from pollchat.clock import SystemClock
from pollchat.domain.records import NewMessage
from pollchat.server.app import create_app
from pollchat.server.auth import hash_token
from pollchat.settings import Settings
from pollchat.storage import create_storage
from tests.conftest import ADMIN_TOKEN, running

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SEEDED_SESSIONS = ("0", "a", "A", "-", "s1")


async def _seed(url: str) -> None:
    storage = create_storage(url)
    await storage.open()
    try:
        now = SystemClock().now()
        admin = await storage.put_user(name="admin", role="admin", token_hash=hash_token(ADMIN_TOKEN), now=now)
        items = [NewMessage(session_id=sid, type="user", content="seed") for sid in SEEDED_SESSIONS]
        await storage.append(items, author=admin, now=now)
    finally:
        await storage.close()


def _description() -> dict[str, Any]:
    # The description does not depend on settings or storage; nothing is opened here.
    app = create_app(Settings(database_url="sqlite:///unused.db", assistant="none", admin_token=None))
    return app.openapi()


schema = schemathesis.openapi.from_dict(_description())


@pytest.fixture
def fuzz_app(make_settings: Callable[..., Settings]) -> FastAPI:
    """A fresh app per operation, on a database with a few seeded sessions."""
    # A short max_wait: a generated long poll on a seeded session must not hold the run for a minute.
    app_settings = make_settings(max_wait=0.2)
    asyncio.run(_seed(app_settings.database_url))
    return create_app(app_settings)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_a_server_error(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    # schemathesis starts the app's lifespan on the first call and ends it when the test ends.
    response = case.call(app=fuzz_app, headers=AUTH)
    case.validate_response(response, checks=[not_a_server_error])


async def test_poll_operation_documents_304_and_bearer_auth(make_settings: Callable[..., Settings]) -> None:
    async with running(create_app(make_settings())) as api:
        response = await api.http.get("/openapi.json")
    assert response.status_code == 200
    description = response.json()
    poll = description["paths"]["/api/v1/admin/chat/messages"]["get"]
    assert "304" in poll["responses"]
    assert "content" not in poll["responses"]["304"]  # a 304 has no body
    schemes = description["components"]["securitySchemes"]
    bearer = [name for name, scheme in schemes.items() if (scheme["type"], scheme.get("scheme")) == ("http", "bearer")]
    assert bearer
    assert any(name in requirement for requirement in poll["security"] for name in bearer)
    # Every operation but health needs the token; none documents FastAPI's unused 422.
    for path, operations in description["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
            if path != "/api/v1/health":
                assert operation.get("security"), (method, path)
