// What the page says about the connection.
//
// The message poller knows best (long polls held, cut or refused, backoff, short-poll fallback),
// but it speaks only once it has polled a chat: with no chat open, or before a chat's first poll
// has an outcome, its status is merely the one it starts with. Then the page's other requests
// (the chat list, the profile, sends) decide: the last one answered says the server is reachable
// (with an error when it answered with a transient failure, as the poller would), the last one
// unanswered says it is not. Before any outcome at all the page is connecting. The browser saying
// it has no network is the truth whoever speaks.

import { transientStatus } from "./api.js";

/** The poller's status once it has had an answer or a failure of its own. */
export function pollerHasSpoken(status) {
  return status.lastSuccessfulPoll !== null || status.errorCount > 0;
}

/** The last outcome of the page's requests, and the connection status it makes of the poller's. */
export class Reachability {
  /** @param {function(): void} onChange called when the last outcome says something new */
  constructor(onChange) {
    this.last = null;
    this._onChange = onChange;
  }

  /** Note one request's outcome (an ApiClient `onOutcome`). */
  note({ answered, status, statusText, error }) {
    let next;
    if (!answered) next = { state: "offline", lastError: error ? error.message : "no answer" };
    else if (transientStatus(status)) next = { state: "error", lastError: `HTTP ${status} ${statusText}`.trim() };
    else next = { state: "connected", lastError: null };
    const before = this.last;
    this.last = next;
    if (!before || before.state !== next.state || before.lastError !== next.lastError) this._onChange();
  }

  /** Forget what the last outcome said (the network went away: it may say something else now). */
  forget() {
    this.last = null;
    this._onChange();
  }

  /** The status to show, given the poller's `status` (a PollingChatService connectionStatus). */
  status(status) {
    if (!status.browserOnline || pollerHasSpoken(status)) return status;
    if (!this.last) return Object.freeze({ ...status, state: "polling" });
    const { state, lastError } = this.last;
    const errors = state === "connected" ? 0 : 1;
    return Object.freeze({ ...status, state, lastError, errorCount: errors, retryAttempts: errors });
  }
}
