"""Runs the app on uvicorn: one process, or several workers sharing PostgreSQL.

uvicorn waits for open requests before it shuts an app down, and a long poll may be parked
for a minute. So the app chains its own handler in front of the server's SIGTERM/SIGINT
handler: the notifier is closed on the signal itself, parked polls answer at once with what
they have, and the server's own shutdown follows. This works for uvicorn's worker processes
too, since each worker builds its app (and installs the chain) itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from pollchat.domain.errors import ConfigurationError
from pollchat.settings import Settings

_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How a parent process hands its settings to uvicorn's worker processes.
_WORKER_SETTINGS = "POLLCHAT_WORKER_SETTINGS_JSON"


def chain_exit_signals(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on the event loop when SIGINT/SIGTERM arrives, then the previous handler.

    Returns:
        A function that puts the previous handlers back.
    """
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in _EXIT_SIGNALS}

    def handler(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        before = previous[signal.Signals(sig)]
        if callable(before):
            before(sig, frame)
        elif before == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in _EXIT_SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            signal.signal(sig, before)

    return restore


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections for a server holding many parked requests.

    Each parked long poll keeps a few hundred small objects alive, so with thousands parked
    the default thresholds run collections over a large heap again and again while one commit
    wakes them all. A higher first threshold makes collections rare; freezing what start-up
    created takes it out of every later collection.
    """
    gc.set_threshold(50_000, 20, 100)


class _Server(uvicorn.Server):
    """uvicorn re-raises the exit signal after its graceful shutdown, so the process would die
    of SIGTERM (exit status -15) even when it stopped exactly as asked. A stop on SIGTERM or
    SIGINT that completed its shutdown exits 0 instead.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        gc.freeze()  # what start-up built lives as long as the process: stop scanning it

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def _options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.log_level == "debug",
        # Longer than any long poll, so a proxy's keep-alive connection is not cut under it.
        "timeout_keep_alive": 75,
        "timeout_graceful_shutdown": 10,
        "server_header": False,
    }


def worker_app() -> FastAPI:
    """The app of one worker process, from the settings its parent handed down."""
    from pollchat.app import create_app

    settings = Settings.model_validate(json.loads(os.environ[_WORKER_SETTINGS]))
    tune_garbage_collector()
    return create_app(settings, wake_on_signals=True)


def run(settings: Settings, *, app: FastAPI | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    if settings.workers == 1:
        tune_garbage_collector()
        if app is None:
            from pollchat.app import create_app

            app = create_app(settings, wake_on_signals=True)
        _Server(uvicorn.Config(app, **_options(settings))).run()
        return
    if settings.database_url.startswith("sqlite"):
        raise ConfigurationError(
            "several workers need a shared database: use --database postgresql://... (SQLite serves one process)",
            code="workers_need_postgres",
        )
    os.environ[_WORKER_SETTINGS] = settings.model_dump_json()
    uvicorn.run("pollchat.server:worker_app", factory=True, workers=settings.workers, **_options(settings))
