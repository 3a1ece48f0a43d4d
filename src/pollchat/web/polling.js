// PollingChatService: the seed's client for the browser, with the Python client's semantics.
//
// Two loops. The *poller* keeps exactly one poll in flight for the open session, follows the
// server's cursor and hands each message to the page once, in cursor order, later changes as
// updates. The *sender* drains the outbox (all sessions, one queue) in order: the head is
// retried with the same client_message_id until the server acknowledges or refuses it, so a
// retry can never store a message twice and a later message never overtakes an earlier one.
// A refused message (4xx) is set aside as `failed` and the queue moves on. A backlog goes out
// through the batch endpoint in one request.
//
// Long polls are the default. A long poll cut while held by something between us and the
// server (a proxy's 502/504 or a reset after its read timeout) is made again at once without
// an error; when long polls keep being cut, the poller falls back to adaptive short polls for a
// while. Errors back off x1.5 with jitter up to 30 s and honour Retry-After.
// A hidden tab polls less often; the browser's online/visible events wake both loops.

import { CHAT_API, RequestFailed, readJson, refusal } from "./api.js";
import { Outbox, sendRequest } from "./outbox.js";
import { PollingStrategy } from "./strategy.js";
import { browserEnvironment, systemClock } from "./environment.js";
import { fromApi, localMessage, version, withStatus } from "./message.js";
import { Signal } from "./signal.js";
import { uuid } from "./storage.js";

export const MAX_BATCH = 100;
const CURSOR_CODES = new Set(["bad_cursor", "cursor_wrong_session", "cursor_ahead", "unknown_message"]);
// A long poll that fails after this long in flight (or half its wait) was cut while held.
const CUT_AFTER = 5;
// This many cuts in a row, with no long poll ending normally between them, switch to short polls...
const CUTS_BEFORE_FALLBACK = 3;
// ...for this long, then long polls are tried again.
const FALLBACK_SECONDS = 300;

/** Whether a poll that asked for `wait` and failed with `exc` after `elapsed` s was cut while held. */
export function wasCut(exc, wait, elapsed) {
  // Something on the way gave up on it (a proxy's read timeout, a load balancer's idle timeout):
  // a transient failure after a while held, not the server's say-so (a Retry-After) nor our own
  // timeout. The Python client draws the same line.
  if (!(exc instanceof RequestFailed) || !exc.transient || exc.cancelled || exc.timedOut) return false;
  return wait > 0 && exc.retryAfter === null && elapsed >= Math.min(CUT_AFTER, wait / 2);
}

function asFailure(exc) {
  // An answer we could not make sense of (a proxy's page, a bug) must not end a loop: it is
  // logged and treated like a transient failure, with the usual backoff.
  if (exc instanceof RequestFailed) return exc;
  console.error("pollchat: unexpected error", exc);
  return new RequestFailed(`unexpected answer: ${exc && exc.message ? exc.message : exc}`, { transient: true });
}

