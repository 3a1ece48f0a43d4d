"""Responders that answer as ``assistant``; ``create_responder`` picks one by name."""

from __future__ import annotations

from pollchat.assistants.base import Responder
from pollchat.assistants.echo import EchoResponder
from pollchat.domain.errors import ConfigurationError

ASSISTANTS = ("none", "echo")


def create_responder(name: str) -> Responder | None:
    """The responder called ``name``; None for ``none``."""
    if name == "none":
        return None
    if name == "echo":
        return EchoResponder()
    raise ConfigurationError(f"unknown assistant {name!r}; choose one of {', '.join(ASSISTANTS)}")


__all__ = ["ASSISTANTS", "Responder", "create_responder"]
