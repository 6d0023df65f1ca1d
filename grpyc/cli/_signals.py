"""SIGTERM and SIGINT close a service the command runs (here: the registry).

`grpyc.server.Server.close_on_signals` does the same for servers, with a
grace period; this one is the small form for anything with a ``close()``.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

import gevent

__all__ = ["close_on_signals"]

# How long the close may take after a signal before the command goes on exiting.
_CLOSE_WAIT = 5.0


@contextlib.contextmanager
def close_on_signals(close: Callable[[], None]) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT call ``close()`` in a greenlet.

    On the way out the previous handlers come back and the block waits up
    to `_CLOSE_WAIT` seconds for the closes it started.
    """
    closers: list[gevent.Greenlet] = []

    def on_signal(signum: int, frame: Any) -> None:
        # Runs between two bytecodes of any greenlet: only schedule.
        closers.append(gevent.spawn(close))

    previous = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        gevent.joinall(closers, timeout=_CLOSE_WAIT)