/** Chat over HTTP polling: ordered idempotent sends, adaptive polls, an offline queue. */
export class PollingChatService {
  /**
   * @param {object} options
   * @param {import("./api.js").ApiClient} options.api the server and token
   * @param {string|null} [options.sessionId] the session to follow (openSession switches)
   * @param {PollingStrategy} [options.strategy] intervals; long polling by default
   * @param {Outbox} [options.outbox] the queue (persisted in localStorage when given a key)
   * @param {string|null} [options.clientName] kept on a session that a send creates
   * @param {object} [options.clock] time and timers (environment.js); tests pass a fake one
   * @param {function(): number} [options.rng] the random source of jitter
   * @param {object} [options.environment] visibility and connectivity of the page
   */
  constructor({
    api,
    sessionId = null,
    strategy = new PollingStrategy(),
    outbox = new Outbox(null),
    clientName = null,
    clock = systemClock,
    rng = Math.random,
    environment = browserEnvironment(),
  }) {
    this.api = api;
    this.sessionId = sessionId;
    this.strategy = strategy;
    this.outbox = outbox;
    this.clientName = clientName;
    this._clock = clock;
    this._rng = rng;
    this._env = environment;
    this.cursor = null;
    this._etag = null;
    this._seen = new Map(); // message id -> version, for the open session
    this._local = new Map(); // client_message_id -> our own message, every session
    this._waiters = new Map(); // client_message_id -> [resolve]
    this._listeners = { message: [], status: [], synced: [], unauthorized: [] };
    this._pollNow = new Signal(clock);
    this._outboxChanged = new Signal(clock);
    this._senderWake = new Signal(clock);
    // End waits that nothing else may cut short (Retry-After): a stop, a switch of session.
    this._pollStopped = new Signal(clock);
    this._sendStopped = new Signal(clock);
    this._generation = 0;
    this._pollTask = null;
    this._sendTask = null;
    this._pollAbort = null;
    this._sendAbort = null;
    this._switching = Promise.resolve();
    this._running = false;
    this._lastActivity = null;
    this._cuts = 0; // long polls cut in a row
    this._fallbackUntil = 0;
    this._synced = false;
    this._freshRead = false; // the cursor was dropped, and no poll after a cursor has worked since
    this._unlisten = null;
    this._unauthorizedReported = false;
    this._sendRefused = null; // the 401 that stopped the sender
    this._status = Object.freeze({
      state: "offline",
      lastSuccessfulPoll: null,
      errorCount: 0,
      retryAttempts: 0,
      pollingActive: false,
      lastError: null,
      mode: strategy.mode,
      nextPollAt: null,
      browserOnline: this._env.online(),
    });
    this.stats = {
      startedAt: clock.monotonic(),
      requests: 0,
      usefulPolls: 0,
      emptyPolls: 0,
      notModified: 0,
      errors: 0,
      sendRetries: 0,
    };
    for (const item of outbox.pending()) this._local.set(item.client_message_id, localMessage(item));
    for (const item of outbox.failed()) {
      this._local.set(item.client_message_id, localMessage(item, "failed", item.error || "not sent", item.code || null));
    }
  }

  // public API

  /** Connection state, last successful poll, error count, retry attempts, polling active. */
  get connectionStatus() {
    return this._status;
  }

  /** Our messages not yet acknowledged (every session), in send order. */
  get pending() {
    return this.outbox.pending().map((i) => this._local.get(i.client_message_id) || localMessage(i));
  }

  /** Our unacknowledged and failed messages in one session, in send order. */
  localMessages(sessionId) {
    return [...this._local.values()].filter(
      (m) => m.session_id === sessionId && (m.status === "sending" || m.status === "failed"),
    );
  }

  /** True when `clientMessageId` is one of ours (sent from this browser). */
  isOwn(clientMessageId) {
    return clientMessageId !== null && this._local.has(clientMessageId);
  }

  /** True once the open session's history has been fetched up to the present. */
  get synced() {
    return this._synced;
  }

  /**
   * Subscribe: "message" ({kind: "new"|"update", message}), "status" (connection status),
   * "synced" (the open session is caught up), "unauthorized" (the token was refused).
   * Returns a function that unsubscribes.
   */
  on(event, callback) {
    this._listeners[event].push(callback);
    return () => {
      this._listeners[event] = this._listeners[event].filter((c) => c !== callback);
    };
  }

  /** Start the poller and the sender. */
  startPolling() {
    if (this._running) return;
    this._running = true;
    this._unauthorizedReported = false;
    this._sendRefused = null;
    this._unlisten = this._env.listen(
      () => this.wake(),
      () => {
        this._setStatus({ browserOnline: true });
        this.wake();
      },
      () => this._wentOffline(),
    );
    this._setStatus({ pollingActive: true, browserOnline: this._env.online() });
    this._sendTask = this._sendLoop();
    if (this.sessionId) this._pollTask = this._pollLoop(this._generation);
  }

