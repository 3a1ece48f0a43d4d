"""Bad input: every refusal is a 4xx in the error shape, and a refusal changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pollchat.settings import Settings
from tests.conftest import ADMIN_TOKEN, API, Api
from tests.server.support import all_sessions, assert_error


@dataclass
class Seeded:
    """An app with alice's session ``s1`` holding one message."""

    api: Api
    alice: str
    message_id: str

    async def assert_unchanged(self) -> None:
        assert [s["id"] for s in await all_sessions(self.api)] == ["s1"]
        messages, _ = await self.api.drain(self.alice, "s1")
        assert [(m["id"], m["content"]) for m in messages] == [(self.message_id, "seed")]
        session = (await self.api.http.get(f"{API}/sessions/s1", headers=self.api.auth(self.alice))).json()
        assert session["session"]["message_count"] == 1
        assert session["session"]["status"] == "active"


@pytest.fixture
async def seeded(api: Api) -> AsyncIterator[Seeded]:
    alice = await api.user("alice")
    r = await api.send(alice, "s1", "seed")
    assert r.status_code == 201
    yield Seeded(api, alice, r.json()["message_id"])


def raw_json(api: Api, token: str) -> dict[str, str]:
    return {**api.auth(token), "Content-Type": "application/json"}


OK = {"content": "hello", "session_id": "s1"}

BAD_SENDS: list[tuple[str, Any, int]] = [
    ("content too large", {**OK, "content": "x" * 32769}, 413),
    ("content too large multibyte", {**OK, "content": "€" * 11000}, 413),
    ("content empty", {**OK, "content": ""}, 400),
    ("content whitespace", {**OK, "content": " \t\n\r "}, 400),
    ("content missing", {"session_id": "s1"}, 400),
    ("content number", {**OK, "content": 5}, 400),
    ("content float", {**OK, "content": 1.5}, 400),
    ("content bool", {**OK, "content": True}, 400),
    ("content object", {**OK, "content": {"text": "hi"}}, 400),
    ("content list", {**OK, "content": ["hi"]}, 400),
    ("content null", {**OK, "content": None}, 400),
    ("content with NUL", {**OK, "content": "nul\x00byte"}, 400),
    ("session_id missing", {"content": "hi"}, 400),
    ("session_id empty", {**OK, "session_id": ""}, 400),
    ("session_id space", {**OK, "session_id": "s 1"}, 400),
    ("session_id slash", {**OK, "session_id": "s/1"}, 400),
    ("session_id unicode", {**OK, "session_id": "séance"}, 400),
    ("session_id newline", {**OK, "session_id": "s1\n"}, 400),
    ("session_id too long", {**OK, "session_id": "s" * 129}, 400),
    ("session_id number", {**OK, "session_id": 1}, 400),
    ("client_message_id too long", {**OK, "client_message_id": "k" * 129}, 400),
    ("client_message_id empty", {**OK, "client_message_id": ""}, 400),
    ("client_message_id number", {**OK, "client_message_id": 7}, 400),
    ("client_message_id with NUL", {**OK, "client_message_id": "k\x00"}, 400),
    ("client_name too long", {**OK, "client_name": "n" * 201}, 400),
    ("client_name number", {**OK, "client_name": 3}, 400),
    ("client_name with NUL", {**OK, "client_name": "\x00"}, 400),
    ("type unknown", {**OK, "type": "system"}, 400),
    ("type number", {**OK, "type": 1}, 400),
    ("type null", {**OK, "type": None}, 400),
    ("metadata list", {**OK, "metadata": [1, 2]}, 400),
    ("metadata string", {**OK, "metadata": "x"}, 400),
    ("metadata number", {**OK, "metadata": 1}, 400),
    ("metadata too large", {**OK, "metadata": {"k": "v" * 4096}}, 413),
    ("metadata too many keys", {**OK, "metadata": {f"key{i}": i for i in range(600)}}, 413),
    ("body list", [OK], 400),
    ("body string", "hello", 400),
    ("body number", 5, 400),
    ("body null", None, 400),
    ("body empty object", {}, 400),
]


@pytest.mark.parametrize(("body", "status"), [(b, s) for _, b, s in BAD_SENDS], ids=[n for n, _, _ in BAD_SENDS])
async def test_errors_bad_send_is_refused_and_stores_nothing(seeded: Seeded, body: Any, status: int) -> None:
    api = seeded.api
    r = await api.http.post(f"{API}/messages", json=body, headers=api.auth(seeded.alice))
    assert_error(r, status)
    await seeded.assert_unchanged()


