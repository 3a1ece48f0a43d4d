"""``web/polling.js`` and ``web/strategy.js`` in Chromium against a fake ``fetch``.

The page's own modules are imported into a page of the real server; the service talks to a
scripted fake server instead, with short intervals, so each behaviour takes well under a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers import ServerProcess

pytestmark = pytest.mark.browser

# A scripted server: `routes(request)` answers each request (or throws to fail it); every
# request is logged with its time, body and how many polls were in flight when it started.
HARNESS = """() => {
window.harness = async (routes, options = {}) => {
  const { ApiClient } = await import("/web/api.js");
  const { Outbox } = await import("/web/outbox.js");
  const { PollingChatService } = await import("/web/polling.js");
  const { PollingStrategy } = await import("/web/strategy.js");
  const log = [];
  const t0 = performance.now();
  let polls = 0;
  let maxPolls = 0;
  let seq = 0;
  const stored = (body) => ({
    id: `msg_${++seq}`, type: body.type || "user", content: body.content,
    timestamp: new Date().toISOString().replace("Z", "000Z"), session_id: body.session_id,
    status: "sent", user_id: "u_me", client_message_id: body.client_message_id,
    delivered: false, read: false,
  });
  const json = (status, body, headers = {}) =>
    new Response(status === 304 ? null : JSON.stringify(body), {
      status, headers: { "Content-Type": "application/json", ...headers },
    });
  const fetchImpl = async (url, init) => {
    const u = new URL(url, location.origin);
    const entry = {
      at: performance.now() - t0, method: init.method, path: u.pathname,
      wait: u.searchParams.get("wait"), session: u.searchParams.get("session_id"),
      since: u.searchParams.get("since"), body: init.body ? JSON.parse(init.body) : null,
    };
    const poll = init.method === "GET" && u.pathname.endsWith("/messages");
    if (poll) { polls += 1; maxPolls = Math.max(maxPolls, polls); }
    entry.inFlight = polls;
    log.push(entry);
    const aborted = new Promise((_, reject) => {
      init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")), { once: true });
    });
    try {
      return await Promise.race([routes(entry, { json, stored }), aborted]);
    } finally {
      if (poll) polls -= 1;
    }
  };
  const strategy = new PollingStrategy({
    baseInterval: 0.05, maxInterval: 0.3, activeInterval: 0.05, inactiveInterval: 0.05,
    longPollWait: 0.2, sendRetryDelays: [0.05, 0.1], jitter: 0.1, ...(options.strategy || {}),
  });
  const service = new PollingChatService({
    api: new ApiClient({ token: "t", fetchImpl, timeout: 2 }),
    sessionId: options.sessionId === undefined ? "s1" : options.sessionId,
    strategy, outbox: new Outbox(null), ...(options.environment ? { environment: options.environment } : {}),
  });
  const events = [];
  service.on("message", ({ kind, message }) => events.push([kind, message.content, message.status, message.error]));
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  return { service, log, events, sleep, get maxPolls() { return maxPolls; } };
};
window.emptyPage = (json, cursor = "c_1") => json(200, { success: true, messages: [], has_more: false, cursor });
}"""


@pytest.fixture(scope="module")
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    """A page of the real server (signed out) with the harness loaded; each test builds its own service."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/")
    page.wait_for_selector("#signin:not([hidden])")
    page.evaluate(HARNESS)
    yield page
    context.close()
    assert not errors


