// Messages waiting to reach the server, in send order, kept in localStorage.
//
// localStorage is the source of truth: every operation re-reads the stored list, applies one
// change and writes it back, so two tabs of one user append to the same queue instead of
// overwriting each other's. Each item keeps its client_message_id for ever, so sending it again
// (after a reload, from another tab) can never store it twice. Messages the server refused
// are kept apart as `failed` until the user retries or discards them.

import { load, save } from "./storage.js";

/** An ordered queue of outgoing messages plus the ones the server refused. */
export class Outbox {
  /** @param {string|null} key the storage key; null keeps the queue in memory only */
  constructor(key = null) {
    this.key = key;
    this._memory = { pending: [], failed: [] };
  }

  _read() {
    if (this.key === null) return this._memory;
    const data = load(this.key, null);
    return {
      pending: Array.isArray(data?.pending) ? data.pending : [],
      failed: Array.isArray(data?.failed) ? data.failed : [],
    };
  }

  _write(data) {
    if (this.key === null) this._memory = data;
    else save(this.key, data.pending.length || data.failed.length ? data : null);
  }

  _update(change) {
    const data = this._read();
    change(data);
    this._write(data);
  }

  /** How many messages wait to be sent. */
  get size() {
    return this._read().pending.length;
  }

  /** Every message not yet acknowledged, oldest first. */
  pending() {
    return this._read().pending;
  }

  /** Messages the server refused, with `error` and `code`. */
  failed() {
    return this._read().failed;
  }

  /** The oldest `count` messages. */
  head(count) {
    return this._read().pending.slice(0, count);
  }

  /** Queue a message at the end (a retried one leaves the failed list). */
  add(item) {
    this._update((data) => {
      data.failed = data.failed.filter((i) => i.client_message_id !== item.client_message_id);
      if (!data.pending.some((i) => i.client_message_id === item.client_message_id)) data.pending.push(item);
    });
  }

  /** Forget acknowledged messages. */
  remove(ids) {
    const gone = new Set(ids);
    this._update((data) => {
      data.pending = data.pending.filter((i) => !gone.has(i.client_message_id));
    });
  }

  /** Move a refused message from the queue to the failed list. */
  fail(item, error, code) {
    this._update((data) => {
      data.pending = data.pending.filter((i) => i.client_message_id !== item.client_message_id);
      data.failed = data.failed.filter((i) => i.client_message_id !== item.client_message_id);
      data.failed.push({ ...item, error, code });
    });
  }

  /** Drop a message for good (pending or failed). */
  discard(clientMessageId) {
    this._update((data) => {
      data.pending = data.pending.filter((i) => i.client_message_id !== clientMessageId);
      data.failed = data.failed.filter((i) => i.client_message_id !== clientMessageId);
    });
  }

  /** Drop everything. */
  clear() {
    this._write({ pending: [], failed: [] });
  }
}

/** The request body that sends `item`. */
export function sendRequest(item) {
  const body = {
    content: item.content,
    session_id: item.session_id,
    client_message_id: item.client_message_id,
    type: item.type || "user",
  };
  if (item.metadata) body.metadata = item.metadata;
  if (item.client_name) body.client_name = item.client_name;
  return body;
}
