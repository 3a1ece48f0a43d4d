// The page: signs in, wires the polling service, the session list and the chat view together.

import { ApiClient, RequestFailed } from "./api.js";
import {
  linkQuestion,
  readFragment,
  scrubFragment,
  storeToken,
  storedToken,
  validSessionId,
  whoseToken,
} from "./auth.js";
import { ChatView } from "./chatview.js";
import { ChoiceDialog } from "./dialog.js";
import { ConnectionIndicator } from "./indicator.js";
import { Outbox } from "./outbox.js";
import { PollingChatService } from "./polling.js";
import { Reachability } from "./reachability.js";
import { SessionDirectory, SessionListView, sessionTitle } from "./sessions.js";
import { Signal } from "./signal.js";
import { fingerprint, load, removePrefix, save } from "./storage.js";

const $ = (id) => document.getElementById(id);
const OPERATOR_ROLES = new Set(["operator", "admin"]);
// The message box shows the longest of these that fits its width.
const USER_PLACEHOLDERS = [
  "Write a message (Enter sends, Shift+Enter starts a new line)",
  "Write a message (Enter sends)",
  "Write a message",
];
const ASSISTANT_PLACEHOLDERS = [
  "Reply as the assistant (Enter sends, Shift+Enter starts a new line)",
  "Reply as the assistant (Enter sends)",
  "Reply as the assistant",
  "Reply",
];

/** One signed-in browser tab. */
class App {
  constructor() {
    this.token = null;
    this.prefix = "";
    this.api = null;
    this.profile = null;
    this.service = null;
    this.directory = null;
    this.reachability = null;
    this.current = null;
    this._unsubscribe = [];
    this._profileWake = new Signal();
    this._linkAsked = 0;
    this.choice = new ChoiceDialog({
      dialog: $("choice"),
      title: $("choice-title"),
      text: $("choice-text"),
      accept: $("choice-accept"),
      decline: $("choice-decline"),
    });
    this.view = new ChatView(
      {
        list: $("messages"),
        jump: $("jump"),
        form: $("composer"),
        input: $("input"),
        send: $("send"),
        note: $("composer-note"),
        announcer: $("announcer"),
      },
      {
        onSend: (text) => this.send(text),
        onRetry: (message) => this.service && this.service.retry(message),
        onDiscard: (message) => this.service && this.service.discard(message),
        onRead: (message) => this.markRead(message),
      },
    );
    this.indicator = new ConnectionIndicator(
      {
        indicator: $("connection"),
        label: $("connection-label"),
        banner: $("banner"),
        bannerText: $("banner-text"),
        retry: $("retry-now"),
      },
      { onRetry: () => this.retryNow() },
    );
    this.list = new SessionListView($("sessions"), { onOpen: (id) => this.openSession(id) });
    this._bindPage();
  }

