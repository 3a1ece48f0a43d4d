"""Runs the app on uvicorn: one process, or several workers sharing PostgreSQL.

The path is the same in both: the command line reads ``Settings``, ``run`` checks them and
builds one ``uvicorn.Config``, and every serving process (the only one, or each worker) builds
its app through ``serving_app``, which tunes the garbage collector and has parked long polls
answered at once on SIGTERM/SIGINT (``pollchat.server.signals``). uvicorn waits for open requests
before it shuts an app down, and a long poll may be parked for a minute.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from pollchat.domain.errors import ConfigurationError
from pollchat.server.app import PollchatApp, TokenAnnouncer, create_app
from pollchat.server.protocol import Config
from pollchat.settings import Settings

# How a parent process hands its settings to uvicorn's worker processes.
_WORKER_SETTINGS = "POLLCHAT_WORKER_SETTINGS_JSON"
_WORKER_APP = f"{__name__}:worker_app"


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections for a server holding many parked requests.

    Each parked long poll keeps a few hundred small objects alive, so with thousands parked
    the default thresholds run collections over a large heap again and again while one commit
    wakes them all. A higher first threshold makes collections rare; freezing what start-up
    created (``_Server.startup``, or the app's own start-up in a worker) takes it out of every
    later collection.
    """
    gc.set_threshold(50_000, 20, 100)


def serving_app(settings: Settings, *, announce_token: TokenAnnouncer | None = None) -> PollchatApp:
    """The app of a process that serves: the garbage collector tuned, exit signals chained."""
    tune_garbage_collector()
    return create_app(settings, announce_token=announce_token, wake_on_signals=True, freeze_after_startup=True)


def worker_app() -> PollchatApp:
    """The app of one worker process, from the settings its parent handed down."""
    return serving_app(Settings.model_validate(json.loads(os.environ[_WORKER_SETTINGS])))


class _Server(uvicorn.Server):
    """uvicorn re-raises the exit signal after its graceful shutdown, so the process would die
    of SIGTERM (exit status -15) even when it stopped exactly as asked. A stop on SIGTERM or
    SIGINT that completed its shutdown exits 0 instead.
    """

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
        # Past this many connections (or requests in flight) uvicorn answers 503 at once.
        "limit_concurrency": settings.max_connections,
        "header_timeout": settings.header_timeout,
    }


def _check(settings: Settings) -> None:
    if settings.workers > 1 and settings.database_url.startswith("sqlite"):
        raise ConfigurationError(
            "several workers need a shared database: use --database postgresql://... (SQLite serves one process)",
            code="workers_need_postgres",
        )


def run(settings: Settings, *, announce_token: TokenAnnouncer | None = None) -> None:
    """Serve until SIGINT or SIGTERM; the process then exits 0.

    Args:
        announce_token: called once start-up is done, with the first admin's token when it
            minted one, else None (one process only: workers start on a database whose admin
            exists or is set).
    """
    _check(settings)
    if settings.workers == 1:
        _Server(Config(serving_app(settings, announce_token=announce_token), **_options(settings))).run()
        return
    os.environ[_WORKER_SETTINGS] = settings.model_dump_json()
    config = Config(_WORKER_APP, factory=True, workers=settings.workers, **_options(settings))
    sock: socket.socket = config.bind_socket()
    # uvicorn's supervisor: it restarts a worker that dies and stops them all on SIGTERM; its
    # own exit is a plain return, so the command exits 0 after a requested stop.
    Multiprocess(config, sockets=[sock]).run()
