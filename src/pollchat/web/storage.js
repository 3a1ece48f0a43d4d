// Small wrappers around localStorage: JSON values, a private-mode fallback, per-token keys.
//
// Everything a signed-in browser keeps (its profile, the offline outbox, session marks) lives
// under a key derived from a fingerprint of the token, so two tokens used in one browser never
// see each other's queue. The fingerprint is not a secret: the token itself is stored too.

const memory = new Map();

function backend() {
  try {
    const probe = "pollchat:probe";
    window.localStorage.setItem(probe, "1");
    window.localStorage.removeItem(probe);
    return window.localStorage;
  } catch {
    return null;
  }
}

const local = typeof window === "undefined" ? null : backend();

/** Read a JSON value, or `fallback` when it is missing or unreadable. */
export function load(key, fallback = null) {
  const text = local ? local.getItem(key) : memory.get(key);
  if (text === null || text === undefined) return fallback;
  try {
    return JSON.parse(text);
  } catch {
    return fallback;
  }
}

/** Write a JSON value (null removes it). Returns false when storage refused it (quota). */
export function save(key, value) {
  if (value === null || value === undefined) {
    if (local) local.removeItem(key);
    memory.delete(key);
    return true;
  }
  const text = JSON.stringify(value);
  try {
    if (local) local.setItem(key, text);
    else memory.set(key, text);
    return true;
  } catch {
    memory.set(key, text);
    return false;
  }
}

/** Remove every key that starts with `prefix`. */
export function removePrefix(prefix) {
  if (local) {
    const keys = [];
    for (let i = 0; i < local.length; i += 1) {
      const key = local.key(i);
      if (key && key.startsWith(prefix)) keys.push(key);
    }
    keys.forEach((key) => local.removeItem(key));
  }
  for (const key of [...memory.keys()]) if (key.startsWith(prefix)) memory.delete(key);
}

/** A short stable fingerprint of a token (FNV-1a, 2 x 32 bits), to name its storage keys. */
export function fingerprint(token) {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ token.length;
  for (let i = 0; i < token.length; i += 1) {
    const c = token.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x5bd1e995) >>> 0;
  }
  return a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0");
}

/** A random UUID: crypto.randomUUID where the page is a secure context, else getRandomValues. */
export function uuid() {
  if (typeof crypto !== "undefined" && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
