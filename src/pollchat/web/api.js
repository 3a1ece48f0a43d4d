// HTTP to the pollchat API: bearer token, JSON bodies, timeouts, and one error type.
//
// Every failure becomes a RequestFailed that says whether trying again can help (`transient`),
// whether no answer came at all (`offline`: no connection, a connection cut, or no answer in
// time, which is also `timedOut`), how long the server asked us to wait (`retryAfter`, from
// Retry-After), its machine `code` and its JSON `body`. A request cancelled by its caller (a
// session switch, sign-out) is `cancelled`, which loops treat as "stop", never as an error.
//
// `onOutcome` hears what every request (cancelled ones aside) says about the server: that it
// answered, with which status, or that no answer came. The page's connection indicator uses it
// while no chat poll speaks for the connection.

import { systemClock } from "./environment.js";

export const CHAT_API = "/api/v1/admin/chat";

/** A request that did not get a usable answer. */
export class RequestFailed extends Error {
  constructor(
    message,
    {
      transient,
      offline = false,
      timedOut = false,
      retryAfter = null,
      code = null,
      status = null,
      cancelled = false,
      body = null,
    },
  ) {
    super(message);
    this.name = "RequestFailed";
    this.transient = transient;
    this.offline = offline || timedOut;
    this.timedOut = timedOut;
    this.retryAfter = retryAfter;
    this.code = code;
    this.status = status;
    this.cancelled = cancelled;
    this.body = body;
  }
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date, counted from `now`), or null. */
export function retryAfterOf(response, now = new Date()) {
  const value = response.headers.get("retry-after");
  if (value === null) return null;
  // Digits only: Number() would also take "0x10" or "1e9".
  if (/^\d+(\.\d+)?$/.test(value.trim())) return Number(value);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - now.getTime()) / 1000);
}

/** Whether trying again can help after an answer with this status: 408, 425, 429 and 5xx. */
export function transientStatus(status) {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

/** The RequestFailed for a non-success response; 408, 425, 429 and 5xx are transient. */
export async function refusal(response, now = new Date()) {
  let message = `HTTP ${response.status}`;
  let code = null;
  let body = null;
  try {
    body = await response.json();
    message = String(body.error || response.statusText || message);
    code = body.code ?? null;
  } catch {
    // Not our JSON (a proxy's page, an empty body): the status says enough.
  }
  const status = response.status;
  const transient = transientStatus(status);
  return new RequestFailed(message, { transient, retryAfter: retryAfterOf(response, now), code, status, body });
}

/** Reads a JSON body; a connection cut mid-body is a transient failure. */
export async function readJson(response) {
  try {
    return await response.json();
  } catch (exc) {
    throw new RequestFailed(`unreadable answer: ${exc.message || exc}`, { transient: true, status: response.status });
  }
}

/** A fetch-based client for one server and one token. */
export class ApiClient {
  /**
   * @param {object} options
   * @param {string} [options.baseUrl] the server ("" for the page's own origin)
   * @param {string} options.token a bearer token
   * @param {number} [options.timeout] seconds before an unanswered request is abandoned
   * @param {object} [options.clock] times the timeouts and dates Retry-After (environment.js)
   * @param {function(object): void} [options.onOutcome] hears `{answered: true, status, statusText}`
   *   for every answer and `{answered: false, error}` for every request that got none
   */
  constructor({ baseUrl = "", token, timeout = 15, fetchImpl = null, clock = systemClock, onOutcome = null }) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.token = token;
    this.timeout = timeout;
    this.clock = clock;
    this._fetch = fetchImpl || ((...args) => globalThis.fetch(...args));
    this._onOutcome = onOutcome;
  }

  /**
   * Send one request and return the Response (any status); throws RequestFailed only when no
   * answer arrived (network failure, timeout, cancellation).
   */
  async request(method, path, { json, params, headers = {}, timeout, signal } = {}) {
    let url = this.baseUrl + path;
    if (params) {
      const query = new URLSearchParams();
      for (const [key, value] of Object.entries(params)) {
        if (value !== null && value !== undefined) query.set(key, String(value));
      }
      const text = query.toString();
      if (text) url += `?${text}`;
    }
    const controller = new AbortController();
    let timedOut = false;
    const timer = this.clock.setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, (timeout ?? this.timeout) * 1000);
    const cancel = () => controller.abort();
    if (signal) {
      if (signal.aborted) controller.abort();
      else signal.addEventListener("abort", cancel, { once: true });
    }
    const init = {
      method,
      headers: { Authorization: `Bearer ${this.token}`, Accept: "application/json", ...headers },
      cache: "no-store",
      credentials: "omit",
      signal: controller.signal,
    };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    }
    try {
      const response = await this._fetch(url, init);
      this._tell({ answered: true, status: response.status, statusText: response.statusText || "" });
      return response;
    } catch (exc) {
      const failure = this._unanswered(exc, { timedOut, signal });
      if (!failure.cancelled) this._tell({ answered: false, error: failure });
      throw failure;
    } finally {
      this.clock.clearTimeout(timer);
      if (signal) signal.removeEventListener("abort", cancel);
    }
  }

  _unanswered(exc, { timedOut, signal }) {
    if (timedOut) return new RequestFailed("the server did not answer in time", { transient: true, timedOut: true });
    if (signal && signal.aborted) {
      const reason = signal.reason;
      const offline = Boolean(reason && reason.offline);
      if (offline) return new RequestFailed("the browser is offline", { transient: true, offline: true });
      return new RequestFailed("cancelled", { transient: false, cancelled: true });
    }
    // fetch rejects with a TypeError when no connection could be made (offline, refused,
    // reset); browsers do not say which.
    return new RequestFailed(`cannot reach the server (${exc.message || exc})`, { transient: true, offline: true });
  }

  _tell(outcome) {
    if (!this._onOutcome) return;
    try {
      this._onOutcome(outcome);
    } catch (exc) {
      console.error("pollchat: an outcome listener failed", exc);
    }
  }

  /** A request whose 2xx JSON body is returned; anything else throws RequestFailed. */
  async call(method, path, options = {}) {
    const response = await this.request(method, path, options);
    if (!response.ok) throw await refusal(response, this.clock.now());
    return readJson(response);
  }
}
