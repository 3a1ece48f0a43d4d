"""Authentication, roles, object-level access and user management."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, API, Api
from tests.server.support import all_sessions, assert_error, create_session

USERS = "/api/v1/admin/users"

# Every route that needs a token, with a body where it takes one.
PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", f"{API}/messages", {"content": "hi", "session_id": "s1"}),
    ("POST", f"{API}/messages/batch", {"messages": [{"content": "hi", "session_id": "s1"}]}),
    ("GET", f"{API}/messages?session_id=s1", None),
    ("PATCH", f"{API}/messages/msg_000000000000000000000000", {"content": "x"}),
    ("POST", f"{API}/sessions", {"id": "s2"}),
    ("GET", f"{API}/sessions", None),
    ("GET", f"{API}/sessions/s1", None),
    ("PATCH", f"{API}/sessions/s1", {"status": "closed"}),
    ("POST", f"{API}/sessions/s1/read", {"up_to": "msg_000000000000000000000000"}),
    ("POST", USERS, {"name": "mallory"}),
    ("GET", USERS, None),
    ("GET", f"{USERS}/me", None),
]

BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer not-a-token"},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": ADMIN_TOKEN},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
async def test_auth_missing_or_bad_token_is_401_and_changes_nothing(
    api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    alice = await api.user("alice")
    await api.send(alice, "s1", "hi")
    for headers in BAD_AUTH:
        r = await api.http.request(method, path, json=body, headers=headers)
        assert_error(r, 401)
    assert [s["id"] for s in await all_sessions(api)] == ["s1"]
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["hi"]
    users = (await api.http.get(USERS, headers=api.auth(ADMIN_TOKEN))).json()["users"]
    assert sorted(u["name"] for u in users) == ["admin", "alice"]


async def test_auth_401_codes_tell_missing_from_unknown(api: Api) -> None:
    assert_error(await api.http.get(f"{USERS}/me"), 401, "missing_token")
    assert_error(await api.http.get(f"{USERS}/me", headers={"Authorization": "Basic x"}), 401, "malformed_token")
    assert_error(await api.http.get(f"{USERS}/me", headers=api.auth("nobody-has-this")), 401, "invalid_token")


async def test_auth_scheme_is_case_insensitive(api: Api) -> None:
    r = await api.http.get(f"{USERS}/me", headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200


async def test_auth_health_and_metrics_need_no_token(api: Api) -> None:
    health = await api.http.get("/api/v1/health")
    assert health.status_code == 200
    assert health.json()["success"] is True and health.json()["status"] == "ok"
    assert (await api.http.get("/metrics")).status_code == 200


async def test_auth_whoami_names_the_caller(api: Api) -> None:
    r = await api.http.post(USERS, json={"name": "carol", "role": "operator"}, headers=api.auth(ADMIN_TOKEN))
    created = r.json()
    me = await api.http.get(f"{USERS}/me", headers=api.auth(created["token"]))
    assert me.status_code == 200
    assert me.json() == {"success": True, "user": created["user"]}
    admin = (await api.http.get(f"{USERS}/me", headers=api.auth(ADMIN_TOKEN))).json()["user"]
    assert (admin["name"], admin["role"]) == ("admin", "admin")


# another member's session looks missing


async def test_auth_other_member_gets_404_for_everything_of_a_session(api: Api) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    sent = (await api.send(alice, "private", "secret")).json()["message_id"]
    _, cursor = await api.drain(alice, "private")

    answers = {
        "get": await api.http.get(f"{API}/sessions/private", headers=api.auth(bob)),
        "poll": await api.poll(bob, "private"),
        "poll since": await api.poll(bob, "private", since=cursor),
        "long poll": await api.poll(bob, "private", wait=1),
        "send": await api.send(bob, "private", "intrude"),
        "send as replay": await api.send(bob, "private", "intrude", client_message_id="k"),
        "close": await api.http.patch(f"{API}/sessions/private", json={"status": "closed"}, headers=api.auth(bob)),
        "read": await api.http.post(f"{API}/sessions/private/read", json={"up_to": sent}, headers=api.auth(bob)),
        "edit": await api.http.patch(f"{API}/messages/{sent}", json={"content": "x"}, headers=api.auth(bob)),
    }
    missing = await api.http.get(f"{API}/sessions/no-such-session", headers=api.auth(bob))
    for what, r in answers.items():
        body = assert_error(r, 404)
        assert "secret" not in r.text, what
        if what != "edit":
            assert body["code"] == missing.json()["code"] == "session_not_found", what
    r = await api.http.get(f"{API}/sessions", headers=api.auth(bob))
    assert r.json()["sessions"] == []
    # Nothing changed: alice's session is as she left it.
    messages, _ = await api.drain(alice, "private")
    assert [(m["content"], m["status"]) for m in messages] == [("secret", "sent")]
    session = (await api.http.get(f"{API}/sessions/private", headers=api.auth(alice))).json()["session"]
    assert session["status"] == "active" and session["message_count"] == 1


async def test_auth_member_posting_as_assistant_is_403_and_stores_nothing(api: Api) -> None:
    alice = await api.user("alice")
    assert_error(await api.send(alice, "s1", "fake bot", type="assistant"), 403, "type_not_allowed")
    assert await all_sessions(api) == []
    await api.send(alice, "s1", "real")
    assert_error(await api.send(alice, "s1", "fake bot", type="assistant"), 403, "type_not_allowed")
    messages, _ = await api.drain(alice, "s1")
    assert [m["content"] for m in messages] == ["real"]


async def test_auth_operator_may_post_assistant_messages_into_any_session(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    await api.send(alice, "s1", "question")
    r = await api.send(op, "s1", "answer", type="assistant")
    assert r.status_code == 201, r.text
    assert r.json()["message"]["type"] == "assistant"
    r = await api.send(ADMIN_TOKEN, "s1", "admin answer", type="assistant")
    assert r.status_code == 201
    messages, _ = await api.drain(alice, "s1")
    assert [(m["type"], m["content"]) for m in messages] == [
        ("user", "question"),
        ("assistant", "answer"),
        ("assistant", "admin answer"),
    ]


async def test_auth_operator_sees_polls_and_reads_any_session(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    sent = (await api.send(alice, "s1", "hi")).json()["message_id"]
    assert (await api.http.get(f"{API}/sessions/s1", headers=api.auth(op))).status_code == 200
    assert [m["id"] for m in (await api.poll(op, "s1")).json()["messages"]] == [sent]
    r = await api.http.post(f"{API}/sessions/s1/read", json={"up_to": sent}, headers=api.auth(op))
    assert r.status_code == 200


async def test_auth_operator_sending_into_a_new_session_owns_it(api: Api) -> None:
    alice = await api.user("alice")
    op = await api.user("op", "operator")
    assert (await api.send(op, "ops-room", "hello", type="assistant")).status_code == 201
    assert_error(await api.poll(alice, "ops-room"), 404)


# users


async def test_auth_admin_creates_users_and_their_tokens_work(api: Api) -> None:
    r = await api.http.post(USERS, json={"name": "dave", "role": "member"}, headers=api.auth(ADMIN_TOKEN))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True
    assert body["user"]["name"] == "dave" and body["user"]["role"] == "member"
    assert body["user"]["id"] and isinstance(body["token"], str) and len(body["token"]) >= 32
    assert (await api.send(body["token"], "s1", "hi")).status_code == 201
    listed = (await api.http.get(USERS, headers=api.auth(ADMIN_TOKEN))).json()
    assert listed["success"] is True
    assert body["user"] in listed["users"]
    assert all("token" not in u for u in listed["users"])


async def test_auth_new_user_defaults_to_member(api: Api) -> None:
    r = await api.http.post(USERS, json={"name": "eve"}, headers=api.auth(ADMIN_TOKEN))
    assert r.status_code == 201
    assert r.json()["user"]["role"] == "member"
    assert_error(await api.send(r.json()["token"], "s1", "x", type="assistant"), 403)


@pytest.mark.parametrize("role", ["member", "operator"])
async def test_auth_non_admin_cannot_create_or_list_users(api: Api, role: str) -> None:
    token = await api.user("someone", role)
    assert_error(await api.http.post(USERS, json={"name": "mallory"}, headers=api.auth(token)), 403, "admin_only")
    assert_error(await api.http.post(USERS, json={"name": "mallory", "role": "admin"}, headers=api.auth(token)), 403)
    assert_error(await api.http.get(USERS, headers=api.auth(token)), 403, "admin_only")
    names = [u["name"] for u in (await api.http.get(USERS, headers=api.auth(ADMIN_TOKEN))).json()["users"]]
    assert "mallory" not in names
    assert (await api.http.get(f"{USERS}/me", headers=api.auth(token))).status_code == 200


async def test_auth_admin_may_create_admins_and_operators(api: Api) -> None:
    for name, role in (("boss", "admin"), ("helper", "operator")):
        r = await api.http.post(USERS, json={"name": name, "role": role}, headers=api.auth(ADMIN_TOKEN))
        assert r.status_code == 201
        me = await api.http.get(f"{USERS}/me", headers=api.auth(r.json()["token"]))
        assert me.json()["user"]["role"] == role
        created = await api.http.post(USERS, json={"name": f"by-{name}"}, headers=api.auth(r.json()["token"]))
        assert created.status_code == (201 if role == "admin" else 403)


async def test_auth_duplicate_user_name_is_409(api: Api) -> None:
    await api.user("alice")
    r = await api.http.post(USERS, json={"name": "alice"}, headers=api.auth(ADMIN_TOKEN))
    assert_error(r, 409, "user_exists")
    names = [u["name"] for u in (await api.http.get(USERS, headers=api.auth(ADMIN_TOKEN))).json()["users"]]
    assert names.count("alice") == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "has space"},
        {"name": "x" * 65},
        {"name": 5},
        {"name": "ok", "role": "god"},
        {"name": "ok", "role": 1},
        {"name": "ok", "role": None},
    ],
)
async def test_auth_bad_user_requests_are_400_and_create_nobody(api: Api, body: dict[str, Any]) -> None:
    r = await api.http.post(USERS, json=body, headers=api.auth(ADMIN_TOKEN))
    assert_error(r, 400)
    users = (await api.http.get(USERS, headers=api.auth(ADMIN_TOKEN))).json()["users"]
    assert [u["name"] for u in users] == ["admin"]


async def test_auth_each_user_token_is_distinct(api: Api) -> None:
    tokens = {await api.user(f"user{i}") for i in range(5)}
    assert len(tokens) == 5
    names = set()
    for token in tokens:
        names.add((await api.http.get(f"{USERS}/me", headers=api.auth(token))).json()["user"]["name"])
    assert names == {f"user{i}" for i in range(5)}


async def test_auth_created_session_belongs_to_its_creator(api: Api) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    await create_session(api, alice, "mine")
    assert_error(await api.send(bob, "mine", "hi"), 404, "session_not_found")
    assert (await api.send(alice, "mine", "hi")).status_code == 201


async def test_auth_two_members_racing_for_a_new_session_id_one_owns_it(api: Api) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    for i in range(5):
        session_id = f"contested-{i}"
        a, b = await asyncio.gather(api.send(alice, session_id, "alice was here"), api.send(bob, session_id, "bob too"))
        assert sorted((a.status_code, b.status_code)) == [201, 404], (a.text, b.text)
        winner = alice if a.status_code == 201 else bob
        loser = bob if winner == alice else alice
        messages, _ = await api.drain(winner, session_id)
        assert len(messages) == 1
        assert_error(await api.poll(loser, session_id), 404)


@pytest.mark.parametrize("query", ["limit=100", "limit=0100"])
async def test_auth_two_authorization_headers_are_refused_on_polls(api: Api, query: str) -> None:
    """With two ``Authorization`` headers the poll front took the last and Starlette the first:
    ``limit=100`` was answered as one user, ``limit=0100`` as the other."""
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(alice, "s1", "alice's")
    headers = [("Authorization", f"Bearer {bob}"), ("Authorization", f"Bearer {alice}")]
    r = await api.http.get(f"{API}/messages?session_id=s1&{query}", headers=headers)
    assert "Authorization" in assert_error(r, 400, "duplicate_header")["error"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/messages", {"content": "hi", "session_id": "s1"}),
        ("POST", "/messages/batch", {"messages": [{"content": "hi", "session_id": "s1"}]}),
        ("GET", "/sessions", None),
        ("POST", "/sessions", {"id": "s2"}),
    ],
)
async def test_auth_two_authorization_headers_are_refused_everywhere(
    api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    headers = [("Authorization", f"Bearer {alice}"), ("Authorization", f"Bearer {bob}")]
    r = await api.http.request(method, f"{API}{path}", json=body, headers=headers)
    assert_error(r, 400, "duplicate_header")
    sessions = await api.http.get(f"{API}/sessions", headers=api.auth(ADMIN_TOKEN))
    assert sessions.json()["sessions"] == []  # nothing was done as either of them