async def test_errors_session_id_of_128_characters_is_accepted(seeded: Seeded) -> None:
    r = await seeded.api.send(seeded.alice, "s" * 128, "hi", client_message_id="k" * 128)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"content": "hi", "session_id": ',
        b'{"content": "hi" "session_id": "s1"}',
        b"{'content': 'hi', 'session_id': 's1'}",
        b'{"content": "hi", "session_id": "s1",}',
        b"",
        b"not json at all",
        b'{"content": "\\ud800", "session_id": "s1"}',
        b'{"content": "hi", "session_id": "s1", "metadata": {"k": "\\udfff"}}',
        b'{"content": "hi", "session_id": "s1", "metadata": {"x": NaN}}',
        b'{"content": "hi", "session_id": "s1", "metadata": {"x": Infinity}}',
        b'{"content": "hi", "session_id": "s1", "metadata": {"x": [1e999]}}',
        b'{"content": "hi", "session_id": "s1", "metadata": {"x": 1' + b"0" * 5000 + b"}}",
        b"\xff\xfe\x00garbage",
        b'{"content": "caf\xe9", "session_id": "s1"}',
    ],
    ids=[
        "truncated",
        "missing comma",
        "single quotes",
        "trailing comma",
        "empty body",
        "not json",
        "lone surrogate in content",
        "lone surrogate in metadata",
        "nan in metadata",
        "infinity in metadata",
        "overflowing float in metadata",
        "huge integer in metadata",
        "binary",
        "latin-1 bytes",
    ],
)
async def test_errors_malformed_json_is_400_and_stores_nothing(seeded: Seeded, raw: bytes) -> None:
    api = seeded.api
    r = await api.http.post(f"{API}/messages", content=raw, headers=raw_json(api, seeded.alice))
    assert_error(r, 400)
    await seeded.assert_unchanged()


@pytest.mark.parametrize("depth", [65, 200, 500, 900, 5000])
async def test_errors_deeply_nested_metadata_is_400_not_500(seeded: Seeded, depth: int) -> None:
    """Regression: metadata nested a few hundred levels deep overflowed the stack (500)."""
    api = seeded.api
    for nested in ('{"a":' * depth + "1" + "}" * depth, '{"a":' + "[" * depth + "]" * depth + "}"):
        raw = '{"content": "hi", "session_id": "s1", "metadata": ' + nested + "}"
        r = await api.http.post(f"{API}/messages", content=raw, headers=raw_json(api, seeded.alice))
        assert_error(r, 400)
    await seeded.assert_unchanged()


async def test_errors_moderately_nested_metadata_round_trips(seeded: Seeded) -> None:
    api = seeded.api
    metadata: dict[str, Any] = {"leaf": [1, 2.5, None, True, "x"]}
    for _ in range(30):
        metadata = {"a": metadata}
    r = await api.send(seeded.alice, "s2", "hi", metadata=metadata)
    assert r.status_code == 201, r.text
    messages, _ = await api.drain(seeded.alice, "s2")
    assert messages[0]["metadata"] == metadata


