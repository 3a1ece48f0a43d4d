"""The rule book: who may see and do what, and the shapes and limits of what clients send.

Every layer asks here: the HTTP endpoints and schemas (patterns, limits), the services (who
may see a session, post a type, mark delivery) and storage (who may post into a session it
finds). A rule written anywhere else is a second copy that can drift.
"""

from __future__ import annotations

from pollchat.domain.records import Message, MessageType, NewMessage, Role, User

# Session ids are chosen by clients (the seed's client picks its own): 1-128 characters of
# a URL- and log-safe alphabet.
SESSION_ID_ALPHABET = "A-Za-z0-9._:-"
SESSION_ID_MAX = 128
SESSION_ID_PATTERN = rf"^[{SESSION_ID_ALPHABET}]{{1,{SESSION_ID_MAX}}}$"

CLIENT_MESSAGE_ID_MAX = 128
CLIENT_NAME_MAX = 200
USER_NAME_PATTERN = r"^[A-Za-z0-9._@-]{1,64}$"

PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 500
# The contract's ceiling for ``wait``; a server may set a lower one (``Settings.max_wait``).
WAIT_MAX = 60.0
# A cursor or a message id is far shorter; anything longer names nothing.
SINCE_MAX = 200
IF_NONE_MATCH_MAX = 500
READ_UP_TO_MAX = 64

STAFF_ROLES: frozenset[Role] = frozenset({"operator", "admin"})


def is_staff(user: User) -> bool:
    """Operators and admins see and answer every session."""
    return user.role in STAFF_ROLES


def may_see_session(user: User, owner_id: str) -> bool:
    """Whether ``user`` may see (read, poll, post into) a session owned by ``owner_id``.

    Anyone else is told the session does not exist, exactly as for a missing one.
    """
    return owner_id == user.id or is_staff(user)


def may_post_type(user: User, message_type: MessageType) -> bool:
    """Whether ``user`` may post messages of ``message_type``: members speak as ``user`` only."""
    return message_type == "user" or is_staff(user)


def may_speak_as(user: User, message_type: MessageType, owner_id: str) -> bool:
    """Whether ``user`` may post ``message_type`` into a session owned by ``owner_id``.

    In someone else's session staff answer as ``assistant`` only: nobody speaks as the member.
    """
    return owner_id == user.id or message_type == "assistant"


def may_reopen(user: User) -> bool:
    """Whether ``user`` may reopen a closed session: closing is final for members.

    A member closes its own chat when done; a session an operator closed stays closed, so a
    member starts a new session rather than reviving one somebody ended.
    """
    return is_staff(user)


def delivery_side(user: User, owner_id: str) -> MessageType | None:
    """The type of message whose fetch by ``user`` counts as delivery in a session of ``owner_id``.

    The owner receives ``assistant`` messages; staff receive the owner's ``user`` messages;
    anyone else is no side of the session.
    """
    if owner_id == user.id:
        return "assistant"
    return "user" if is_staff(user) else None


def may_manage_users(user: User) -> bool:
    """Only admins create and list users, or change another user's token."""
    return user.role == "admin"


def is_replay(item: NewMessage, stored: Message) -> bool:
    """Whether ``item``, sent with the ``client_message_id`` of ``stored``, is a retry of that send.

    A retry carries the same type and content; the same key with others is a client bug
    (``idempotency_conflict``), never a silent answer with a message the client did not send.
    A message edited since (an assistant's reply that grew) no longer holds the content it was
    sent with, so there the type alone decides: a lost acknowledgement must still be answered.
    """
    if item.type != stored.type:
        return False
    return item.content == stored.content or stored.edited_at is not None
