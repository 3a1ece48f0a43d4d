// The session list: who is chatting, how lately, what is unread; create, close and reopen.
//
// The list is refreshed by its own short poll (one request at a time, slower in a hidden tab,
// backing off on errors), separate from the message poller. The server does not count unread
// messages per reader, so this browser remembers how many messages each session had when the
// reader last had it open: what arrived since is unread.

import { CHAT_API, RequestFailed } from "./api.js";
import { Signal } from "./signal.js";
import { load, save } from "./storage.js";
import { ago, longTime, parseTime } from "./format.js";

const REFRESH = 5;
const HIDDEN_REFRESH = 30;
const MAX_REFRESH = 30;

/** A session's title, the same in every view: the name it was given, else its id. */
export function sessionTitle(session, id = session ? session.id : "") {
  const name = session && typeof session.client_name === "string" ? session.client_name.trim() : "";
  return name || id;
}

/** A session id minted in the browser, so a chat can start while the server is unreachable. */
export function newSessionId() {
  const bytes = new Uint8Array(10);
  crypto.getRandomValues(bytes);
  return `w_${[...bytes].map((x) => x.toString(16).padStart(2, "0")).join("")}`;
}

/** Sessions the signed-in user may see, kept fresh. */
export class SessionDirectory {
  /**
   * @param {object} options
   * @param {import("./api.js").ApiClient} options.api
   * @param {string} options.prefix storage key prefix of this token
   */
  constructor({ api, prefix }) {
    this.api = api;
    this._prefix = prefix;
    this.filter = "";
    this.loaded = false;
    this.lastError = null;
    this._order = [];
    this._known = new Map();
    for (const session of load(`${prefix}sessions`, [])) {
      this._known.set(session.id, session);
      this._order.push(session.id);
    }
    this._seen = load(`${prefix}seen`, {});
    this._listeners = [];
    this._wake = new Signal();
    this._running = false;
    this._task = null;
    this._inFlight = null;
  }

  /** Sessions of the current filter, newest activity first. */
  get sessions() {
    return this._order.map((id) => this._known.get(id)).filter(Boolean);
  }

  /** A session by id, if known. */
  get(id) {
    return this._known.get(id) || null;
  }

  /** Call `callback` after every change. */
  onChange(callback) {
    this._listeners.push(callback);
  }

  /** Start refreshing. */
  start() {
    if (this._running) return;
    this._running = true;
    this._task = this._loop();
  }

  /** Stop refreshing. */
  async stop() {
    this._running = false;
    this._wake.set();
    await Promise.allSettled([this._task]);
  }

  /** Refresh soon (after a send, a new message, a switch of filter). */
  refreshSoon() {
    this._wake.set();
  }

  /** Show only sessions with this status ("" for all). */
  setFilter(status) {
    this.filter = status;
    this._order = [];
    this._changed();
    this.refreshSoon();
  }

