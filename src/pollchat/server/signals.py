"""Answering parked long polls at once when the process is asked to stop.

uvicorn waits for open requests before it shuts an app down, and a long poll may be parked
for a minute. So the app chains its own handler in front of the server's SIGTERM/SIGINT
handler: the notifier is closed on the signal itself, parked polls answer at once with what
they have, and the server's own shutdown follows.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType

_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
