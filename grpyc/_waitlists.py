"""What greenlets of one cooperative connection wait for: a frame handled, the close, idleness.

Each is a list of gevent `Waiter`s; a greenlet may wait on several lists at
once and is woken by the first event (RPyC's ``serve``, ``serve_all`` and a
server's drain wait on these). Waking never switches: it schedules.
"""

from __future__ import annotations

import time
from typing import Any

from gevent.hub import Waiter

from grpyc._baton import TIMEOUT, ReadBaton
from grpyc._firstuse import NO_ITEMS, appended

__all__ = ["WaitLists"]


class WaitLists:
    """The frame, closed and idle waiters of one connection.

    A list is made when a greenlet first waits on it (`wait`,
    `grpyc._firstuse`): most connections never have anyone waiting.
    """

    __slots__ = ("_baton", "_gevent_hub", "closed", "frame", "idle")

    def __init__(self, gevent_hub: Any, baton: ReadBaton) -> None:
        self._gevent_hub = gevent_hub
        self._baton = baton
        self.frame: list[Waiter] | tuple[()] = NO_ITEMS
        self.closed: list[Waiter] | tuple[()] = NO_ITEMS
        self.idle: list[Waiter] | tuple[()] = NO_ITEMS

    def wait(self, timeout: float | None, *kinds: str) -> bool:
        """Wait until a waiter put on the lists named `kinds` ("frame",
        "closed", "idle") is woken (True) or `timeout` passes."""
        waiter = Waiter(self._gevent_hub)
        lists = []
        for kind in kinds:
            waiters = appended(getattr(self, kind), waiter)
            setattr(self, kind, waiters)
            lists.append(waiters)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        try:
            return bool(self._baton.sleep(waiter, deadline) != TIMEOUT)
        finally:
            for waiters in lists:
                if waiter in waiters:
                    waiters.remove(waiter)

    def wake(self, waiters: list[Waiter] | tuple[()]) -> None:
        """Wake every waiter on `waiters` (scheduled: nothing switches here)."""
        for waiter in list(waiters):
            waiters.remove(waiter)  # type: ignore[union-attr]  # not empty: a list
            self._gevent_hub.loop.run_callback(waiter.switch, None)

    def close(self) -> None:
        """The connection closed: wake who waits for it or for idleness; forget frame waiters."""
        self.wake(self.closed)
        self.wake(self.idle)
        self.frame = NO_ITEMS
