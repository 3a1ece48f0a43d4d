// A resettable event for the loops of the polling service and the session list.

import { systemClock } from "./environment.js";

/** A resettable event: `wait(ms)` resolves true when set, false on timeout (timed by `clock`). */
export class Signal {
  constructor(clock = systemClock) {
    this._clock = clock;
    this._set = false;
    this._waiters = [];
  }

  get isSet() {
    return this._set;
  }

  set() {
    this._set = true;
    const waiters = this._waiters;
    this._waiters = [];
    waiters.forEach((resolve) => resolve(true));
  }

  clear() {
    this._set = false;
  }

  wait(ms = Infinity) {
    if (this._set) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer = null;
      const done = (value) => {
        if (timer !== null) this._clock.clearTimeout(timer);
        resolve(value);
      };
      this._waiters.push(done);
      if (Number.isFinite(ms)) {
        timer = this._clock.setTimeout(() => {
          this._waiters = this._waiters.filter((w) => w !== done);
          resolve(false);
        }, Math.max(0, ms));
      }
    });
  }
}