  /** Stop both loops; unsent messages stay queued (and in localStorage). */
  async stopPolling() {
    this._running = false;
    this._generation += 1;
    if (this._unlisten) this._unlisten();
    this._unlisten = null;
    this._abortPoll();
    if (this._sendAbort) this._sendAbort.abort();
    this._pollNow.set();
    this._outboxChanged.set();
    this._senderWake.set();
    this._pollStopped.set();
    this._sendStopped.set();
    await Promise.allSettled([this._pollTask, this._sendTask]);
    this._pollTask = null;
    this._sendTask = null;
    this._pollNow.clear();
    this._outboxChanged.clear();
    this._senderWake.clear();
    this._pollStopped.clear();
    this._sendStopped.clear();
    this._setStatus({ pollingActive: false });
  }

  /**
   * Follow another session (null: none). The poll in flight is cancelled and awaited first,
   * so there is never more than one; the new session is read from its start.
   */
  openSession(sessionId) {
    this._switching = this._switching.then(async () => {
      this._generation += 1;
      this._abortPoll();
      const previous = this._pollTask;
      this._pollTask = null;
      if (previous) {
        this._pollNow.set();
        this._pollStopped.set();
        await previous.catch(() => {});
        this._pollStopped.clear();
      }
      this.sessionId = sessionId;
      this.cursor = null;
      this._etag = null;
      this._seen.clear();
      this._synced = false;
      this._lastActivity = null;
      if (this._running && sessionId) {
        this._setStatus({ pollingActive: true });
        this._pollTask = this._pollLoop(this._generation);
      }
    });
    return this._switching;
  }

  /** Poll at a fixed interval with short polls (the seed's setPollingInterval). */
  setPollingInterval(seconds) {
    this.strategy = this.strategy.with({
      mode: "short",
      baseInterval: seconds,
      activeInterval: seconds,
      inactiveInterval: seconds,
    });
    this._setStatus({ mode: "short" });
    this._pollNow.set();
  }

  /** Another tab changed the stored queue: look at it again. */
  notifyOutboxChanged() {
    for (const item of this.outbox.pending()) {
      if (!this._local.has(item.client_message_id)) this._local.set(item.client_message_id, localMessage(item));
    }
    this._outboxChanged.set();
  }

  /** Try now: cut short the poller's and the sender's waits (a "retry now" button, "online"). */
  wake() {
    this._pollNow.set();
    this._senderWake.set();
  }

  /** Queue a message and return it at once with status `sending`. */
  enqueue(content, { type = "user", sessionId = this.sessionId, clientName = this.clientName, metadata = null } = {}) {
    if (!sessionId) throw new Error("no session to send to");
    const item = {
      client_message_id: uuid(),
      session_id: sessionId,
      content,
      type,
      created_at: this._clock.now().toISOString(),
    };
    if (metadata) item.metadata = metadata;
    if (clientName) item.client_name = clientName;
    this.outbox.add(item);
    const message = localMessage(item);
    this._local.set(item.client_message_id, message);
    this._touch();
    this._emit("message", { kind: "new", message });
    this._outboxChanged.set();
    return message;
  }

  /**
   * Send a message; resolves once the server acknowledged it or refused it for good, with
   * {success, message_id, error, code, message}. While the server is unreachable this waits.
   */
  sendMessage(content, options = {}) {
    const message = this.enqueue(content, options);
    return this.waitFor(message.client_message_id);
  }

  /** Wait until a queued message is acknowledged or refused. */
  waitFor(clientMessageId) {
    const current = this._local.get(clientMessageId);
    if (current && current.status !== "sending") return Promise.resolve(this._response(current));
    if (this._sendRefused) return Promise.resolve(this._refused(this._sendRefused, current || null));
    return new Promise((resolve) => {
      const list = this._waiters.get(clientMessageId) || [];
      list.push(resolve);
      this._waiters.set(clientMessageId, list);
    });
  }