async def test_errors_wrong_content_type_is_400(seeded: Seeded) -> None:
    api = seeded.api
    r = await api.http.post(
        f"{API}/messages",
        content=b"content=hi&session_id=s1",
        headers={**api.auth(seeded.alice), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(r, 400)
    await seeded.assert_unchanged()


async def test_errors_body_over_max_body_bytes_is_413_unread(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    async with make_api(make_settings(max_body_bytes=2048)) as api:
        alice = await api.user("alice")
        r = await api.send(alice, "s1", "x" * 3000)
        assert_error(r, 413, "body_too_large")
        r = await api.http.post(
            f"{API}/messages/batch",
            json={"messages": [{"content": "x" * 100, "session_id": "s1"}] * 30},
            headers=api.auth(alice),
        )
        assert_error(r, 413, "body_too_large")
        assert (await api.send(alice, "s1", "x" * 1500)).status_code == 201
        messages, _ = await api.drain(alice, "s1")
        assert len(messages) == 1


async def test_errors_streamed_body_over_max_body_bytes_is_413(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    async with make_api(make_settings(max_body_bytes=2048)) as api:
        alice = await api.user("alice")

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"session_id": "s1", "content": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}'

        r = await api.http.post(f"{API}/messages", content=chunks(), headers=raw_json(api, alice))
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "body_too_large")
        assert await all_sessions(api) == []


async def test_errors_default_body_limit_refuses_huge_bodies(seeded: Seeded) -> None:
    api = seeded.api
    r = await api.send(seeded.alice, "s1", "x" * (4 * 1024 * 1024 + 1))
    assert_error(r, 413, "body_too_large")
    await seeded.assert_unchanged()


# polls

BAD_POLLS: list[tuple[str, dict[str, Any]]] = [
    ("limit zero", {"limit": 0}),
    ("limit negative", {"limit": -1}),
    ("limit huge", {"limit": 501}),
    ("limit enormous", {"limit": 10**30}),
    ("limit text", {"limit": "ten"}),
    ("limit float", {"limit": 1.5}),
    ("wait negative", {"wait": -1}),
    ("wait huge", {"wait": 61}),
    ("wait enormous", {"wait": 1e300}),
    ("wait text", {"wait": "soon"}),
    ("wait nan", {"wait": "nan"}),
    ("wait inf", {"wait": "inf"}),
    ("since too long", {"since": "c_" + "1" * 300}),
]


@pytest.mark.parametrize("params", [p for _, p in BAD_POLLS], ids=[n for n, _ in BAD_POLLS])
async def test_errors_bad_poll_parameters_are_400(seeded: Seeded, params: dict[str, Any]) -> None:
    api = seeded.api
    assert_error(await api.poll(seeded.alice, "s1", **params), 400)
    await seeded.assert_unchanged()


@pytest.mark.parametrize(
    "query",
    [{}, {"session_id": ""}, {"session_id": "a b"}, {"session_id": "s" * 129}, {"session_id": "ü"}],
    ids=["missing", "empty", "space", "too long", "unicode"],
)
async def test_errors_bad_poll_session_id_is_400(seeded: Seeded, query: dict[str, str]) -> None:
    api = seeded.api
    r = await api.http.get(f"{API}/messages", params=query, headers=api.auth(seeded.alice))
    assert_error(r, 400)


async def test_errors_wait_over_the_configured_maximum_is_400(
    make_api: Any, make_settings: Callable[..., Settings]
) -> None:
    async with make_api(make_settings(max_wait=10)) as api:
        alice = await api.user("alice")
        await api.send(alice, "s1", "hi")
        assert_error(await api.poll(alice, "s1", wait=11), 400, "wait_too_long")
        assert (await api.poll(alice, "s1", wait=10)).status_code == 200


async def test_errors_limit_bounds_are_inclusive(seeded: Seeded) -> None:
    api = seeded.api
    assert (await api.poll(seeded.alice, "s1", limit=1)).status_code == 200
    assert (await api.poll(seeded.alice, "s1", limit=500)).status_code == 200


# batches, edits, sessions, reads


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": "hi"},
        {"messages": [5]},
        {"messages": [{"content": 5, "session_id": "s1"}]},
        {"messages": [OK, {"content": "hi", "session_id": "bad id"}]},
        {"messages": [OK, {"session_id": "s1"}]},
        [OK],
    ],
    ids=["missing", "empty", "string", "number item", "wrong type", "bad session id", "missing content", "list"],
)
async def test_errors_bad_batch_is_400_and_stores_nothing(seeded: Seeded, body: Any) -> None:
    api = seeded.api
    r = await api.http.post(f"{API}/messages/batch", json=body, headers=api.auth(seeded.alice))
    assert_error(r, 400)
    await seeded.assert_unchanged()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"content": ""}, 400),
        ({"content": "   "}, 400),
        ({"content": 5}, 400),
        ({"content": None}, 400),
        ({"content": "x" * 32769}, 413),
    ],
    ids=["missing", "empty", "whitespace", "number", "null", "too large"],
)
async def test_errors_bad_edit_is_refused_and_changes_nothing(seeded: Seeded, body: Any, status: int) -> None:
    api = seeded.api
    r = await api.http.patch(f"{API}/messages/{seeded.message_id}", json=body, headers=api.auth(seeded.alice))
    assert_error(r, status)
    await seeded.assert_unchanged()


async def test_errors_edit_of_an_unknown_message_is_404(seeded: Seeded) -> None:
    api = seeded.api
    for message_id in ("msg_000000000000000000000000", "nonsense"):
        r = await api.http.patch(f"{API}/messages/{message_id}", json={"content": "x"}, headers=api.auth(seeded.alice))
        assert_error(r, 404, "message_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"id": "bad id"},
        {"id": ""},
        {"id": "s" * 129},
        {"id": 5},
        {"client_name": 5},
        {"client_name": "n" * 201},
        [],
        "s2",
    ],
    ids=["space", "empty", "too long", "number", "name number", "name too long", "list", "string"],
)
async def test_errors_bad_session_create_is_400_and_creates_nothing(seeded: Seeded, body: Any) -> None:
    api = seeded.api
    r = await api.http.post(f"{API}/sessions", json=body, headers=api.auth(seeded.alice))
    assert_error(r, 400)
    await seeded.assert_unchanged()


