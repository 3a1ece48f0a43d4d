// Signing in: the token from the sign-in form or from the address (`/#token=T&session=S`),
// kept in localStorage; the token is taken out of the address bar as soon as it is read.

import { load, save } from "./storage.js";

const TOKEN_KEY = "pollchat:token";

/** `{token, session}` from a location hash such as `#token=T&session=S` (either may be null). */
export function readFragment(hash) {
  const params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const token = (params.get("token") || "").trim() || null;
  const session = (params.get("session") || "").trim() || null;
  return { token, session };
}

/** Take the fragment out of the address bar (and so out of the history and bookmarks). */
export function scrubFragment() {
  const { pathname, search } = window.location;
  window.history.replaceState(window.history.state, "", pathname + search);
}

/** The stored token, or null. */
export function storedToken() {
  const token = load(TOKEN_KEY, null);
  return typeof token === "string" && token ? token : null;
}

/** Remember the token (null forgets it). */
export function storeToken(token) {
  save(TOKEN_KEY, token);
}

/** Whether `id` is a session id the server accepts. */
export function validSessionId(id) {
  return typeof id === "string" && /^[A-Za-z0-9._:-]{1,128}$/.test(id);
}