  /** Queue a `failed` message again (same client_message_id), at the end of the queue. */
  retry(message) {
    if (message.status !== "failed" || !message.client_message_id) throw new Error("only a failed message can be retried");
    const stored = this.outbox.failed().find((i) => i.client_message_id === message.client_message_id);
    const item = {
      client_message_id: message.client_message_id,
      session_id: message.session_id,
      content: message.content,
      type: message.type,
      created_at: message.timestamp,
    };
    if (message.metadata) item.metadata = message.metadata;
    if (stored?.client_name) item.client_name = stored.client_name;
    this.outbox.add(item);
    const again = withStatus(message, "sending");
    this._local.set(item.client_message_id, again);
    this._emit("message", { kind: "update", message: again });
    this._outboxChanged.set();
    this._senderWake.set();
    return again;
  }

  /** Give up on a failed (or still queued) message of ours. */
  discard(message) {
    this.outbox.discard(message.client_message_id);
    this._emit("message", { kind: "discard", message });
    this._local.delete(message.client_message_id);
  }

  /** The other side's messages up to `upTo` are read. */
  async markRead(sessionId, upTo) {
    await this.api.call("POST", `${CHAT_API}/sessions/${encodeURIComponent(sessionId)}/read`, {
      json: { up_to: upTo },
    });
  }

  /** One fetch of a session's messages after `lastMessageId` (all of them when null). */
  async getMessages(sessionId, lastMessageId = null) {
    const messages = [];
    let since = lastMessageId;
    for (;;) {
      const body = await this._get(sessionId, { since, wait: 0, etag: null, signal: null });
      messages.push(...body.messages.map(fromApi));
      since = body.cursor;
      if (!body.has_more) return messages;
    }
  }

  // polling

  _effectiveMode() {
    if (this.strategy.mode === "short") return "short";
    return this._clock.monotonic() < this._fallbackUntil ? "short" : "long";
  }

  async _pollLoop(generation) {
    let errors = 0;
    const current = () => this._running && generation === this._generation;
    while (current()) {
      let retryAfter = null;
      this._pollNow.clear();
      try {
        const hasMore = await this._pollOnce(generation);
        errors = 0;
        if (hasMore) continue;
      } catch (exc) {
        if (!current() || exc.cancelled) break;
        if (exc.cut) {
          this._cutShort();
          continue;
        }
        exc = asFailure(exc);
        if (exc.status === 401) {
          // The token is refused: every poll would be. Stop, and say so; the page signs in again.
          this._failed(exc, errors + 1);
          this._setStatus({ pollingActive: false });
          this._reportUnauthorized(exc);
          break;
        }
        if (exc.code === "session_not_found" && (await this._createSession(this.sessionId))) continue;
        const lowered = exc.code === "wait_too_long" ? this.strategy.withLowerWait(exc.body?.max_wait) : null;
        if (lowered) {
          // This server holds polls for less time than we asked: ask for what it allows, at once.
          this.strategy = lowered;
          continue;
        }
        if (exc.status === 400 && CURSOR_CODES.has(exc.code) && this.cursor !== null) {
          // The server no longer knows our cursor (a reset database): read the session again;
          // what we have already shown is recognised by its version and not shown twice. When
          // the fresh read's cursor is refused too (instances that disagree), starting over at
          // once would hammer the server: then it is an error with the usual backoff.
          const again = this._freshRead;
          this.cursor = null;
          this._etag = null;
          this._freshRead = true;
          if (!again) continue;
        }
        errors += 1;
        retryAfter = exc.retryAfter;
        this._failed(exc, errors);
      }
      if (!current()) break;
      const since = this._lastActivity === null ? null : this._clock.monotonic() - this._lastActivity;
      let delay = this.strategy.pollDelay({
        errors,
        secondsSinceActivity: since,
        hidden: this._env.hidden(),
        mode: this._effectiveMode(),
        rng: this._rng,
      });
      // The server's Retry-After is a floor that no wake-up cuts short; the rest of the delay is
      // ours, and a send, a visible tab or "retry now" may end it early.
      const floor = retryAfter === null ? 0 : this.strategy.retryAfterDelay(retryAfter, this._rng);
      delay = Math.max(delay, floor);
      if (delay > 0) {
        this._setStatus({ nextPollAt: this._clock.now().getTime() + delay * 1000 });
        if (floor > 0) await this._pollStopped.wait(floor * 1000);
        if (current() && delay > floor) await this._pollNow.wait((delay - floor) * 1000);
        this._setStatus({ nextPollAt: null });
      }
    }
  }

