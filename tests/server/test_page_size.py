"""Poll answers are bounded in bytes, and large ones are built off the event loop."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from typing import Any

import pytest

from pollchat.server import compression, messages_endpoint
from pollchat.server.app import create_app
from pollchat.settings import Settings
from tests.conftest import running

CONTROL = "\x01" * 32 * 1024  # 32 KiB of text that JSON spells six bytes a character


async def test_page_stops_early_at_max_page_bytes(make_settings: Callable[..., Settings]) -> None:
    """A poll with ``limit=500`` over 32 KiB messages of control characters was a 98 MB page."""
    settings = make_settings(max_page_bytes=256 * 1024)
    async with running(create_app(settings)) as api:
        alice = await api.user("alice")
        for i in range(6):
            assert (await api.send(alice, "s1", f"{i}{CONTROL[1:]}")).status_code == 201
        seen: list[str] = []
        since = None
        while True:
            r = await api.poll(alice, "s1", since=since, limit=500)
            assert r.status_code == 200
            assert len(r.content) <= settings.max_page_bytes
            body = r.json()
            assert body["messages"], "every page makes progress"
            seen += [m["content"][0] for m in body["messages"]]
            since = body["cursor"]
            if not body["has_more"]:
                break
        assert seen == [str(i) for i in range(6)]  # all of them, once, in order


async def test_page_of_one_message_larger_than_the_bound_is_still_answered(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(create_app(make_settings(max_page_bytes=64 * 1024))) as api:
        alice = await api.user("alice")
        assert (await api.send(alice, "s1", CONTROL)).status_code == 201
        r = await api.poll(alice, "s1")
        assert [m["content"] for m in r.json()["messages"]] == [CONTROL] and r.json()["has_more"] is False


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_large_pages_are_built_on_a_worker_thread(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    """Large bodies were built and gzipped on the event loop: each blocked every other request."""
    threads: list[int] = []
    compress = gzip.compress

    def spy(data: bytes, *args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.get_ident())
        return compress(data, *args, **kwargs)

    monkeypatch.setattr(compression.gzip, "compress", spy)
    async with running(create_app(make_settings())) as api:
        alice = await api.user("alice")
        for _ in range(4):
            assert (await api.send(alice, "s1", "x" * 30_000)).status_code == 201
        built: list[int] = []
        model = messages_endpoint.GetMessagesResponse
        dump = model.model_dump_json

        def recording(self: Any, **kwargs: Any) -> str:
            built.append(threading.get_ident())
            return dump(self, **kwargs)

        monkeypatch.setattr(model, "model_dump_json", recording)
        headers = {"Accept-Encoding": "gzip" if encoding == "gzip" else "identity"}
        r = await api.poll(alice, "s1", headers=headers)
        assert r.status_code == 200 and len(r.json()["messages"]) == 4
        loop_thread = threading.get_ident()
        assert built and loop_thread not in built
        if encoding == "gzip":
            assert r.headers["content-encoding"] == "gzip"
            assert threads and loop_thread not in threads
