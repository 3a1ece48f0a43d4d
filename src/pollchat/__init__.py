"""pollchat: chat over plain HTTP polling."""

from __future__ import annotations

__version__ = "0.1.0"
