"""Schema migrations, shared by the SQL backends: step ``n`` brings a database from version ``n`` to ``n + 1``.

Steps are only ever appended; a released step is never edited.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('member', 'operator', 'admin')),
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL REFERENCES users(id),
        client_name TEXT,
        created_at TEXT NOT NULL,
        last_activity TEXT NOT NULL,
        closed INTEGER NOT NULL DEFAULT 0,
        message_count INTEGER NOT NULL DEFAULT 0,
        last_message_id TEXT,
        head BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_owner_activity ON sessions (owner_id, last_activity);
    CREATE INDEX sessions_activity ON sessions (last_activity);
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id),
        user_id TEXT NOT NULL REFERENCES users(id),
        type TEXT NOT NULL CHECK (type IN ('user', 'assistant')),
        content TEXT NOT NULL,
        metadata TEXT,
        client_message_id TEXT,
        created_at TEXT NOT NULL,
        edited_at TEXT,
        created_seq BIGINT NOT NULL,
        change_seq BIGINT NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        read INTEGER NOT NULL DEFAULT 0
    );
    -- One row per (author, session, client_message_id): racing copies of a send store one row.
    CREATE UNIQUE INDEX messages_idempotency ON messages (user_id, session_id, client_message_id)
        WHERE client_message_id IS NOT NULL;
    -- A change sequence number belongs to exactly one message of its session.
    CREATE UNIQUE INDEX messages_change ON messages (session_id, change_seq);
    CREATE INDEX messages_created ON messages (session_id, created_seq);
    CREATE INDEX messages_pending ON messages (delivered, type, created_at);
    """,
    # Secrets shared by every instance on this database (the HTTP layer keys cursor and ETag
    # tags with one): each is inserted if absent, then read, so racing instances agree on one.
    """
    CREATE TABLE server_secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # Replies an assistant generates: which user message each answers, how its generation
    # stands (streaming, done, stopped, failed; NULL for a message nobody generated), and why
    # a failed one failed.
    """
    ALTER TABLE messages ADD COLUMN reply_to TEXT;
    ALTER TABLE messages ADD COLUMN generation TEXT
        CHECK (generation IS NULL OR generation IN ('streaming', 'done', 'stopped', 'failed'));
    ALTER TABLE messages ADD COLUMN error TEXT;
    """,
)
