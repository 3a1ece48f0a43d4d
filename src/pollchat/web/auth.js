// Signing in: the token from the sign-in form or from the address (`/#token=T&session=S`),
// kept in localStorage; the token is taken out of the address bar as soon as it is read. A link
// with another account's token while somebody is signed in is looked up and used only when the
// reader accepts the switch: a link alone must not put what they type next into another account.

import { ApiClient, RequestFailed } from "./api.js";
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

/**
 * Whose account `token` opens, asked of the server before the token is used for anything else:
 * `{user}`, `{refused: true}` when the server does not accept it, or `{error}` when it cannot
 * tell now (unreachable, a server error).
 */
export async function whoseToken(token) {
  try {
    const body = await new ApiClient({ token }).call("GET", "/api/v1/admin/users/me");
    return { user: body.user };
  } catch (exc) {
    if (exc instanceof RequestFailed && exc.status === 401) return { refused: true };
    return { error: exc };
  }
}

/**
 * What to ask when a link holds a token while somebody is signed in.
 * @param {object} theirs what whoseToken found for the link's token
 * @param {object|null} mine the signed-in user, when known
 * @param {object} link `session` (the chat the link opens, or null) and `pending` (our unsent messages)
 */
export function linkQuestion(theirs, mine, { session = null, pending = 0 } = {}) {
  const me = mine ? mine.name : "the current account";
  const stay = mine ? `Stay as ${mine.name}` : "Stay signed in";
  if (theirs.refused) {
    return {
      title: "This link cannot sign you in",
      text: `The token in this link is not accepted. You are still signed in as ${me}.`,
      decline: "OK",
    };
  }
  const messages = `${pending} unsent message${pending === 1 ? "" : "s"}`;
  const waiting = pending ? ` Your ${messages} stay on this device and go out when you sign in as ${me} again.` : "";
  const chat = session ? ` and its chat ${session}` : "";
  if (theirs.user) {
    const { name, role } = theirs.user;
    return {
      title: "Switch account?",
      text: `This link opens the account of ${name} (${role})${chat}. You are signed in as ${me}.${waiting}`,
      accept: `Switch to ${name}`,
      decline: stay,
    };
  }
  return {
    title: "Switch account?",
    text:
      `This link opens another account, and whose cannot be checked now (${theirs.error.message}).` +
      ` You are signed in as ${me}.${waiting}`,
    accept: "Switch anyway",
    decline: stay,
  };
}