  async _createSession(sessionId) {
    // Create our session, which the first send would otherwise create; true if it now exists.
    const body = { id: sessionId };
    if (this.clientName) body.client_name = this.clientName;
    try {
      const response = await this.api.request("POST", `${CHAT_API}/sessions`, { json: body });
      if (response.status === 409) {
        // It exists now: a send of ours created it meanwhile (then we may read it, and the poll
        // is simply repeated), or it is somebody else's (then the 404 stands).
        const found = await this.api.request("GET", `${CHAT_API}/sessions/${encodeURIComponent(sessionId)}`);
        return found.status === 200;
      }
      return response.status === 201;
    } catch {
      return false;
    }
  }

  async _pollOnce(generation) {
    const mode = this._effectiveMode();
    const recovering = this._status.state !== "connected" || this._status.errorCount > 0;
    // Catching up (a session just opened, a connection just back) is a short poll, so history
    // and the connection state show at once; long polls follow from there.
    const wait = mode === "long" && this._synced && !recovering ? this.strategy.longPollWait : 0;
    if (recovering) this._setStatus({ state: "polling" });
    const controller = new AbortController();
    this._pollAbort = controller;
    const started = this._clock.monotonic();
    const since = this.cursor;
    let body;
    try {
      body = await this._get(this.sessionId, { since, wait, etag: this._etag, signal: controller.signal });
    } catch (exc) {
      if (exc instanceof RequestFailed) exc.cut = wasCut(exc, wait, this._clock.monotonic() - started);
      throw exc;
    } finally {
      if (this._pollAbort === controller) this._pollAbort = null;
    }
    if (generation !== this._generation) throw new RequestFailed("cancelled", { transient: false, cancelled: true });
    if (since !== null) this._freshRead = false;
    if (wait > 0) this._cuts = 0; // a long poll that ended normally
    this._setStatus({
      state: "connected",
      errorCount: 0,
      retryAttempts: 0,
      lastSuccessfulPoll: this._clock.now(),
      lastError: null,
      mode: this._effectiveMode(),
    });
    // The server answers again: queued sends need not sit out their backoff.
    if (recovering && this.outbox.size) this._senderWake.set();
    if (body === null) {
      this.stats.notModified += 1;
      return false;
    }
    if (body.messages.length) this.stats.usefulPolls += 1;
    else this.stats.emptyPolls += 1;
    for (const data of body.messages) this._receive(fromApi(data));
    this.cursor = body.cursor;
    if (!body.has_more && !this._synced) {
      this._synced = true;
      this._emit("synced", this.sessionId);
    }
    return Boolean(body.has_more);
  }

  _cutShort() {
    // A long poll cut while held says nothing about the server or the network: it is made again
    // at once, and no error is shown (should the network really be gone, that poll says so).
    // Enough cuts in a row mean something cuts every long poll: short-poll for a while.
    this._cuts += 1;
    if (this._cuts >= CUTS_BEFORE_FALLBACK) {
      this._cuts = 0;
      this._fallbackUntil = this._clock.monotonic() + FALLBACK_SECONDS;
      this._setStatus({ mode: this._effectiveMode() });
    }
  }