  _bindPage() {
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.signInWithForm($("token-input").value.trim());
    });
    $("signout").addEventListener("click", () => this.signOutClicked());
    $("back").addEventListener("click", () => this.showPane("list"));
    $("filter").addEventListener("change", (event) => this.directory && this.directory.setFilter(event.target.value));
    $("new-session").addEventListener("submit", (event) => {
      event.preventDefault();
      this.createSession($("client-name").value.trim() || null);
    });
    $("close-session").addEventListener("click", () => this.toggleClosed());
    window.addEventListener("hashchange", () => this.followFragment());
    window.addEventListener("storage", (event) => {
      if (this.service && event.key === `${this.prefix}outbox`) this.service.notifyOutboxChanged();
      // Signed out in another tab: this one follows.
      if (this.token && event.key === "pollchat:token" && event.newValue === null) {
        this.stop().then(() => this.showSignIn());
      }
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState !== "visible") return;
      this.view.maybeMarkRead();
      this._seeCurrent();
    });
    window.addEventListener("online", () => {
      this._profileWake.set();
      if (this.directory) this.directory.refreshSoon();
    });
    window.addEventListener("offline", () => this.reachability && this.reachability.forget());
    // Relative times ("5 min ago") age; a read mark may have failed and be due again.
    setInterval(() => {
      if (!this.directory) return;
      this.renderSessions();
      this.view.maybeMarkRead();
    }, 30000);
  }

  // signing in and out

  /** Start from the address and localStorage. */
  boot() {
    const { token, session } = readFragment(window.location.hash);
    if (window.location.hash) scrubFragment();
    const stored = storedToken();
    if (token && stored && token !== stored) {
      // Whoever is signed in stays so until the link's account is known (and, if another, accepted).
      this.start(stored, {});
      this.followLink(token, validSessionId(session) ? session : null);
      return;
    }
    if (token) storeToken(token);
    const use = token || stored;
    if (!use) {
      this.showSignIn();
      return;
    }
    this.start(use, { session: validSessionId(session) ? session : null, create: Boolean(session) });
  }

  async followFragment() {
    const { token, session } = readFragment(window.location.hash);
    if (!token && !session) return;
    scrubFragment();
    const target = validSessionId(session) ? session : null;
    if (token && token !== this.token) {
      if (this.token) await this.followLink(token, target);
      else await this.switchTo(token, target);
    } else if (target && this.token) {
      this.openSession(target, { create: true });
    }
  }

  /**
   * A link holding `token` while somebody is signed in. The token is looked up first: the same
   * user's token signs in as any link does; another account's (or one that cannot be checked
   * now) is used only when the reader says so, and declining leaves everything as it was.
   */
  async followLink(token, session) {
    const asked = ++this._linkAsked;
    const signedIn = this.token;
    const [theirs, mine] = await Promise.all([whoseToken(token), this.whoAmI()]);
    if (asked !== this._linkAsked) return;
    if (!this.token) {
      await this.switchTo(token, session);
      return;
    }
    if (this.token !== signedIn) {
      await this.followLink(token, session);
      return;
    }
    if (theirs.user && mine && theirs.user.id === mine.id) {
      await this.switchTo(token, session);
      return;
    }
    const pending = this.service ? this.service.outbox.size : 0;
    const accepted = await this.choice.ask(linkQuestion(theirs, mine, { session, pending }));
    if (accepted && asked === this._linkAsked) await this.switchTo(token, session);
  }

  /** The signed-in user: the profile when known, else asked of the server (null when it cannot say). */
  async whoAmI() {
    if (this.profile) return this.profile;
    const { token, api } = this;
    try {
      const body = await api.call("GET", "/api/v1/admin/users/me");
      return this.token === token ? body.user : null;
    } catch {
      return null;
    }
  }

  /** Sign in with `token` instead of whoever is signed in, opening `session` when given. */
  async switchTo(token, session) {
    await this.stop();
    storeToken(token);
    this.start(token, { session, create: Boolean(session) });
  }

  showSignIn(error = null) {
    document.title = "pollchat: sign in";
    $("app").hidden = true;
    $("signin").hidden = false;
    const message = $("signin-error");
    message.hidden = !error;
    message.textContent = error || "";
    $("token-input").value = "";
    $("token-input").focus();
  }

  async signInWithForm(token) {
    if (!token) return;
    const button = $("signin-button");
    button.disabled = true;
    try {
      const found = await whoseToken(token);
      if (found.user) {
        storeToken(token);
        this.start(token, {});
      } else {
        const error = found.refused ? null : found.error.message;
        this.showSignIn(error ? `Cannot check the token now (${error}). Try again.` : "That token was not accepted.");
      }
    } finally {
      button.disabled = false;
    }
  }

  signOutClicked() {
    const button = $("signout");
    const pending = this.service ? this.service.outbox.size : 0;
    if (pending && button.dataset.confirm !== "1") {
      button.dataset.confirm = "1";
      button.textContent = `Discard ${pending} unsent and sign out?`;
      setTimeout(() => {
        button.dataset.confirm = "";
        button.textContent = "Sign out";
      }, 5000);
      return;
    }
    button.dataset.confirm = "";
    button.textContent = "Sign out";
    this.signOut();
  }

  async signOut() {
    const prefix = this.prefix;
    await this.stop();
    // A shared computer keeps nothing of this user: token, queue, cached lists.
    if (prefix) removePrefix(prefix);
    storeToken(null);
    this.showSignIn();
  }

  /** Sign in with `token` and start polling. */
  start(token, { session = null, create = false }) {
    this.token = token;
    this.prefix = `pollchat:${fingerprint(token)}:`;
    const reachability = new Reachability(() => this.reachability === reachability && this.renderConnection());
    this.reachability = reachability;
    this.api = new ApiClient({ token, onOutcome: (outcome) => reachability.note(outcome) });
    this.profile = load(`${this.prefix}profile`, null);
    this.service = new PollingChatService({ api: this.api, outbox: new Outbox(`${this.prefix}outbox`) });
    this.directory = new SessionDirectory({ api: this.api, prefix: this.prefix });
    this._unsubscribe = [
      this.service.on("message", (event) => this.onMessage(event)),
      this.service.on("status", () => this.renderConnection()),
      this.service.on("synced", () => this.onSynced()),
      this.service.on("unauthorized", () => this.unauthorized()),
    ];
    this.directory.onChange(() => {
      this._seeCurrent();
      this.renderSessions();
      if (this.current) this.renderHeader();
    });
    $("signin").hidden = true;
    $("app").hidden = false;
    document.title = "pollchat";
    this.applyProfile();
    this.renderConnection();
    this.service.startPolling();
    this.directory.start();
    this.loadProfile(token);
    const target = session || load(`${this.prefix}current`, null);
    this.current = null;
    this.view.reset();
    if (target) this.openSession(target, { create });
    else this.showChatPane(false);
    this.renderSessions();
  }

  async stop() {
    const service = this.service;
    const directory = this.directory;
    this._unsubscribe.forEach((off) => off());
    this._unsubscribe = [];
    this.token = null;
    this.service = null;
    this.directory = null;
    this.reachability = null;
    this.current = null;
    this.profile = null;
    this._profileWake.set();
    this.view.reset();
    await Promise.allSettled([service && service.stopPolling(), directory && directory.stop()]);
  }

  unauthorized() {
    this.stop().then(() => {
      storeToken(null);
      this.showSignIn("This token is no longer accepted. Sign in again.");
    });
  }

  async loadProfile(token) {
    // Who we are decides the role (inbox or not) and which messages are ours; without an
    // answer the page works from the last known profile and keeps asking.
    for (let attempt = 0; this.token === token; attempt += 1) {
      try {
        const body = await this.api.call("GET", "/api/v1/admin/users/me");
        if (this.token !== token) return;
        this.profile = body.user;
        save(`${this.prefix}profile`, body.user);
        this.applyProfile();
        return;
      } catch (exc) {
        if (this.token !== token) return;
        if (exc instanceof RequestFailed && exc.status === 401) {
          this.unauthorized();
          return;
        }
      }
      this._profileWake.clear();
      await this._profileWake.wait(Math.min(30, 2 * 1.5 ** attempt) * 1000);
    }
  }

  get isOperator() {
    return Boolean(this.profile && OPERATOR_ROLES.has(this.profile.role));
  }

  applyProfile() {
    const me = $("me");
    me.textContent = this.profile ? `${this.profile.name} · ${this.profile.role}` : "";
    me.title = this.profile ? `Signed in as ${this.profile.name} (${this.profile.id})` : "";
    $("list-title").textContent = this.isOperator ? "Inbox" : "Your chats";
    document.body.dataset.role = this.profile ? this.profile.role : "";
    if (this.current) {
      this.view.context = this.contextFor(this.current);
      this.view.redraw();
      this.renderHeader();
    }
    this.renderSessions();
  }

  // sessions

  renderSessions() {
    if (!this.directory) return;
    const directory = this.directory;
    let empty = "No chats yet. Start one above.";
    if (!directory.loaded && directory.lastError) empty = "Cannot load the chats right now.";
    else if (!directory.loaded) empty = "Loading…";
    else if (directory.filter) empty = `No ${directory.filter} chats.`;
    this.list.render(directory.sessions, {
      currentId: this.current,
      unread: (session) => directory.unread(session),
      empty,
    });
  }

  _seeCurrent() {
    // What the open chat shows in a visible tab is seen: the list's count, or what the view
    // holds when the list has not caught up yet.
    if (!this.directory || !this.current || document.visibilityState !== "visible") return;
    const session = this.directory.get(this.current);
    const count = Math.max(session ? session.message_count : 0, this.view.storedCount());
    this.directory.markSeen(this.current, count);
  }

  async createSession(clientName) {
    if (!this.directory) return;
    try {
      const session = await this.directory.create(clientName);
      $("client-name").value = "";
      this.openSession(session.id);
      $("input").focus();
    } catch (exc) {
      this.showNote(`Cannot start a chat: ${exc.message}`);
    }
  }

  /** Show session `id` (created for us when `create` and it does not exist). */
  openSession(id, { create = false } = {}) {
    if (!this.service || !validSessionId(id)) return;
    const { service, directory } = this;
    const known = directory.get(id);
    if (id !== this.current) {
      this.current = id;
      save(`${this.prefix}current`, id);
      this.view.reset();
      this.view.context = this.contextFor(id);
      for (const message of service.localMessages(id)) this.view.upsert(message, "new");
      // An unknown session is looked up (and created when asked) before polling it, so the
      // poller does not race the creation; an unreachable server does not hold the poller up.
      // A chat created here has no name: its title is its id in every view and on every load.
      const ready =
        create || !known
          ? directory.ensure(id).catch((exc) => {
              if (this.current === id) this.showNote(`Cannot open this chat: ${exc.message}`);
            })
          : Promise.resolve();
      ready.then(() => {
        if (this.current !== id || this.service !== service) return;
        service.openSession(id);
        this.view.context = this.contextFor(id);
        this.view.redraw();
        this.renderHeader();
      });
    }
    this.showChatPane(true);
    this.showPane("chat");
    this.renderHeader();
    this.renderSessions();
    this._seeCurrent();
  }

  /** Who is reading the session: which messages are ours, and whose reading we report. */
  contextFor(sessionId) {
    const service = this.service;
    const directory = this.directory;
    const me = this.profile;
    const session = () => directory && directory.get(sessionId);
    const isMine = (m) =>
      m.id.startsWith("local:") || (service && service.isOwn(m.client_message_id)) || Boolean(me && m.user_id === me.id);
    let otherType = null;
    const s = session();
    if (s && me && s.owner_id) {
      if (s.owner_id === me.id) otherType = "assistant";
      else if (OPERATOR_ROLES.has(me.role)) otherType = "user";
    }
    return {
      otherType,
      isMine,
      keyOf: (m) =>
        m.client_message_id && service && service.isOwn(m.client_message_id) ? `c:${m.client_message_id}` : `i:${m.id}`,
      authorOf: (m) => {
        if (isMine(m)) return "You";
        if (m.type === "user") return (session() && session().client_name) || "Client";
        return "Assistant";
      },
    };
  }

  /** The type our messages take here: operators answer other people's sessions as `assistant`. */
  sendType(sessionId) {
    const session = this.directory && this.directory.get(sessionId);
    if (this.isOperator && session && session.owner_id && session.owner_id !== this.profile.id) return "assistant";
    return "user";
  }

  renderHeader() {
    const id = this.current;
    if (!id || !this.directory) return;
    const session = this.directory.get(id);
    const closed = Boolean(session && session.status === "closed");
    const title = sessionTitle(session, id);
    $("chat-title").textContent = title;
    document.title = `${title} · pollchat`;
    const type = this.sendType(id);
    const parts = [];
    if (title !== id) parts.push(id);
    if (type === "assistant") parts.push("you reply as the assistant");
    $("chat-sub").textContent = parts.join(" · ");
    const pill = $("chat-status");
    pill.textContent = session ? session.status : "new";
    pill.className = `pill pill-${session ? session.status : "active"}`;
    const toggle = $("close-session");
    // Closing is final for members: only operators and admins reopen a closed chat.
    const mayReopen = this.isOperator;
    toggle.textContent = closed ? "Reopen" : "Close";
    toggle.hidden = !session || Boolean(session.local) || (closed && !mayReopen);
    let note = null;
    if (closed) {
      note = mayReopen
        ? "This chat is closed. Reopen it to write again."
        : "This chat is closed. Start a new chat to write again.";
    }
    this.view.setComposer({
      enabled: !closed,
      placeholders: type === "assistant" ? ASSISTANT_PLACEHOLDERS : USER_PLACEHOLDERS,
      note,
    });
  }

  async toggleClosed() {
    const id = this.current;
    const session = id && this.directory && this.directory.get(id);
    if (!session) return;
    const button = $("close-session");
    button.disabled = true;
    try {
      await this.directory.setStatus(id, session.status === "closed" ? "active" : "closed");
    } catch (exc) {
      this.showNote(`Cannot change the chat: ${exc.message}`);
    } finally {
      button.disabled = false;
    }
  }

  showNote(text) {
    const note = $("composer-note");
    note.hidden = false;
    note.textContent = text;
  }

  showChatPane(open) {
    $("chat-pane").hidden = !open;
    $("chat-empty").hidden = open;
  }

  /** On a narrow screen one pane shows at a time. */
  showPane(pane) {
    document.body.dataset.pane = pane;
    if (pane === "chat") this.view.scrollToBottom();
  }

  // messages

  send(text) {
    const id = this.current;
    if (!this.service || !id) return false;
    const session = this.directory.get(id);
    if (session && session.status === "closed") return false;
    this.service.enqueue(text, {
      sessionId: id,
      type: this.sendType(id),
      clientName: session ? session.client_name : null,
    });
    return true;
  }

  markRead(message) {
    if (!this.service) return Promise.resolve();
    return this.service.markRead(message.session_id, message.id);
  }

  onMessage({ kind, message }) {
    if (message.status === "failed" && message.code === "session_closed") this.directory.markClosed(message.session_id);
    if (kind === "new" || kind === "update") this.directory.refreshSoon();
    this.renderConnection();
    if (message.session_id !== this.current) return;
    if (kind === "discard") this.view.remove(message);
    else this.view.upsert(message, kind);
    if (kind === "new" || !message.id.startsWith("local:")) this._seeCurrent();
  }

  /** The indicator and the banner: the poller's status, or what the page's other requests found. */
  renderConnection() {
    if (!this.service || !this.reachability) return;
    const status = this.reachability.status(this.service.connectionStatus);
    this.indicator.update(status, this.service.outbox.size);
    document.body.dataset.connection = status.state;
    if (status.state === "connected") {
      this._profileWake.set();
      this.view.maybeMarkRead();
    }
  }

  /** "Retry now": everything waiting to ask the server asks now. */
  retryNow() {
    if (this.service) this.service.wake();
    if (this.directory) this.directory.refreshSoon();
    this._profileWake.set();
  }

  onSynced() {
    this.view.live = true;
    this.view.scrollToBottom();
    this.view.maybeMarkRead();
  }
}

const app = new App();
window.pollchat = app;
app.boot();
