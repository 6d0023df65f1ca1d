"""SIGTERM and SIGINT handlers for a block of code: the servers' and the command's.

`handling_signals` installs a handler and puts the previous ones back;
`Server.close_on_signals` builds its graceful close on it, and the
``grpyc registry`` command uses `close_on_signals` for anything with a
``close()``. A handler runs between two bytecodes of whatever greenlet was
running: the handlers built here only schedule work.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gevent

__all__ = ["close_on_signals", "handling_signals"]

# How long `close_on_signals` lets the closes it started run before the block ends.
_CLOSE_WAIT = 5.0


@contextlib.contextmanager
def handling_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Within this block SIGTERM and SIGINT call `handler`; the previous handlers come back.

    Does nothing outside the main thread, where Python cannot handle signals.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)


@contextlib.contextmanager
def close_on_signals(close: Callable[[], None]) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT call ``close()`` in a greenlet.

    On the way out the previous handlers come back and the block waits up
    to `_CLOSE_WAIT` seconds for the closes it started.
    """
    closers: list[gevent.Greenlet] = []

    def on_signal(signum: int, frame: Any) -> None:
        closers.append(gevent.spawn(close))

    try:
        with handling_signals(on_signal):
            yield
    finally:
        gevent.joinall(closers, timeout=_CLOSE_WAIT)
