"""Slow clients on a real server: headers and bodies that never finish cannot hold it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, API
from tests.integration.conftest import ServerFactory, auth

pytestmark = pytest.mark.integration

SLOW = {"POLLCHAT_HEADER_TIMEOUT": "1", "POLLCHAT_BODY_TIMEOUT": "1"}


async def closed_by_server(reader: asyncio.StreamReader, *, within: float) -> bool:
    """Whether the server closes the connection (EOF) before ``within`` seconds pass."""
    try:
        async with asyncio.timeout(within):
            await reader.read()
            return True
    except TimeoutError:
        return False


async def test_connection_that_sends_nothing_is_closed(servers: ServerFactory) -> None:
    """A connection sending nothing stayed open for ever; 19,990 of them made health checks fail."""
    server = await servers.start(env=SLOW)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await closed_by_server(reader, within=15)
    finally:
        writer.close()


async def test_headers_sent_a_byte_at_a_time_are_cut_off(servers: ServerFactory) -> None:
    server = await servers.start(env=SLOW)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = f"GET {API}/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode()
    answered = b""
    try:
        for byte in request:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
            if reader.at_eof():
                break
        answered = await asyncio.wait_for(reader.read(), timeout=15)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
    assert not answered.startswith(b"HTTP/1.1 200")


async def test_half_open_connections_do_not_stop_the_server(servers: ServerFactory) -> None:
    server = await servers.start(env=SLOW)
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(200)]
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=auth(ADMIN_TOKEN), timeout=10) as http:
            assert (await http.get("/api/v1/health")).status_code == 200
            assert (await http.get(f"{API}/sessions")).status_code == 200
        closed = await asyncio.gather(*(closed_by_server(reader, within=15) for reader, _ in idle))
        assert all(closed)
    finally:
        for _, writer in idle:
            writer.close()


async def test_body_that_never_finishes_gets_408(servers: ServerFactory) -> None:
    server = await servers.start(env=SLOW)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"POST {API}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"content": '
    )
    try:
        writer.write(head.encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=15)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"code":"body_timeout"' in answer
