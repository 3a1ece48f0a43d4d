"""Fixtures of the scale-out suite: pollchat instances on a fresh PostgreSQL database behind nginx.

The processes themselves are made by ``tests.scaleout.cluster`` (shared with ``bench/scaleout.py``).
A missing PostgreSQL, nginx or Redis skips a test, or fails it under ``POLLCHAT_REQUIRE_ALL=1``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing
from tests.scaleout.cluster import Cluster, missing_services

MakeCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[MakeCluster]:
    """``await make_cluster(instances=3, env={...}, args=[...], nginx=True, redis=False, pg_restart=False)``.

    By default three ``pollchat serve`` instances on a fresh database, behind nginx running
    deploy/nginx.conf (round-robin); ``env`` and ``args`` go to every instance. Started and
    healthy on return; stopped, and its database dropped, after the test. The instances' logs
    (and nginx's error log) are printed at teardown: pytest shows them when the test fails.
    """
    clusters: list[Cluster] = []

    async def make(*, redis: bool = False, pg_restart: bool = False, **options: Any) -> Cluster:
        reason = await missing_services(nginx=options.get("nginx", True), redis=redis, pg_restart=pg_restart)
        if reason is not None:
            missing(reason)
        workdir = tmp_path / f"cluster{len(clusters) + 1}"
        workdir.mkdir()
        cluster = Cluster(workdir, **options)
        await cluster.start()
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        failures: list[Exception] = []
        for cluster in reversed(clusters):
            logs = cluster.logs()
            try:
                await cluster.close()
            except Exception as exc:
                failures.append(exc)
            print(logs)
        if failures:
            raise failures[0]
