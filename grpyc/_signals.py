"""SIGTERM and SIGINT handlers for a block of code: the servers' and the command's.

`handling_signals` installs a handler and puts the previous ones back;
`Server.close_on_signals` builds its graceful close on it, and the
``grpyc registry`` command uses `close_on_signals` for anything with a
``close()``. A handler runs between two bytecodes of whatever greenlet was
running: the handlers built here only schedule work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gevent
from gevent._hub_local import get_hub_if_exists

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
    # A plain-threads program gets no hub from us (`_streambase.in_gevent`).
    waker = _HubWaker() if get_hub_if_exists() is not None else None
    try:
        yield
    finally:
        if waker is not None:
            waker.close()
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)


class _HubWaker:
    """Wakes the main thread's hub when a signal comes, whichever thread the kernel gave it.

    Python runs a handler in the main thread, at its next bytecode. A signal
    delivered to another OS thread (gevent's threadpool keeps one) only sets
    a flag there, and a hub asleep in ``epoll_wait`` ran the handler when it
    next woke for something else: seconds later, or never on an idle server
    (measured: 4.0 s for a signal sent 0.5 s into a 4 s sleep). CPython's C
    handler also writes the signal number to the wakeup fd, in whatever
    thread it runs: a watcher on the other end of that pipe wakes the hub.
    The previous wakeup fd (asyncio sets one) comes back in `close`.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        # Not a reference of the loop: it must not keep a hub with nothing else running.
        self._watcher = gevent.get_hub().loop.io(self._read, 1, ref=False)  # it exists
        self._watcher.start(self._drain)

    def _drain(self) -> None:
        # Running this Python callback in the main thread is what runs the handler.
        with contextlib.suppress(OSError):
            os.read(self._read, 512)

    def close(self) -> None:
        self._watcher.close()
        signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)


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