def test_strategy_delays_follow_the_python_client(page: Any) -> None:
    result = page.evaluate(
        """async () => {
      const { PollingStrategy } = await import("/web/strategy.js");
      const s = new PollingStrategy();
      const at = (x) => () => x;
      const delay = (state, r = 0.5) => s.pollDelay({ secondsSinceActivity: null, errors: 0, rng: at(r), ...state });
      return {
        wait: s.longPollWait,
        long: delay({}, 0.99),
        longHidden: delay({ hidden: true }),
        active: delay({ mode: "short", secondsSinceActivity: 5 }),
        idle: delay({ mode: "short", secondsSinceActivity: 600 }),
        first: delay({ mode: "short" }),
        hiddenIdle: delay({ mode: "short", secondsSinceActivity: 600, hidden: true }),
        backoff: [1, 2, 3, 4, 5, 6, 7, 8, 50].map((errors) => delay({ errors })),
        highest: [1, 7, 50].map((errors) => delay({ errors }, 0.999999)),
        lowest: [1, 7].map((errors) => delay({ errors }, 0)),
        sends: [1, 2, 3, 4, 5, 12].map((attempt) => s.sendDelay(attempt, at(0.5))),
        sendsLow: [1, 4].map((attempt) => s.sendDelay(attempt, at(0))),
      };
    }"""
    )
    assert result["wait"] == 25
    assert result["long"] == 0
    assert result["longHidden"] == 10
    assert (result["active"], result["idle"], result["first"], result["hiddenIdle"]) == (2, 10, 3, 30)
    assert result["backoff"] == [3, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30, 30, 30]
    assert result["highest"][0] == pytest.approx(3.6, abs=1e-3)
    assert result["highest"][1:] == [30, 30]  # jitter never takes it past the cap
    assert result["lowest"] == [pytest.approx(2.4), pytest.approx(24)]
    assert result["sends"] == [1, 2, 4, 8, 8, 8]
    assert result["sendsLow"] == [pytest.approx(0.8), pytest.approx(6.4)]


def test_polling_keeps_exactly_one_poll_in_flight_and_follows_the_cursor(page: Any) -> None:
    result = page.evaluate(
        """async () => {
      let n = 0;
      const h = await harness(async (req, { json }) => {
        await new Promise((r) => setTimeout(r, 30));
        n += 1;
        return json(200, { success: true, messages: [], has_more: n === 1, cursor: `c_${n}` });
      });
      h.service.startPolling();
      for (let i = 0; i < 20; i += 1) {
        h.service.wake();
        if (i === 5) h.service.openSession("s2");
        if (i === 6) h.service.openSession("s1");
        await h.sleep(15);
      }
      await h.sleep(400);
      await h.service.stopPolling();
      return { max: h.maxPolls, log: h.log.map((e) => [e.session, e.since, e.wait, e.inFlight]) };
    }"""
    )
    assert result["max"] == 1
    assert all(in_flight == 1 for *_, in_flight in result["log"])
    first = result["log"][0]
    assert first[:2] == ["s1", None]
    assert result["log"][1][1] == "c_1"  # has_more: asked again at once, from the new cursor
    sessions = [session for session, *_ in result["log"]]
    assert sessions[-1] == "s1" and "s2" in sessions
    assert any(wait == "0.2" for *_, wait, _ in result["log"])  # long polls once caught up


def test_polling_honours_retry_after_even_when_woken(page: Any) -> None:
    result = page.evaluate(
        """async () => {
      const h = await harness(async (req, { json }) => {
        const polls = h.log.filter((e) => e.method === "GET").length;
        const busy = { success: false, error: "busy", code: "unavailable" };
        if (polls === 1) return json(503, busy, { "Retry-After": "1" });
        return emptyPage(json);
      }, { strategy: { mode: "short" } });
      const states = [];
      h.service.on("status", (s) => states.push(s.state));
      h.service.startPolling();
      for (let i = 0; i < 10; i += 1) { await h.sleep(50); h.service.wake(); }
      await h.sleep(1200);
      await h.service.stopPolling();
      const gets = h.log.filter((e) => e.method === "GET");
      return { gap: gets[1].at - gets[0].at, states };
    }"""
    )
    assert result["gap"] >= 1000
    assert "error" in result["states"] and result["states"][-1] == "connected"


def test_polling_backs_off_and_reports_offline_then_recovers(page: Any) -> None:
    result = page.evaluate(
        """async () => {
      let down = true;
      const h = await harness(async (req, { json }) => {
        if (down) throw new TypeError("Failed to fetch");
        return emptyPage(json);
      }, { strategy: { baseInterval: 0.1, maxInterval: 0.5, jitter: 0 } });
      const states = [];
      h.service.on("status", (s) => states.push([s.state, s.errorCount]));
      h.service.startPolling();
      await h.sleep(2000);
      down = false;
      await h.sleep(400);
      await h.service.stopPolling();
      const gets = h.log.filter((e) => e.method === "GET").map((e) => e.at);
      return { gaps: gets.slice(1, 6).map((t, i) => t - gets[i]), states };
    }"""
    )
    gaps = result["gaps"]
    # 0.1 s x 1.5 per error: 100, 150, 225, 337.5, then capped at 500 ms. Timers never fire
    # early; a busy machine may fire them late.
    for gap, expected in zip(gaps, [100, 150, 225, 337.5, 500], strict=True):
        assert expected - 5 <= gap <= expected + 150, gaps
    assert ["offline", 1] in result["states"]
    assert result["states"][-1][0] == "connected"


