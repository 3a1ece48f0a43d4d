// How times and delivery marks read, in the reader's own time zone and language.

const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayAndTime = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});
const full = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
const relative = typeof Intl.RelativeTimeFormat === "function" ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;

/** A Date from the server's ISO 8601 (microseconds are more than Date keeps; they are cut). */
export function parseTime(text) {
  if (!text) return null;
  const date = new Date(String(text).replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "14:05" today, "Mar 3, 14:05" on another day, in the reader's time zone. */
export function shortTime(date, now = new Date()) {
  if (!date) return "";
  return date.toDateString() === now.toDateString() ? timeOnly.format(date) : dayAndTime.format(date);
}

/** The full date and time with its zone, for a tooltip. */
export function longTime(date) {
  return date ? full.format(date) : "";
}

/** "just now", "5 min ago", "yesterday"... */
export function ago(date, now = new Date()) {
  if (!date) return "";
  const seconds = Math.round((date.getTime() - now.getTime()) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (!relative) return shortTime(date, now);
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 86400 * 7) return relative.format(Math.round(seconds / 86400), "day");
  return dayAndTime.format(date);
}

/** The mark and the word for a delivery status. */
export const STATUS_MARKS = Object.freeze({
  sending: { mark: "\u25F7", label: "Sending" },
  sent: { mark: "\u2713", label: "Sent" },
  delivered: { mark: "\u2713\u2713", label: "Delivered" },
  read: { mark: "\u2713\u2713", label: "Read" },
  failed: { mark: "!", label: "Not sent" },
});
