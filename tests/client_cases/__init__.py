"""The corpus of client-behaviour cases that both clients must pass (see README.md beside this file).

This module loads the ``*.json`` files of this folder, expands their shorthands into the one
form both replayers read (``tests/client/test_cases.py`` for the Python client,
``tests/browser/test_cases.py`` for ``web/polling.js``), and compares what a replayer observed
with what the case expects. Nothing here knows either client.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
API = "/api/v1/admin/chat"
SESSION = "s1"
START = "2026-01-01T00:00:00+00:00"  # wall time at fake second 0, for Retry-After dates
MESSAGE_DEFAULTS: dict[str, Any] = {
    "type": "assistant",
    "timestamp": "2026-01-01T00:00:00Z",
    "session_id": SESSION,
    "status": "sent",
    "user_id": "u_op",
    "client_message_id": None,
    "delivered": False,
    "read": False,
    "edited_at": None,
}
# Which endpoint a request is for: (method, path pattern, route name). Both replayers route by it.
ROUTES: list[tuple[str, str, str]] = [
    ("GET", f"^{API}/messages$", "poll"),
    ("POST", f"^{API}/messages$", "send"),
    ("POST", f"^{API}/messages/batch$", "batch"),
    ("POST", f"^{API}/sessions$", "create_session"),
    ("GET", f"^{API}/sessions/[^/]+$", "get_session"),
]
# The routes of the sender; every other route is the poller's. The two loops run side by side,
# so how their requests interleave within one instant is scheduling, not behaviour.
SENDER_ROUTES = {"send", "batch"}
STRATEGY_FIELDS = {
    "mode",
    "long_poll_wait",
    "base_interval",
    "max_interval",
    "backoff_multiplier",
    "active_interval",
    "inactive_interval",
    "active_window",
    "jitter",
    "send_retry_delays",
}
CASE_KEYS = {"name", "about", "strategy", "random", "request_timeout", "run_for", "answers", "actions", "expect"}
EXPECT_KEYS = {"requests", "events", "states", "status", "unauthorized"}
STATUS_KEYS = {"state", "error_count", "polling_active", "last_error"}


@dataclass(frozen=True)
class Case:
    """One scripted run of a client and what it must do."""

    name: str
    about: str
    strategy: dict[str, Any]
    random: float
    request_timeout: float
    run_for: float
    answers: dict[str, list[dict[str, Any]]]
    actions: list[dict[str, Any]]
    expect: dict[str, Any]
    source: str = field(default="", compare=False)

    def for_replay(self) -> dict[str, Any]:
        """The case as plain JSON data, as the browser replayer receives it."""
        return {
            "name": self.name,
            "strategy": self.strategy,
            "random": self.random,
            "request_timeout": self.request_timeout,
            "run_for": self.run_for,
            "answers": self.answers,
            "actions": self.actions,
            "session": SESSION,
            "start": START,
            "routes": ROUTES,
        }


def route_of(method: str, path: str) -> str:
    """The route name of a request (``other`` when it is none the corpus scripts)."""
    for want, pattern, name in ROUTES:
        if method == want and re.match(pattern, path):
            return name
    return "other"


def _message(data: dict[str, Any]) -> dict[str, Any]:
    missing = {"id", "content"} - set(data)
    if missing:
        raise ValueError(f"a message needs {sorted(missing)}: {data}")
    return {"id": data["id"], "content": data["content"], **MESSAGE_DEFAULTS, **data}


def _answer(data: dict[str, Any]) -> dict[str, Any]:
    """One scripted answer in its expanded form: {after, fail} or {after, status, headers, json|text}."""
    after = float(data.get("after", 0))
    if "fail" in data:
        if data["fail"] not in ("refused", "reset"):
            raise ValueError(f"unknown failure {data['fail']!r}")
        return {"after": after, "fail": data["fail"]}
    headers = dict(data.get("headers", {}))
    if "page" in data:
        page = data["page"]
        body: Any = {
            "success": True,
            "messages": [_message(m) for m in page.get("messages", [])],
            "has_more": bool(page.get("has_more", False)),
            "cursor": page["cursor"],
        }
        headers.setdefault("ETag", f'"{page["cursor"]}"')
        return {"after": after, "status": 200, "headers": headers, "json": body}
    if "error" in data:
        error = dict(data["error"])
        status = int(error.pop("status"))
        code = error.pop("code")
        sentence = error.pop("message", f"refused: {code}")
        return {
            "after": after,
            "status": status,
            "headers": headers,
            "json": {"success": False, "error": sentence, "code": code, **error},
        }
    if "stored" in data:  # a send acknowledged: the message as the server stored it
        message = _message({"type": "user", "user_id": "u_me", **data["stored"]})
        body = {"success": True, "message_id": message["id"], "message": message}
        return {"after": after, "status": int(data.get("status", 201)), "headers": headers, "json": body}
    answer: dict[str, Any] = {"after": after, "status": int(data["status"]), "headers": headers}
    if "json" in data:
        answer["json"] = data["json"]
    elif "text" in data:
        answer["text"] = str(data["text"])
    return answer


def _check_keys(where: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")


def _case(data: dict[str, Any], source: str) -> Case:
    _check_keys(f"{source}: case", data, CASE_KEYS)
    name = data["name"]
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"{source}: a case name is lower_snake_case: {name!r}")
    strategy = dict(data.get("strategy", {}))
    _check_keys(f"{name}: strategy", strategy, STRATEGY_FIELDS)
    expect = dict(data["expect"])
    _check_keys(f"{name}: expect", expect, EXPECT_KEYS)
    expect.setdefault("unauthorized", 0)  # a refused token is news the application must never miss
    if "status" in expect:
        _check_keys(f"{name}: expect.status", expect["status"], STATUS_KEYS)
    for action in data.get("actions", []):
        _check_keys(f"{name}: action", action, {"at", "send"})
    for route in data.get("answers", {}):
        if route not in {name for _, _, name in ROUTES}:
            raise ValueError(f"{name}: answers for an unknown route {route!r}")
    return Case(
        name=name,
        about=data["about"],
        strategy=strategy,
        random=float(data.get("random", 0.5)),
        request_timeout=float(data.get("request_timeout", 15)),
        run_for=float(data["run_for"]),
        answers={route: [_answer(a) for a in answers] for route, answers in data.get("answers", {}).items()},
        actions=list(data.get("actions", [])),
        expect=expect,
        source=source,
    )


def load_cases() -> list[Case]:
    """Every case of every ``*.json`` file here, in file order; names are unique."""
    cases: list[Case] = []
    for path in sorted(HERE.glob("*.json")):
        for data in json.loads(path.read_text("utf-8")):
            cases.append(_case(data, path.name))
    names = [case.name for case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"case names used twice: {duplicates}")
    return cases


def request_record(
    *, at: float, method: str, path: str, params: dict[str, str], if_none_match: str | None, body: Any
) -> dict[str, Any]:
    """A request as both replayers record it (the form of ``expect.requests``)."""
    record: dict[str, Any] = {"at": round(at, 6), "route": route_of(method, path)}
    shown = {k: v for k, v in params.items() if not (k == "session_id" and v == SESSION)}
    if shown:
        record["params"] = shown
    if if_none_match is not None:
        record["if_none_match"] = if_none_match
    if isinstance(body, dict):
        # A client_message_id is random; that retries keep it is the sending tests' business.
        record["body"] = {k: v for k, v in body.items() if k != "client_message_id"}
    return record


def event_record(kind: str, message: dict[str, Any]) -> list[Any]:
    """A message event as both replayers record it: [kind, id, content, status]."""
    message_id = str(message["id"])
    return [kind, "local" if message_id.startswith("local:") else message_id, message["content"], message["status"]]


def collapse(states: list[str]) -> list[str]:
    """Connection states in order, repeats collapsed."""
    out: list[str] = []
    for state in states:
        if not out or out[-1] != state:
            out.append(state)
    return out


def check(case: Case, observed: dict[str, Any]) -> None:
    """Assert that ``observed`` (requests, events, states, status, unauthorized) is what ``case`` expects."""
    expect = case.expect
    problems: list[str] = []
    if "requests" in expect and _by_loop(observed["requests"]) != _by_loop(expect["requests"]):
        problems.append(f"requests:\n  expected {_show(expect['requests'])}\n  observed {_show(observed['requests'])}")
    for key in ("events", "states", "unauthorized"):
        if key in expect and observed[key] != expect[key]:
            problems.append(f"{key}:\n  expected {_show(expect[key])}\n  observed {_show(observed[key])}")
    if "status" in expect:
        status = {key: observed["status"].get(key) for key in expect["status"]}
        if status != expect["status"]:
            problems.append(f"status:\n  expected {expect['status']}\n  observed {status}")
    assert not problems, f"case {case.name} ({case.source}): {case.about}\n" + "\n".join(problems)


def _by_loop(requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The poller's requests and the sender's, each in order."""
    sender = [r for r in requests if r["route"] in SENDER_ROUTES]
    return [r for r in requests if r["route"] not in SENDER_ROUTES], sender


def _show(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "[\n    " + ",\n    ".join(json.dumps(v) for v in value) + "\n  ]"
    return json.dumps(value)


CASES = load_cases()
