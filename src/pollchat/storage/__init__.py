"""Storage backends behind one protocol; ``create_storage`` picks one from a database URL."""

from __future__ import annotations

from pollchat.domain.errors import ConfigurationError
from pollchat.storage.base import Storage


def create_storage(url: str) -> Storage:
    """The backend for a database URL (``sqlite:///...`` or ``postgresql://...``)."""
    if url.startswith("sqlite://"):
        from pollchat.storage.sqlite import SQLiteStorage, sqlite_path

        try:
            return SQLiteStorage(sqlite_path(url))
        except ValueError as exc:
            raise ConfigurationError(str(exc), code="bad_database_url") from exc
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from pollchat.storage.postgres import PostgresStorage
        except ImportError as exc:
            raise ConfigurationError(
                "PostgreSQL storage needs asyncpg: pip install 'pollchat[postgres]'", code="missing_driver"
            ) from exc
        return PostgresStorage(url)
    raise ConfigurationError(
        f"unknown database URL {url!r}: use sqlite:///path.db or postgresql://user@host:port/db",
        code="bad_database_url",
    )


__all__ = ["Storage", "create_storage"]