  async _get(sessionId, { since, wait, etag, signal }) {
    const params = { session_id: sessionId };
    if (since) params.since = since;
    if (wait) params.wait = wait;
    const headers = etag && !wait ? { "If-None-Match": etag } : {};
    this.stats.requests += 1;
    const response = await this.api.request("GET", `${CHAT_API}/messages`, {
      params,
      headers,
      timeout: wait + this.api.timeout,
      signal,
    });
    if (response.status === 304) return null;
    if (response.status !== 200) throw await refusal(response, this._clock.now());
    const body = await readJson(response);
    if (!body || !Array.isArray(body.messages) || typeof body.cursor !== "string") {
      // A 200 that is no page (a captive portal's HTML, a proxy's JSON): an error like any bad answer.
      throw new RequestFailed("unexpected answer: not a page of messages", { transient: true, status: 200 });
    }
    if (sessionId === this.sessionId) this._etag = response.headers.get("etag");
    return body;
  }

  _abortPoll(reason = undefined) {
    if (this._pollAbort) this._pollAbort.abort(reason);
    this._pollAbort = null;
  }

  _wentOffline() {
    // The browser says the network is gone: say so now, and do not leave a long poll hanging
    // on a dead connection (it fails as an offline error and the poller backs off).
    this._setStatus({ state: "offline", browserOnline: false });
    this._abortPoll({ offline: true });
    if (this._sendAbort) this._sendAbort.abort({ offline: true });
  }

  _failed(exc, errors) {
    this.stats.errors += 1;
    // Offline: no answer came (fetch cannot tell a refused connection from a reset one), or the
    // browser says it has no network. A server that answers, even with 5xx or a proxy's page,
    // is reachable: that is an error. The Python client draws the same line.
    const state = exc.offline || !this._env.online() ? "offline" : "error";
    this._setStatus({
      state,
      errorCount: errors,
      retryAttempts: errors,
      lastError: exc.message,
      browserOnline: this._env.online(),
    });
  }

  _receive(message) {
    const local = message.client_message_id ? this._local.get(message.client_message_id) : undefined;
    const previous = this._seen.get(message.id);
    const current = version(message);
    if (previous === current) return;
    this._seen.set(message.id, current);
    if (local && local.session_id === message.session_id) {
      // Our own send, reported back by the server: an update of what the page shows.
      this._local.set(message.client_message_id, message);
      this._emit("message", { kind: "update", message });
      return;
    }
    if (previous === undefined) this._touch();
    this._emit("message", { kind: previous === undefined ? "new" : "update", message });
  }

  // sending

  async _sendLoop() {
    let attempt = 0;
    let oneByOne = false;
    while (this._running) {
      if (!this.outbox.size) {
        this._outboxChanged.clear();
        oneByOne = false;
        if (this.outbox.size) continue;
        await this._outboxChanged.wait();
        continue;
      }
      const batch = this.outbox.head(oneByOne ? 1 : MAX_BATCH);
      try {
        await this._sendBatch(batch);
        attempt = 0;
      } catch (exc) {
        if (!this._running || exc.cancelled) break;
        exc = asFailure(exc);
        if (exc.status === 401) {
          // Refused for who sends, not for what: the queue is kept (in localStorage too) for a
          // later start with a valid token; waiting callers hear why now.
          this._sendRefused = exc;
          this._releaseWaiters(exc);
          this._reportUnauthorized(exc);
          break;
        }
        if (!exc.transient && batch.length > 1) {
          // A server with a smaller batch limit: send the backlog one by one.
          oneByOne = true;
          continue;
        }
        if (!exc.transient) {
          // The whole request was refused: fail the head only, so the queue keeps moving
          // and the page shows why.
          this._settle(batch[0], null, exc.message, exc.code);
          continue;
        }
        attempt += 1;
        this.stats.sendRetries += 1;
        const delay = this.strategy.sendDelay(attempt, this._rng);
        const floor = exc.retryAfter ?? 0;
        this._setStatus({ retryAttempts: Math.max(attempt, this._status.errorCount), lastError: exc.message });
        this._senderWake.clear();
        if (floor > 0) await this._sendStopped.wait(floor * 1000);
        if (this._running && delay > floor) await this._senderWake.wait((delay - floor) * 1000);
      }
    }
  }

