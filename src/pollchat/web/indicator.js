// The connection indicator (connected / polling / error / offline) and the banner that explains
// a problem, counts down to the next attempt and offers to try at once.

const LABELS = Object.freeze({
  connected: "Connected",
  polling: "Connecting…",
  error: "Error",
  offline: "Offline",
});

const HINTS = Object.freeze({
  connected: "Connected: new messages arrive as soon as they are sent.",
  polling: "Connecting: asking the server for news.",
  error: "The server answered with an error; retrying by itself.",
  offline: "Offline: the server cannot be reached. Messages you send wait here and go out when it is back.",
});

/** Keeps the indicator and the banner in step with the polling service. */
export class ConnectionIndicator {
  constructor({ indicator, label, banner, bannerText, retry }, { onRetry }) {
    this.el = { indicator, label, banner, bannerText, retry };
    this.status = null;
    this.pending = 0;
    this._timer = null;
    retry.addEventListener("click", () => onRetry());
  }

  /** Show `status` (the service's connectionStatus) with `pending` unsent messages. */
  update(status, pending) {
    this.status = status;
    this.pending = pending;
    this._draw();
    const counting = status.nextPollAt !== null && status.state !== "connected";
    if (counting && this._timer === null) this._timer = setInterval(() => this._draw(), 1000);
    if (!counting && this._timer !== null) {
      clearInterval(this._timer);
      this._timer = null;
    }
  }

  _draw() {
    const { indicator, label, banner, bannerText, retry } = this.el;
    const status = this.status;
    if (!status) return;
    const state = status.state;
    indicator.dataset.state = state;
    label.textContent = LABELS[state] || state;
    let hint = HINTS[state] || "";
    if (state === "connected" && status.mode === "short") hint += " (short polls: long polls are being cut on the way)";
    indicator.title = hint;

    const waiting = this.pending
      ? ` ${this.pending} message${this.pending === 1 ? "" : "s"} waiting to be sent.`
      : "";
    let text = "";
    if (state === "offline" && !status.browserOnline) {
      text = `You are offline. Messages you send are kept on this device and go out when you are back online.${waiting}`;
    } else if (state === "offline" || (state === "error" && status.errorCount)) {
      const seconds = status.nextPollAt ? Math.max(0, Math.ceil((status.nextPollAt - Date.now()) / 1000)) : 0;
      const reason = state === "offline" ? "Cannot reach the server." : `The server answered: ${status.lastError}.`;
      text = `${reason}${seconds ? ` Trying again in ${seconds} s.` : " Trying again…"}${waiting}`;
    }
    banner.hidden = !text;
    banner.dataset.state = state;
    bannerText.textContent = text;
    retry.hidden = !text || !status.browserOnline;
  }
}