def test_polling_falls_back_to_short_polls_when_long_polls_are_cut(page: Any) -> None:
    result = page.evaluate(
        """async () => {
      const h = await harness(async (req, { json }) => {
        if (req.wait) {
          await new Promise((r) => setTimeout(r, 150));
          throw new TypeError("connection reset by a proxy");
        }
        return emptyPage(json);
      });
      const modes = [];
      h.service.on("status", (s) => modes.push(s.mode));
      h.service.startPolling();
      await h.sleep(1500);
      await h.service.stopPolling();
      const waits = h.log.filter((e) => e.method === "GET").map((e) => e.wait);
      return { waits, mode: h.service.connectionStatus.mode };
    }"""
    )
    assert result["mode"] == "short"
    waits = result["waits"]
    assert waits.count("0.2") == 3  # three cut long polls, then short polls only
    assert waits[-5:] == [None] * 5


def test_sends_retry_a_backlog_in_one_batch_with_the_same_ids_in_order(page: Any) -> None:
    result = page.evaluate(
        """async () => {
      let failures = 2;
      const h = await harness(async (req, { json, stored }) => {
        if (req.method === "GET") return emptyPage(json);
        if (failures > 0) { failures -= 1; throw new TypeError("Failed to fetch"); }
        if (req.path.endsWith("/batch")) {
          return json(200, { success: true, results: req.body.messages.map((m) => {
            const message = stored(m);
            return { success: true, message_id: message.id, message };
          }) });
        }
        const message = stored(req.body);
        return json(201, { success: true, message_id: message.id, message });
      }, { sessionId: null });
      h.service.startPolling();
      const waits = ["one", "two", "three"].map((text) => h.service.sendMessage(text, { sessionId: "s1" }));
      const answers = await Promise.all(waits);
      const later = await h.service.sendMessage("four", { sessionId: "s1" });
      await h.service.stopPolling();
      const posts = h.log.filter((e) => e.method === "POST");
      return {
        posts: posts.map((e) => [e.path.split("/").pop(), (e.body.messages || [e.body]).map((m) => m.content)]),
        ids: posts.slice(0, 3).map((e) => e.body.messages.map((m) => m.client_message_id).join()),
        answers: answers.map((a) => [a.success, a.message.content, a.message.status]),
        later: [later.success, later.message.status],
        pending: h.service.pending.length,
      };
    }"""
    )
    assert result["posts"] == [
        ["batch", ["one", "two", "three"]],
        ["batch", ["one", "two", "three"]],
        ["batch", ["one", "two", "three"]],
        ["messages", ["four"]],
    ]
    assert len(set(result["ids"])) == 1  # every retry carries the same client_message_ids
    assert result["answers"] == [[True, "one", "sent"], [True, "two", "sent"], [True, "three", "sent"]]
    assert result["later"] == [True, "sent"]
    assert result["pending"] == 0


