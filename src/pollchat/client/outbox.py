"""Messages waiting to reach the server, in send order, optionally kept in a file.

The file is rewritten atomically (write, fsync, rename) on every change, so a client killed
at any moment finds on restart exactly the messages that were not yet acknowledged, each with
its original ``client_message_id``: resending them can never store one twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message not yet acknowledged."""

    client_message_id: str
    session_id: str
    content: str
    type: str = "user"
    created_at: str = ""
    metadata: dict[str, Any] | None = None

    def request(self, client_name: str | None) -> dict[str, Any]:
        """The body of a send request for this message."""
        body: dict[str, Any] = {
            "content": self.content,
            "session_id": self.session_id,
            "client_message_id": self.client_message_id,
            "type": self.type,
        }
        if self.metadata is not None:
            body["metadata"] = self.metadata
        if client_name:
            body["client_name"] = client_name
        return body


class Outbox:
    """An ordered queue of ``Outgoing`` messages plus the poll cursor, persisted when given a path."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._items: list[Outgoing] = []
        self.cursor: str | None = None
        if self._path is not None and self._path.exists():
            self._load(self._path)

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text("utf-8"))
        self._items = [Outgoing(**item) for item in data.get("pending", [])]
        self.cursor = data.get("cursor")

    def _save(self) -> None:
        if self._path is None:
            return
        tmp = self._path.with_name(self._path.name + ".tmp")
        payload = json.dumps({"pending": [asdict(i) for i in self._items], "cursor": self.cursor})
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)

    def __len__(self) -> int:
        return len(self._items)

    def pending(self) -> list[Outgoing]:
        """Every message not yet acknowledged, oldest first."""
        return list(self._items)

    def head(self, count: int) -> list[Outgoing]:
        """The oldest ``count`` messages."""
        return self._items[:count]

    def add(self, item: Outgoing) -> None:
        """Queue a message at the end."""
        self._items.append(item)
        self._save()

    def remove(self, client_message_ids: set[str]) -> None:
        """Forget acknowledged (or refused) messages."""
        self._items = [i for i in self._items if i.client_message_id not in client_message_ids]
        self._save()

    def set_cursor(self, cursor: str | None) -> None:
        """Remember where polling got to."""
        if cursor != self.cursor:
            self.cursor = cursor
            self._save()