  async _loop() {
    let errors = 0;
    while (this._running) {
      this._wake.clear();
      try {
        await this.refresh();
        errors = 0;
      } catch (exc) {
        if (exc instanceof RequestFailed && exc.status === 401) return;
        errors += 1;
      }
      const hidden = typeof document !== "undefined" && document.visibilityState === "hidden";
      let delay = errors ? Math.min(REFRESH * 1.5 ** errors, MAX_REFRESH) : hidden ? HIDDEN_REFRESH : REFRESH;
      delay *= 0.8 + 0.4 * Math.random();
      await this._wake.wait(delay * 1000);
      // Several wake-ups in a burst (a flurry of messages) make one refresh, not many.
      if (this._running) await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  /** Fetch the list once (a refresh already in flight is shared, never doubled). */
  refresh() {
    if (!this._inFlight) {
      this._inFlight = this._fetch().finally(() => {
        this._inFlight = null;
      });
    }
    return this._inFlight;
  }

  async _fetch() {
    const params = { limit: 200 };
    if (this.filter) params.status = this.filter;
    try {
      const body = await this.api.call("GET", `${CHAT_API}/sessions`, { params });
      for (const session of body.sessions) this._known.set(session.id, session);
      this._order = body.sessions.map((s) => s.id);
      this.loaded = true;
      this.lastError = null;
      if (!this.filter) save(`${this._prefix}sessions`, body.sessions.slice(0, 50));
    } catch (exc) {
      this.lastError = exc;
      throw exc;
    } finally {
      this._changed();
    }
  }

  /** The session `id`, created for the caller when it does not exist yet. */
  async ensure(id, clientName = null) {
    try {
      const body = await this.api.call("GET", `${CHAT_API}/sessions/${encodeURIComponent(id)}`);
      return this._remember(body.session);
    } catch (exc) {
      if (!(exc instanceof RequestFailed) || exc.code !== "session_not_found") {
        if (exc instanceof RequestFailed && exc.transient) return this._placeholder(id, clientName);
        throw exc;
      }
    }
    try {
      return await this.create(clientName, id);
    } catch (exc) {
      // Created meanwhile (another tab, our own first send): it is ours if we can read it.
      if (!(exc instanceof RequestFailed) || exc.code !== "session_exists") throw exc;
      try {
        const body = await this.api.call("GET", `${CHAT_API}/sessions/${encodeURIComponent(id)}`);
        return this._remember(body.session);
      } catch {
        throw new Error(`the chat ${id} belongs to somebody else`);
      }
    }
  }

  /**
   * Create a session (a fresh id unless given). When the server cannot be reached the
   * session exists in this browser only; the first message sent into it creates it.
   */
  async create(clientName = null, id = newSessionId()) {
    const json = { id };
    if (clientName) json.client_name = clientName;
    try {
      const body = await this.api.call("POST", `${CHAT_API}/sessions`, { json });
      this.refreshSoon();
      return this._remember(body.session);
    } catch (exc) {
      if (exc instanceof RequestFailed && exc.transient) return this._placeholder(id, clientName);
      throw exc;
    }
  }

  /** Close (`closed`) or reopen (`active`) a session. */
  async setStatus(id, status) {
    const body = await this.api.call("PATCH", `${CHAT_API}/sessions/${encodeURIComponent(id)}`, {
      json: { status },
    });
    this.refreshSoon();
    return this._remember(body.session);
  }

  /** Note that a message was refused because the session is closed. */
  markClosed(id) {
    const session = this._known.get(id);
    if (session && session.status !== "closed") this._remember({ ...session, status: "closed" });
  }

  _placeholder(id, clientName) {
    const now = new Date().toISOString();
    const existing = this._known.get(id);
    if (existing) return existing;
    return this._remember({
      id,
      client_name: clientName,
      created_at: now,
      last_activity: now,
      status: "active",
      message_count: 0,
      last_message_id: null,
      owner_id: null,
      local: true,
    });
  }

  _remember(session) {
    this._known.set(session.id, session);
    if (!this._order.includes(session.id) && (!this.filter || this.filter === session.status)) {
      this._order.unshift(session.id);
    }
    this._changed();
    return session;
  }

  /** The reader has seen `count` messages of session `id` (counts only grow). */
  markSeen(id, count) {
    if (!id || !(count > (this._seen[id] ?? -1))) return;
    this._seen[id] = count;
    save(`${this._prefix}seen`, this._seen);
    this._changed();
  }

  /** Messages that arrived since the reader last had the session open. */
  unread(session) {
    const seen = this._seen[session.id];
    return Math.max(0, session.message_count - (seen ?? 0));
  }

  _changed() {
    for (const callback of [...this._listeners]) callback(this);
  }
}

/** Renders the list into `root` (an <ul>); `onOpen(id)` when one is picked. */
export class SessionListView {
  constructor(root, { onOpen }) {
    this.root = root;
    this.onOpen = onOpen;
    root.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-session-id]");
      if (button) this.onOpen(button.dataset.sessionId);
    });
  }

  /** Draw `sessions`; everything from the server goes in as text. */
  render(sessions, { currentId, unread, empty }) {
    const now = new Date();
    const items = sessions.map((session) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "session-item";
      button.dataset.sessionId = session.id;
      button.dataset.status = session.status;
      if (session.id === currentId) button.setAttribute("aria-current", "true");

      const top = document.createElement("span");
      top.className = "session-top";
      const name = document.createElement("span");
      name.className = "session-name";
      const title = sessionTitle(session);
      name.textContent = title;
      top.append(name);
      const count = session.id === currentId ? 0 : unread(session);
      if (count > 0) {
        const badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = count > 99 ? "99+" : String(count);
        badge.setAttribute("aria-label", `${count} unread`);
        top.append(badge);
      }

      const bottom = document.createElement("span");
      bottom.className = "session-sub";
      const status = document.createElement("span");
      status.className = `pill pill-${session.status}`;
      status.textContent = session.status;
      const when = document.createElement("time");
      const last = parseTime(session.last_activity);
      when.dateTime = session.last_activity || "";
      when.textContent = ago(last, now);
      when.title = longTime(last);
      bottom.append(status, when);
      if (title !== session.id) {
        // The id is shown once: as the title, or under the name the session was given.
        const id = document.createElement("span");
        id.className = "session-id";
        id.textContent = session.id;
        bottom.append(id);
      }

      button.append(top, bottom);
      li.append(button);
      return li;
    });
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = empty;
      items.push(li);
    }
    this.root.replaceChildren(...items);
  }
}
