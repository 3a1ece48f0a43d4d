// When to poll next: the seed's PollingStrategy with jitter (the Python client's semantics).
//
// Long polling is the default: the server holds the request, so the next poll goes out as soon
// as the previous one answers. Short polling adapts: `activeInterval` while the chat is busy,
// `inactiveInterval` when idle. After errors the delay grows by `backoffMultiplier` up to
// `maxInterval`. A hidden tab polls less often. Every delay gets random jitter so that clients
// cut off together by a server restart do not all come back in the same second; jitter never
// takes a delay past `maxInterval`, and only the server's own Retry-After may ask for longer.

export const DEFAULTS = Object.freeze({
  mode: "long", // "long" or "short"
  longPollWait: 25,
  baseInterval: 3,
  maxInterval: 30,
  backoffMultiplier: 1.5,
  activeInterval: 2,
  inactiveInterval: 10,
  activeWindow: 60,
  jitter: 0.2,
  sendRetryDelays: Object.freeze([1, 2, 4, 8]),
  // A hidden tab: a pause between long polls, and short-poll intervals multiplied.
  hiddenInterval: 10,
  hiddenMultiplier: 3,
});

/** Polling intervals in seconds. */
export class PollingStrategy {
  constructor(options = {}) {
    Object.assign(this, DEFAULTS, options);
    Object.freeze(this);
  }

  /** A copy with some values changed. */
  with(changes) {
    return new PollingStrategy({ ...this, ...changes });
  }

  /**
   * Seconds to wait before the next poll.
   * @param {object} state
   * @param {number} state.errors consecutive failed polls so far
   * @param {number|null} state.secondsSinceActivity since a message was last sent or received (null: never)
   * @param {boolean} [state.hidden] the page is not visible
   * @param {string} [state.mode] overrides `this.mode` (the service's adaptive fallback)
   */
  pollDelay({ errors, secondsSinceActivity, hidden = false, mode = this.mode, rng = Math.random }) {
    let delay;
    if (errors) {
      delay = Math.min(this.baseInterval * this.backoffMultiplier ** (errors - 1), this.maxInterval);
    } else if (mode === "long") {
      if (!hidden) return 0;
      delay = this.hiddenInterval;
    } else if (secondsSinceActivity !== null && secondsSinceActivity < this.activeWindow) {
      delay = this.activeInterval;
    } else if (secondsSinceActivity === null) {
      delay = this.baseInterval;
    } else {
      delay = this.inactiveInterval;
    }
    if (hidden && !errors && mode !== "long") delay *= this.hiddenMultiplier;
    return this.jittered(delay, rng);
  }

  /**
   * A copy asking for less than a server refused (400 wait_too_long), or null when it cannot go
   * lower. `maxWait` is the refusal's own field, the server's longest wait; a server that does
   * not send it gets half the wait in whole seconds, down to 1 s.
   */
  withLowerWait(maxWait) {
    if (typeof maxWait === "number" && maxWait > 0 && maxWait < this.longPollWait) {
      return this.with({ longPollWait: maxWait });
    }
    if (this.longPollWait > 1) return this.with({ longPollWait: Math.max(1, Math.floor(this.longPollWait / 2)) });
    return null;
  }

  /** Seconds before retry number `attempt` (1-based) of a send: 1, 2, 4, 8, 8, ... */
  sendDelay(attempt, rng = Math.random) {
    const delays = this.sendRetryDelays;
    return this.jittered(delays[Math.min(attempt, delays.length) - 1], rng);
  }

  /**
   * The pause for a server's `Retry-After: seconds`: at least that, jittered up to `maxInterval`.
   * Waiting less would be refused again; past `maxInterval` only the server may take the pause.
   */
  retryAfterDelay(seconds, rng = Math.random) {
    return Math.min(seconds * (1 + this.jitter * rng()), Math.max(seconds, this.maxInterval));
  }

  /** `delay` +- `jitter`, never more than `maxInterval`. */
  jittered(delay, rng = Math.random) {
    return Math.min(this.maxInterval, Math.max(0, delay * (1 + this.jitter * (2 * rng() - 1))));
  }
}
