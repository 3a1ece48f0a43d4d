// Messages as the page holds them: frozen objects with a delivery status.
//
// A message the server has stored carries its id and server status (sent, delivered, read);
// one of ours that the server has not acknowledged yet has the id `local:<client_message_id>`
// and the status `sending`, or `failed` with the server's reason.

/** A message as the page shows it, from the server's JSON. */
export function fromApi(data) {
  const status = ["sent", "delivered", "read"].includes(data.status) ? data.status : "sent";
  return Object.freeze({
    id: String(data.id),
    type: data.type === "assistant" ? "assistant" : "user",
    content: String(data.content),
    timestamp: String(data.timestamp),
    session_id: String(data.session_id),
    status,
    client_message_id: data.client_message_id ?? null,
    user_id: data.user_id ?? null,
    metadata: data.metadata ?? null,
    edited_at: data.edited_at ?? null,
    delivered: Boolean(data.delivered) || status === "read",
    read: Boolean(data.read) || status === "read",
    error: null,
    code: null,
  });
}

/** What can change about a stored message; equal versions mean nothing new to show. */
export function version(message) {
  return `${message.status}\u0000${message.content}\u0000${message.edited_at ?? ""}`;
}

/** A copy of `message` with another status (and the reason when it failed). */
export function withStatus(message, status, error = null, code = null) {
  return Object.freeze({ ...message, status, error, code });
}

/** Our queued message `item` (an outbox entry) as the page shows it. */
export function localMessage(item, status = "sending", error = null, code = null) {
  return Object.freeze({
    id: `local:${item.client_message_id}`,
    type: item.type === "assistant" ? "assistant" : "user",
    content: item.content,
    timestamp: item.created_at,
    session_id: item.session_id,
    status,
    client_message_id: item.client_message_id,
    user_id: null,
    metadata: item.metadata ?? null,
    edited_at: null,
    delivered: false,
    read: false,
    error,
    code,
  });
}
