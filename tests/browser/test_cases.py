"""The shared client-behaviour corpus (``tests/client_cases``) replayed against ``web/polling.js`` in Chromium.

The page imports the real modules and builds a ``PollingChatService`` on a fake clock (virtual
time for every timer of the service and of its ``ApiClient``) and a fake ``fetch`` that answers
from the case's script. Time moves only when everything in the page waits: the replayer then
jumps to the next timer, as the Python replayer's ``FakeClock`` does. The Python twin of this
file is ``tests/client/test_cases.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.client_cases import CASES, Case, check, collapse
from tests.servers import ServerProcess

pytestmark = pytest.mark.browser

REPLAYER = """() => {
// Virtual time: timers fire only when the replayer moves the clock, in deadline order.
class FakeClock {
  constructor(start) {
    this.start = Date.parse(start);
    this.t = 0;
    this.timers = [];
    this.seq = 0;
    this.activity = 0;
  }
  now() { return new Date(this.start + this.t * 1000); }
  monotonic() { return this.t; }
  setTimeout(callback, ms) {
    this.seq += 1;
    this.activity += 1;
    this.timers.push({ at: this.t + Math.max(0, Number(ms) || 0) / 1000, id: this.seq, callback });
    return this.seq;
  }
  clearTimeout(id) {
    this.activity += 1;
    this.timers = this.timers.filter((timer) => timer.id !== id);
  }
  // Let the page run until nothing changes any more: every task waits for a timer or an answer.
  async settle() {
    const hop = () => new Promise((resolve) => setTimeout(resolve, 0));
    let before;
    do {
      before = this.activity;
      await hop();
      await hop();
    } while (this.activity !== before);
  }
  async runFor(seconds) {
    const end = this.t + seconds;
    for (;;) {
      await this.settle();
      if (!this.timers.length) break;
      const next = this.timers.reduce((a, b) => (b.at < a.at || (b.at === a.at && b.id < a.id) ? b : a));
      if (next.at > end) break;
      this.timers = this.timers.filter((timer) => timer !== next);
      this.t = Math.max(this.t, next.at);
      this.activity += 1;
      next.callback();
    }
    this.t = end;
    await this.settle();
  }
}

const round = (x) => Math.round(x * 1e6) / 1e6;
const routeOf = (routes, method, path) => {
  for (const [want, pattern, name] of routes) if (method === want && new RegExp(pattern).test(path)) return name;
  return "other";
};
// What a Response offers the service, on microtasks only (a real Response reads its body on tasks).
const respond = (answer) => ({
  status: answer.status,
  ok: answer.status >= 200 && answer.status < 300,
  statusText: "",
  headers: new Headers(answer.headers),
  json: async () => {
    if ("json" in answer) return structuredClone(answer.json);
    throw new SyntaxError(`not JSON: ${JSON.stringify(answer.text || "")}`);
  },
});

window.replayCase = async (spec) => {
  const { ApiClient } = await import("/web/api.js");
  const { Outbox } = await import("/web/outbox.js");
  const { PollingChatService } = await import("/web/polling.js");
  const { PollingStrategy } = await import("/web/strategy.js");
  const clock = new FakeClock(spec.start);
  const answers = Object.fromEntries(Object.entries(spec.answers).map(([route, list]) => [route, [...list]]));
  const requests = [];
  const fetchImpl = (url, init) => new Promise((resolve, reject) => {
    const u = new URL(url, location.origin);
    const params = Object.fromEntries(u.searchParams.entries());
    if (params.session_id === spec.session) delete params.session_id;
    const record = { at: round(clock.t), route: routeOf(spec.routes, init.method, u.pathname) };
    if (Object.keys(params).length) record.params = params;
    if (init.headers["If-None-Match"] !== undefined) record.if_none_match = init.headers["If-None-Match"];
    if (init.body) {
      const { client_message_id: _ignored, ...body } = JSON.parse(init.body);
      record.body = body;
    }
    requests.push(record);
    clock.activity += 1;
    const queue = answers[record.route] || [];
    const answer = queue.length ? queue.shift() : null;
    let timer = null;
    init.signal.addEventListener("abort", () => {
      if (timer !== null) clock.clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    }, { once: true });
    if (answer === null) return; // held until the client gives up
    timer = clock.setTimeout(() => {
      if (answer.fail) reject(new TypeError("Failed to fetch"));
      else resolve(respond(answer));
    }, answer.after * 1000);
  });
  const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
  const strategy = new PollingStrategy(
    Object.fromEntries(Object.entries(spec.strategy).map(([key, value]) => [camel(key), value])),
  );
  const environment = { hidden: () => false, online: () => true, listen: () => () => {} };
  const service = new PollingChatService({
    api: new ApiClient({ token: "tok-alice", fetchImpl, timeout: spec.request_timeout, clock }),
    sessionId: spec.session,
    strategy,
    outbox: new Outbox(null),
    clock,
    rng: () => spec.random,
    environment,
  });
  const events = [];
  const states = [service.connectionStatus.state];
  service.on("message", ({ kind, message }) => {
    const id = message.id.startsWith("local:") ? "local" : message.id;
    events.push([kind, id, message.content, message.status]);
  });
  service.on("status", (status) => states.push(status.state));
  let unauthorized = 0;
  service.on("unauthorized", () => { unauthorized += 1; });
  for (const action of spec.actions) clock.setTimeout(() => service.enqueue(action.send), action.at * 1000);
  service.startPolling();
  await clock.runFor(spec.run_for);
  const status = service.connectionStatus;
  const observed = {
    requests,
    events,
    states,
    status: {
      state: status.state,
      error_count: status.errorCount,
      polling_active: status.pollingActive,
      last_error: status.lastError,
    },
    unauthorized,
  };
  const stopped = service.stopPolling();
  await clock.runFor(0);
  await stopped;
  return observed;
};
}"""


@pytest.fixture(scope="module")
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    """A page of the real server (signed out) with the replayer loaded; each case builds its own service."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/")
    page.wait_for_selector("#signin:not([hidden])")
    page.evaluate(REPLAYER)
    yield page
    context.close()
    assert not errors


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_browser_client_case(page: Any, case: Case) -> None:
    observed = page.evaluate("(spec) => replayCase(spec)", case.for_replay())
    observed["states"] = collapse(observed["states"])
    check(case, observed)
