// The open conversation: messages in order with delivery marks, the composer, read marks.
//
// Message content is only ever set with textContent (or as text nodes): whatever a message
// says, it is shown, never run. Messages are ordered by the server's timestamp (creation
// order); ties, such as one batch stored in one instant, keep the order they were first seen
// in; our own messages that the server has not stored yet come last, in send order.

import { STATUS_MARKS, longTime, parseTime, shortTime } from "./format.js";

const NEAR_BOTTOM = 80;
const ANNOUNCE_CHARS = 300;
// Longer messages show folded, with a button to unfold them.
const LONG_CHARS = 1500;
const LONG_LINES = 24;

/** Fill `container` with `text`; ```fenced``` parts become code blocks, all of it as text. */
export function renderContent(container, text) {
  const parts = text.split("```");
  const nodes = [];
  parts.forEach((part, index) => {
    const code = index % 2 === 1;
    const closed = index < parts.length - 1;
    if (code && closed) {
      const match = /^([\w+#.-]{1,30})?\n/.exec(part);
      let body = match ? part.slice(match[0].length) : part;
      body = body.replace(/\n$/, "");
      const pre = document.createElement("pre");
      pre.className = "code";
      const element = document.createElement("code");
      element.textContent = body;
      if (match && match[1]) pre.dataset.language = match[1];
      pre.append(element);
      nodes.push(pre);
      return;
    }
    let piece = code ? "```" + part : part;
    // The line breaks that frame a code block belong to the block.
    if (index > 0 && !code && parts.length > 2) piece = piece.replace(/^\n/, "");
    if (index < parts.length - 2 && !code) piece = piece.replace(/\n$/, "");
    if (piece) {
      const span = document.createElement("span");
      span.className = "text";
      span.textContent = piece;
      nodes.push(span);
    }
  });
  container.replaceChildren(...nodes);
}

/**
 * The message list and the composer of the open session.
 *
 * `context` tells who is reading: `isMine(message)`, `authorOf(message)` and `otherType`
 * (the message type whose reading this reader reports; null when it reports none).
 */
export class ChatView {
  constructor(elements, { onSend, onRetry, onDiscard, onRead }) {
    this.el = elements;
    this.onSend = onSend;
    this.onRetry = onRetry;
    this.onDiscard = onDiscard;
    this.onRead = onRead;
    this.context = { isMine: () => false, authorOf: () => "", otherType: null, keyOf: (m) => `i:${m.id}` };
    this.entries = [];
    this._byKey = new Map();
    this._seq = 0;
    this._readPosted = null;
    this._readTimer = null;
    this.live = false;
    this._placeholders = [];
    this._measure = null;
    this._bindComposer();
    this._bindList();
  }

  _bindComposer() {
    const { form, input } = this.el;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        this.submit();
      }
    });
    input.addEventListener("input", () => this._grow());
    // A placeholder cut off mid-sentence says nothing: it is chosen again whenever the box resizes
    // (a rotated phone, a narrower window, the chat pane showing).
    if (typeof ResizeObserver !== "undefined") new ResizeObserver(() => this._fitPlaceholder()).observe(input);
  }

  _bindList() {
    const { list, jump } = this.el;
    let scheduled = false;
    list.addEventListener("scroll", () => {
      if (this._nearBottom()) jump.hidden = true;
      if (scheduled) return;
      scheduled = true;
      setTimeout(() => {
        scheduled = false;
        this.maybeMarkRead();
      }, 150);
    });
    jump.addEventListener("click", () => this.scrollToBottom());
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const entry = this._byKey.get(button.closest("li").dataset.key);
      if (!entry) return;
      if (button.dataset.action === "retry") this.onRetry(entry.message);
      if (button.dataset.action === "discard") this.onDiscard(entry.message);
      if (button.dataset.action === "expand") {
        entry.expanded = !entry.expanded;
        this._draw(entry);
      }
    });
  }

  /** Send what is typed (Enter, or the Send button). */
  submit() {
    const { input } = this.el;
    const text = input.value;
    if (!text.trim() || input.disabled) return;
    if (this.onSend(text) !== false) {
      input.value = "";
      this._grow();
    }
    input.focus();
  }

  _grow() {
    const { input } = this.el;
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, Math.max(120, window.innerHeight * 0.35))}px`;
  }

  /**
   * Allow or refuse typing (a closed session), with a note saying why.
   * @param {object} options `enabled`, `note`, and `placeholders`: longest first, the longest that fits shows
   */
  setComposer({ enabled, placeholders, note }) {
    const { input, send, note: noteEl } = this.el;
    input.disabled = !enabled;
    send.disabled = !enabled;
    this._placeholders = placeholders;
    this._fitPlaceholder();
    noteEl.hidden = !note;
    noteEl.textContent = note || "";
  }

  _fitPlaceholder() {
    const { input } = this.el;
    const choices = this._placeholders;
    if (!choices.length) return;
    const style = getComputedStyle(input);
    const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    if (!(room > 0)) {
      // Not laid out (the pane is hidden): fitted when it shows, by the ResizeObserver.
      input.placeholder = choices[choices.length - 1];
      return;
    }
    if (!this._measure) this._measure = document.createElement("canvas").getContext("2d");
    this._measure.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const fits = choices.find((text) => this._measure.measureText(text).width <= room);
    input.placeholder = fits || choices[choices.length - 1];
  }

  /** Forget every message (another session is opening). */
  reset() {
    this.entries = [];
    this._byKey.clear();
    this._readPosted = null;
    this.live = false;
    this.el.list.replaceChildren();
    this.el.jump.hidden = true;
  }

  _sortKey(entry) {
    const m = entry.message;
    const local = m.id.startsWith("local:");
    return [local ? 1 : 0, local ? "" : m.timestamp, entry.seq];
  }

  static _before(a, b) {
    for (let i = 0; i < a.length; i += 1) {
      if (a[i] < b[i]) return true;
      if (a[i] > b[i]) return false;
    }
    return false;
  }

  /** Show a new message or a change to one. */
  upsert(message, kind) {
    const key = this.context.keyOf(message);
    const stick = this._nearBottom();
    let entry = this._byKey.get(key);
    const isNew = !entry;
    if (isNew) {
      entry = { key, message, seq: (this._seq += 1), el: document.createElement("li") };
      this._byKey.set(key, entry);
    } else {
      entry.message = message;
      this.entries.splice(this.entries.indexOf(entry), 1);
    }
    this._place(entry);
    this._draw(entry);
    const mine = this.context.isMine(message);
    if (isNew && (stick || mine)) this.scrollToBottom();
    else if (isNew && !stick) this.el.jump.hidden = false;
    else if (stick) this.scrollToBottom();
    if (isNew && kind === "new" && !mine && this.live) this._announce(message);
    this.scheduleMarkRead();
  }

  /** How many of the shown messages the server has stored. */
  storedCount() {
    return this.entries.filter((e) => !e.message.id.startsWith("local:")).length;
  }

  /** Take a message away (a discarded failed send). */
  remove(message) {
    const entry = this._byKey.get(this.context.keyOf(message));
    if (!entry) return;
    this._byKey.delete(entry.key);
    this.entries.splice(this.entries.indexOf(entry), 1);
    entry.el.remove();
  }

  /** Draw every message again (who is reading changed). */
  redraw() {
    this.entries.forEach((entry) => this._draw(entry));
    this.scheduleMarkRead();
  }

  /** maybeMarkRead soon, once for a burst of changes (a page of history is one read mark). */
  scheduleMarkRead() {
    if (this._readTimer) return;
    this._readTimer = setTimeout(() => {
      this._readTimer = null;
      this.maybeMarkRead();
    }, 100);
  }

  _place(entry) {
    const key = this._sortKey(entry);
    let index = this.entries.length;
    while (index > 0 && ChatView._before(key, this._sortKey(this.entries[index - 1]))) index -= 1;
    this.entries.splice(index, 0, entry);
    const next = this.entries[index + 1];
    const { list } = this.el;
    if (entry.el.parentNode !== list || entry.el.nextSibling !== (next ? next.el : null)) {
      list.insertBefore(entry.el, next ? next.el : null);
    }
  }

  _draw(entry) {
    const { message } = entry;
    const mine = this.context.isMine(message);
    const li = entry.el;
    li.className = `msg ${mine ? "mine" : "theirs"} type-${message.type}`;
    li.dataset.key = entry.key;
    li.dataset.status = message.status;
    li.dataset.type = message.type;
    li.dataset.id = message.id;
    if (message.client_message_id) li.dataset.cmid = message.client_message_id;

    const bubble = document.createElement("div");
    bubble.className = "bubble";
    const author = document.createElement("div");
    author.className = "author";
    author.textContent = this.context.authorOf(message);
    const content = document.createElement("div");
    content.className = "content";
    renderContent(content, message.content);
    const lines = message.content.split("\n").length;
    const long = message.content.length > LONG_CHARS || lines > LONG_LINES;
    if (long && !entry.expanded) content.classList.add("clamped");

    const meta = document.createElement("div");
    meta.className = "meta";
    const when = parseTime(message.timestamp);
    const time = document.createElement("time");
    time.dateTime = message.timestamp;
    time.textContent = shortTime(when);
    time.title = longTime(when);
    meta.append(time);
    if (message.edited_at) {
      const edited = document.createElement("span");
      edited.className = "edited";
      edited.textContent = "edited";
      edited.title = longTime(parseTime(message.edited_at));
      meta.append(edited);
    }
    if (mine) {
      const { mark, label } = STATUS_MARKS[message.status] || STATUS_MARKS.sent;
      const status = document.createElement("span");
      status.className = `status status-${message.status}`;
      status.title = label;
      const glyph = document.createElement("span");
      glyph.className = "mark";
      glyph.setAttribute("aria-hidden", "true");
      glyph.textContent = mark;
      const word = document.createElement("span");
      word.className = "status-label";
      word.textContent = label;
      status.append(glyph, word);
      meta.append(status);
    }
    bubble.append(author, content);
    if (long) {
      const more = document.createElement("button");
      more.type = "button";
      more.className = "more";
      more.dataset.action = "expand";
      more.setAttribute("aria-expanded", String(Boolean(entry.expanded)));
      const size = `${lines > 1 ? `${lines} lines, ` : ""}${message.content.length} characters`;
      more.textContent = entry.expanded ? "Show less" : `Show all (${size})`;
      bubble.append(more);
    }
    bubble.append(meta);

    if (message.status === "failed") {
      const failure = document.createElement("div");
      failure.className = "failure";
      failure.setAttribute("role", "alert");
      const reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = `Not sent: ${message.error || "refused by the server"}`;
      const retry = document.createElement("button");
      retry.type = "button";
      retry.dataset.action = "retry";
      retry.className = "retry";
      retry.textContent = "Retry";
      const discard = document.createElement("button");
      discard.type = "button";
      discard.dataset.action = "discard";
      discard.className = "discard";
      discard.textContent = "Discard";
      failure.append(reason, retry, discard);
      bubble.append(failure);
    }
    li.replaceChildren(bubble);
  }

  _announce(message) {
    const text = message.content.length > ANNOUNCE_CHARS ? `${message.content.slice(0, ANNOUNCE_CHARS)}…` : message.content;
    this.el.announcer.textContent = `${this.context.authorOf(message)}: ${text}`;
  }

  _nearBottom() {
    const { list } = this.el;
    return list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM;
  }

  /** Scroll to the newest message. */
  scrollToBottom() {
    const { list, jump } = this.el;
    list.scrollTop = list.scrollHeight;
    jump.hidden = true;
  }

  /**
   * Report the other side's messages read once the newest of them is on screen in a visible
   * tab; at most one report per newest message (a failed report is tried again later).
   */
  maybeMarkRead() {
    const type = this.context.otherType;
    if (!type || document.visibilityState !== "visible") return;
    let last = null;
    for (let i = this.entries.length - 1; i >= 0; i -= 1) {
      const m = this.entries[i].message;
      if (m.type === type && !m.id.startsWith("local:") && !this.context.isMine(m)) {
        last = this.entries[i];
        break;
      }
    }
    if (!last || last.message.read || this._readPosted === last.message.id) return;
    const box = this.el.list.getBoundingClientRect();
    const rect = last.el.getBoundingClientRect();
    if (rect.bottom <= box.top || rect.top >= box.bottom || box.height === 0) return;
    const id = last.message.id;
    this._readPosted = id;
    Promise.resolve(this.onRead(last.message)).catch(() => {
      if (this._readPosted === id) this._readPosted = null;
    });
  }
}