  async _sendBatch(batch) {
    const controller = new AbortController();
    this._sendAbort = controller;
    this.stats.requests += 1;
    try {
      if (batch.length === 1) {
        const response = await this.api.request("POST", `${CHAT_API}/messages`, {
          json: sendRequest(batch[0]),
          signal: controller.signal,
        });
        if (response.status !== 200 && response.status !== 201) throw await refusal(response, this._clock.now());
        const body = await readJson(response);
        this._settle(batch[0], body.message, null, null);
        return;
      }
      const response = await this.api.request("POST", `${CHAT_API}/messages/batch`, {
        json: { messages: batch.map(sendRequest) },
        signal: controller.signal,
      });
      if (response.status !== 200) throw await refusal(response, this._clock.now());
      const body = await readJson(response);
      batch.forEach((item, index) => {
        const result = body.results[index] || {};
        this._settle(item, result.message || null, result.error || "not stored", result.code || null);
      });
    } finally {
      if (this._sendAbort === controller) this._sendAbort = null;
    }
  }

  _settle(item, stored, error, code) {
    const id = item.client_message_id;
    const local = this._local.get(id) || localMessage(item);
    let response;
    if (stored) {
      this.outbox.remove([id]);
      const message = fromApi(stored);
      if (local.status === "sending" || local.status === "failed") {
        this._local.set(id, message);
        if (!this._seen.has(message.id) && message.session_id === this.sessionId) {
          this._seen.set(message.id, version(message));
        }
        this._emit("message", { kind: "update", message });
      }
      response = { success: true, message_id: message.id, message };
    } else {
      this.outbox.fail(item, error, code);
      const failed = withStatus(local, "failed", error, code);
      this._local.set(id, failed);
      this._emit("message", { kind: "update", message: failed });
      response = { success: false, message_id: null, error, code, message: failed };
    }
    const waiters = this._waiters.get(id) || [];
    this._waiters.delete(id);
    waiters.forEach((resolve) => resolve(response));
    // An answer is likely soon: a short-polling client asks early.
    this._pollNow.set();
  }

  _releaseWaiters(exc) {
    for (const [id, waiters] of this._waiters) {
      const response = this._refused(exc, this._local.get(id) || null);
      waiters.forEach((resolve) => resolve(response));
    }
    this._waiters.clear();
  }

  _refused(exc, message) {
    return { success: false, message_id: null, error: exc.message, code: exc.code, message };
  }

  _reportUnauthorized(exc) {
    // Once, whichever loop hears it first: the page has one thing to do (sign in again).
    if (this._unauthorizedReported) return;
    this._unauthorizedReported = true;
    this._emit("unauthorized", exc);
  }

  // helpers

  _response(message) {
    if (message.status === "failed") return { success: false, message_id: null, error: message.error, message };
    return { success: true, message_id: message.id, message };
  }

  _touch() {
    this._lastActivity = this._clock.monotonic();
  }

  _setStatus(changes) {
    const before = this._status;
    const status = Object.freeze({ ...before, ...changes });
    this._status = status;
    // A new poll time alone is not news; a change of state, mode, activity or errors is.
    const news = ["state", "errorCount", "retryAttempts", "pollingActive", "mode", "nextPollAt", "browserOnline"];
    if (news.some((key) => status[key] !== before[key])) this._emit("status", status);
  }

  _emit(event, value) {
    for (const callback of [...this._listeners[event]]) {
      try {
        callback(value);
      } catch (exc) {
        console.error("a pollchat callback failed", exc);
      }
    }
  }
}