def test_sends_refused_with_4xx_fail_without_blocking_later_ones(page: Any) -> None:
    result = page.evaluate(
        """async () => {
      let tooMany = true;
      const h = await harness(async (req, { json, stored }) => {
        if (req.method === "GET") return emptyPage(json);
        const body = req.body;
        if (body.content === "huge") {
          const error = "`content` is larger than 32768 bytes";
          return json(413, { success: false, error, code: "content_too_large" });
        }
        if (body.content === "busy" && tooMany) {
          tooMany = false;
          return json(429, { success: false, error: "slow down", code: "rate_limited" }, { "Retry-After": "1" });
        }
        const message = stored(body);
        return json(201, { success: true, message_id: message.id, message });
      }, { sessionId: null });
      h.service.startPolling();
      const huge = await h.service.sendMessage("huge", { sessionId: "s1" });
      const fine = await h.service.sendMessage("fine", { sessionId: "s1" });
      const started = performance.now();
      setTimeout(() => h.service.wake(), 100);
      const busy = await h.service.sendMessage("busy", { sessionId: "s1" });
      const waited = performance.now() - started;
      const again = h.service.retry(huge.message);
      const retried = await h.service.waitFor(again.client_message_id);
      await h.service.stopPolling();
      const hugePosts = h.log.filter((e) => e.method === "POST" && e.body.content === "huge");
      return {
        huge: [huge.success, huge.code, huge.message.status, huge.message.error],
        fine: [fine.success, fine.message.status],
        busy: [busy.success, busy.message.status],
        waited,
        retried: [retried.success, retried.message.status],
        sameId: new Set(hugePosts.map((e) => e.body.client_message_id)).size,
        attempts: hugePosts.length,
      };
    }"""
    )
    assert result["huge"] == [False, "content_too_large", "failed", "`content` is larger than 32768 bytes"]
    assert result["fine"] == [True, "sent"]
    assert result["busy"] == [True, "sent"]
    assert result["waited"] >= 1000  # Retry-After: 1, and a wake-up does not cut it short
    assert result["retried"] == [False, "failed"]
    assert (result["sameId"], result["attempts"]) == (1, 2)


def test_service_reports_own_messages_once_and_later_changes_as_updates(page: Any) -> None:
    result = page.evaluate(
        """async () => {
      const messages = [];
      let polls = 0;
      const h = await harness(async (req, { json, stored }) => {
        if (req.method === "POST") {
          const message = stored(req.body);
          messages.push(message);
          return json(201, { success: true, message_id: message.id, message });
        }
        polls += 1;
        if (polls === 3) messages.forEach((m) => { m.status = "delivered"; m.delivered = true; });
        if (polls === 4) messages.push({ ...messages[0], id: "msg_other", type: "assistant", content: "hi",
                                         client_message_id: null, user_id: "u_op", status: "sent",
                                         delivered: false });
        await new Promise((r) => setTimeout(r, 20));
        return json(200, { success: true, messages: messages.slice(), has_more: false, cursor: `c_${polls}` });
      }, { strategy: { mode: "short" } });
      h.service.startPolling();
      await h.service.sendMessage("hello");
      await h.sleep(600);
      await h.service.stopPolling();
      return h.events;
    }"""
    )
    assert result == [
        ["new", "hello", "sending", None],
        ["update", "hello", "sent", None],
        ["update", "hello", "delivered", None],
        ["new", "hi", "sent", None],
    ]


def test_polling_slows_down_in_a_hidden_tab_and_wakes_when_it_shows(page: Any) -> None:
    result = page.evaluate(
        """async () => {
      const env = {
        isHidden: true, visible: null,
        hidden() { return this.isHidden; },
        online: () => true,
        listen(onVisible) { env.visible = onVisible; return () => {}; },
      };
      const h = await harness(async (req, { json }) => {
        if (req.wait) await new Promise((r) => setTimeout(r, 50));
        return emptyPage(json);
      }, { strategy: { hiddenInterval: 0.5, maxInterval: 1, jitter: 0 }, environment: env });
      h.service.startPolling();
      await h.sleep(1300);
      env.isHidden = false;
      env.visible();
      await h.sleep(500);
      await h.service.stopPolling();
      const gets = h.log.filter((e) => e.method === "GET");
      const hiddenGaps = gets.slice(1).filter((e) => e.at < 1300).map((e, i) => e.at - gets[i].at);
      return {
        hiddenGaps,
        afterShown: gets.filter((e) => e.at >= 1300).length,
        visibleWaits: gets.filter((e) => e.at >= 1300).map((e) => e.wait),
      };
    }"""
    )
    # Caught up with a short poll, then long polls with a 0.5 s pause between them while hidden.
    assert len(result["hiddenGaps"]) >= 2
    assert all(gap >= 450 for gap in result["hiddenGaps"][1:]), result["hiddenGaps"]
    # Shown again: the pause is cut short and long polls follow one another at once.
    assert result["afterShown"] >= 2
    assert set(result["visibleWaits"]) == {"0.2"}
