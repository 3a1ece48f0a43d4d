"""Loopback benchmark of pollchat against a bare ASGI ceiling: ``python -m bench.run``."""
