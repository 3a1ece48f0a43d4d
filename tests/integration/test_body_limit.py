"""Over-limit bodies on a real server: the client reads its 413, whatever the body's size."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, API
from tests.servers import ServerFactory, auth

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("size", [64 * 1024, 8 * 1024 * 1024])
async def test_over_limit_body_is_answered_413_not_reset(servers: ServerFactory, size: int) -> None:
    """The limit refused by Content-Length and closed the connection while the client was still
    sending: the client saw a reset, which client libraries retry as a network fault for ever."""
    server = await servers.start(env={"POLLCHAT_MAX_BODY_BYTES": "4096"})
    body = b'{"content": "' + b"x" * size + b'", "session_id": "s1"}'
    async with httpx.AsyncClient(base_url=server.url, headers=auth(ADMIN_TOKEN), timeout=30.0) as http:
        for _ in range(3):  # and the server keeps answering afterwards
            r = await http.post(f"{API}/messages", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 413, r.text
            assert r.json()["code"] == "body_too_large"
        r = await http.get(f"{API}/messages", params={"session_id": "s1"})
        assert r.status_code == 404  # nothing was stored