@pytest.mark.parametrize(
    "body",
    [{"status": "inactive"}, {"status": "deleted"}, {"status": 1}, {"client_name": 5}, [], "closed"],
    ids=["inactive", "unknown", "number", "name number", "list", "string"],
)
async def test_errors_bad_session_patch_is_400_and_changes_nothing(seeded: Seeded, body: Any) -> None:
    api = seeded.api
    r = await api.http.patch(f"{API}/sessions/s1", json=body, headers=api.auth(seeded.alice))
    assert_error(r, 400)
    await seeded.assert_unchanged()


@pytest.mark.parametrize("path", [f"{API}/sessions/bad%20id", f"{API}/sessions/{'s' * 129}"], ids=["space", "long"])
async def test_errors_bad_session_id_in_the_path_is_400(seeded: Seeded, path: str) -> None:
    api = seeded.api
    assert_error(await api.http.get(path, headers=api.auth(seeded.alice)), 400)
    assert_error(await api.http.patch(path, json={"status": "closed"}, headers=api.auth(seeded.alice)), 400)
    assert_error(await api.http.post(f"{path}/read", json={"up_to": "x"}, headers=api.auth(seeded.alice)), 400)


@pytest.mark.parametrize(
    "body",
    [{}, {"up_to": ""}, {"up_to": 5}, {"up_to": "m" * 65}, {"up_to": "msg_\x00"}],
    ids=["missing", "empty", "number", "too long", "NUL"],
)
async def test_errors_bad_read_is_400(seeded: Seeded, body: Any) -> None:
    api = seeded.api
    r = await api.http.post(f"{API}/sessions/s1/read", json=body, headers=api.auth(seeded.alice))
    assert_error(r, 400)


async def test_errors_unknown_route_and_method_answer_in_the_error_shape(seeded: Seeded) -> None:
    api = seeded.api
    assert_error(await api.http.get(f"{API}/nothing-here", headers=api.auth(seeded.alice)), 404)
    assert_error(await api.http.delete(f"{API}/messages", headers=api.auth(seeded.alice)), 405)
    await seeded.assert_unchanged()


async def test_errors_validation_is_400_never_422(seeded: Seeded) -> None:
    api = seeded.api
    r = await api.http.post(f"{API}/messages", json={"content": 1}, headers=api.auth(seeded.alice))
    assert r.status_code == 400
    body = assert_error(r, 400, "invalid_request")
    assert "content" in body["error"]
    schema = (await api.http.get("/openapi.json")).json()
    assert "422" not in str(schema["paths"])


async def test_errors_admin_refusals_change_nothing_either(seeded: Seeded) -> None:
    api = seeded.api
    r = await api.http.post(f"{API}/messages", json={**OK, "content": ""}, headers=api.auth(ADMIN_TOKEN))
    assert_error(r, 400, "empty_content")
    await seeded.assert_unchanged()


async def test_errors_nul_characters_never_reach_storage(seeded: Seeded) -> None:
    """Regression: a NUL in content, ``since``, ``up_to`` or a message id path was a 500 on PostgreSQL.

    PostgreSQL text cannot hold U+0000; the server refuses it on every backend alike.
    """
    api = seeded.api
    assert_error(await api.send(seeded.alice, "s1", "a\x00b"), 400, "invalid_request")
    assert_error(await api.poll(seeded.alice, "s1", since="msg_\x00"), 400, "unknown_message")
    r = await api.http.patch(f"{API}/messages/msg_%00", json={"content": "x"}, headers=api.auth(seeded.alice))
    assert_error(r, 404, "message_not_found")
    r = await api.http.post(f"{API}/sessions/s1/read", json={"up_to": "msg_\x00"}, headers=api.auth(seeded.alice))
    assert_error(r, 400)
    r = await api.http.patch(
        f"{API}/messages/{seeded.message_id}", json={"content": "\x00"}, headers=api.auth(seeded.alice)
    )
    assert_error(r, 400)
    await seeded.assert_unchanged()


async def test_errors_malformed_message_ids_name_no_message(seeded: Seeded) -> None:
    api = seeded.api
    for bad in ("msg_", "msg_xyz", "msg_" + "A" * 24, seeded.message_id + "0", "msg_é"):
        assert_error(await api.poll(seeded.alice, "s1", since=bad), 400, "unknown_message")
    assert (await api.poll(seeded.alice, "s1", since=seeded.message_id)).status_code == 200
