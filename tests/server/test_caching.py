"""ETags and 304 on short polls; gzip for large answers."""

from __future__ import annotations

import gzip
import json

from tests.conftest import API, Api
from tests.server.support import assert_error


async def test_poll_answers_carry_an_etag_and_no_shared_caching(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    r = await api.poll(alice, "s1")
    assert r.status_code == 200
    assert r.headers["etag"].startswith('"') and r.headers["etag"].endswith('"')
    assert "no-cache" in r.headers["cache-control"] and "private" in r.headers["cache-control"]


async def test_poll_with_matching_if_none_match_is_304_without_body(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    _, cursor = await api.drain(alice, "s1")
    first = await api.poll(alice, "s1", since=cursor)
    etag = first.headers["etag"]
    again = await api.poll(alice, "s1", since=cursor, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag


async def test_poll_304_also_for_a_page_with_messages(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    first = await api.poll(alice, "s1")
    assert len(first.json()["messages"]) == 1
    again = await api.poll(alice, "s1", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


async def test_poll_etag_among_several_in_if_none_match_matches(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    etag = (await api.poll(alice, "s1")).headers["etag"]
    r = await api.poll(alice, "s1", headers={"If-None-Match": f'"other", {etag} , "more"'})
    assert r.status_code == 304


async def test_poll_new_message_after_an_etag_answers_200(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    _, cursor = await api.drain(alice, "s1")
    etag = (await api.poll(alice, "s1", since=cursor)).headers["etag"]
    await api.send(alice, "s1", "new")
    r = await api.poll(alice, "s1", since=cursor, headers={"If-None-Match": etag})
    assert r.status_code == 200
    assert [m["content"] for m in r.json()["messages"]] == ["new"]
    assert r.headers["etag"] != etag


async def test_poll_update_of_a_message_after_an_etag_answers_200(api: Api) -> None:
    alice = await api.user("alice")
    sent = (await api.send(alice, "s1", "hi")).json()["message_id"]
    first = await api.poll(alice, "s1")
    r = await api.http.patch(f"{API}/messages/{sent}", json={"content": "changed"}, headers=api.auth(alice))
    assert r.status_code == 200
    again = await api.poll(alice, "s1", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 200
    assert [m["content"] for m in again.json()["messages"]] == ["changed"]


async def test_poll_etag_of_another_position_or_limit_does_not_match(api: Api) -> None:
    alice = await api.user("alice")
    for i in range(3):
        await api.send(alice, "s1", f"m{i}")
    etag = (await api.poll(alice, "s1", limit=2)).headers["etag"]
    assert (await api.poll(alice, "s1", limit=3, headers={"If-None-Match": etag})).status_code == 200
    _, cursor = await api.drain(alice, "s1")
    assert (await api.poll(alice, "s1", since=cursor, headers={"If-None-Match": etag})).status_code == 200
    assert (await api.poll(alice, "s1", headers={"If-None-Match": '"garbage"'})).status_code == 200


async def test_poll_etag_of_an_operator_covers_the_deliveries_it_caused(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "hi")
    first = await api.poll(op, "s1")
    assert [m["status"] for m in first.json()["messages"]] == ["delivered"]
    again = await api.poll(op, "s1", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


async def test_poll_if_none_match_is_ignored_by_a_long_poll_with_news(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    first = await api.poll(alice, "s1")
    r = await api.poll(alice, "s1", wait=1, headers={"If-None-Match": first.headers["etag"]})
    assert r.status_code == 200
    assert [m["content"] for m in r.json()["messages"]] == ["hi"]


async def test_poll_large_answer_is_gzipped_for_clients_that_accept_it(api: Api) -> None:
    alice = await api.user("alice")
    for i in range(20):
        await api.send(alice, "s1", f"message {i} " + "x" * 100)
    r = await api.poll(alice, "s1", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in r.headers.get("vary", "").lower()
    assert len(r.json()["messages"]) == 20
    assert "etag" in r.headers


async def test_poll_gzipped_bytes_decompress_to_the_answer(api: Api) -> None:
    alice = await api.user("alice")
    for i in range(20):
        await api.send(alice, "s1", f"message {i} " + "x" * 100)
    async with api.http.stream(
        "GET", f"{API}/messages", params={"session_id": "s1"}, headers={**api.auth(alice), "Accept-Encoding": "gzip"}
    ) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    assert r.headers["content-encoding"] == "gzip"
    body = json.loads(gzip.decompress(raw))
    assert len(body["messages"]) == 20
    assert len(raw) < len(json.dumps(body))


async def test_poll_large_answer_is_plain_without_accept_encoding(api: Api) -> None:
    alice = await api.user("alice")
    for i in range(20):
        await api.send(alice, "s1", f"message {i} " + "x" * 100)
    r = await api.poll(alice, "s1", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers
    assert len(r.json()["messages"]) == 20


async def test_poll_small_answer_is_not_gzipped(api: Api) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    r = await api.poll(alice, "s1", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert len(r.content) < 1024
    assert "content-encoding" not in r.headers


async def test_poll_pages_of_sessions_whose_unkeyed_tags_collide_stay_apart(api: Api) -> None:
    """Page bodies were cached by ETag alone, and the ETag named the session by a 32-bit hash:
    ``iso-23258`` and ``iso-87581`` share it, so bob polling his own session got alice's page."""
    alice, bob = await api.user("alice"), await api.user("bob")
    assert (await api.send(alice, "iso-23258", "alice's secret")).status_code == 201
    assert (await api.send(bob, "iso-87581", "bob's note")).status_code == 201
    mine = await api.poll(alice, "iso-23258")
    theirs = await api.poll(bob, "iso-87581")
    assert [m["content"] for m in mine.json()["messages"]] == ["alice's secret"]
    assert [m["content"] for m in theirs.json()["messages"]] == ["bob's note"]
    assert mine.headers["etag"] != theirs.headers["etag"]
    # Nor does one session's cursor or ETag mean anything in the other.
    assert_error(await api.poll(bob, "iso-87581", since=mine.json()["cursor"]), 400, "cursor_wrong_session")
    r = await api.poll(bob, "iso-87581", headers={"If-None-Match": mine.headers["etag"]})
    assert r.status_code == 200 and [m["content"] for m in r.json()["messages"]] == ["bob's note"]


async def test_poll_body_cache_is_bounded_in_bytes(api: Api) -> None:
    alice = await api.user("alice")
    bodies = api.app.state.services.bodies
    for i in range(40):
        assert (await api.send(alice, f"big-{i}", "x" * 30_000)).status_code == 201
        assert (await api.poll(alice, f"big-{i}")).status_code == 200
    assert 0 < bodies.size <= 32 * 1024 * 1024
    assert len(bodies) <= 1024
