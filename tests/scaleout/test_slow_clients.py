"""The shipped deploy/nginx.conf in front absorbs a flood of slow clients."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.scaleout.conftest import MakeCluster

pytestmark = pytest.mark.integration

FLOOD = 1500


async def test_nginx_absorbs_a_flood_of_half_sent_requests(make_cluster: MakeCluster) -> None:
    """19,990 half-open requests straight to the server made its health checks fail."""
    cluster = await make_cluster()
    assert cluster.nginx is not None
    flood: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(FLOOD):
            reader, writer = await asyncio.open_connection("127.0.0.1", cluster.nginx.port)
            writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never more
            flood.append((reader, writer))
        await asyncio.gather(*(writer.drain() for _, writer in flood))
        async with httpx.AsyncClient(base_url=cluster.url, headers=cluster.headers, timeout=10) as http:
            assert (await http.get("/api/v1/health")).status_code == 200
            assert (await http.get("/api/v1/admin/chat/sessions")).status_code == 200
        # None of the flood reached an instance: nginx holds half-sent requests itself.
        served = 0.0
        for instance in cluster.instances:
            metrics = httpx.get(f"http://127.0.0.1:{instance.port}/metrics", timeout=10).text
            served += sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("pollchat_http_requests_total{") and 'route="/api/v1/health"' in line
            )
        assert served <= 2 * len(cluster.instances)  # their start-up checks, and the one above
    finally:
        for _, writer in flood:
            writer.close()
