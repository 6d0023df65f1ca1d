"""RPyC's ``bind_threads`` addressing, so grpyc talks to stock peers that use it.

With ``bind_threads`` (or ``RPYC_BIND_THREADS=true``) every frame starts with
two 8-byte thread ids, the sender's and the recipient's (`framing.THREAD_IDS`).
A stock peer delivers a frame to the thread named as recipient (0: any
thread) and binds the thread that handles it to the sender. grpyc needs no
routing of its own (replies find their caller by ``seq``); it only addresses
what it sends so that a stock peer's waiting thread gets it:

- an answer goes to the thread that sent the request;
- a request made while serving a request of stock thread T (a callback at
  any depth) goes to T, which waits and will serve it, as stock-to-stock;
- any other request goes to 0.

grpyc's own id is one nonzero number per connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import greenlet

from grpyc.framing import Payload, ThreadFrame

__all__ = ["ThreadBinding"]

_MAX_ID = (1 << 64) - 1


class ThreadBinding:
    """Addresses of the frames of one connection in ``bind_threads`` mode."""

    __slots__ = ("_bound", "_channel", "own_id")

    def __init__(self, channel: Any) -> None:
        channel.thread_ids = True
        self._channel = channel
        self.own_id = (id(self) & _MAX_ID) or 1
        # greenlet -> the peer thread whose request it serves.
        self._bound: dict[Any, int] = {}

    def sender_of_last_frame(self) -> int:
        """The peer thread that sent the frame being handled now."""
        return int(self._channel.last_thread_ids[0])

    @contextlib.contextmanager
    def serving(self, peer_thread: int) -> Iterator[None]:
        """Within this block, requests made by this greenlet go to `peer_thread`."""
        me = greenlet.getcurrent()
        outer = self._bound.get(me)
        self._bound[me] = peer_thread
        try:
            yield
        finally:
            if outer is None:
                self._bound.pop(me, None)
            else:
                self._bound[me] = outer

    def request(self, payload: Payload) -> bytes:
        """A request from this greenlet, addressed to the peer thread it serves (or 0)."""
        return ThreadFrame(payload, (self.own_id, self._bound.get(greenlet.getcurrent(), 0)))

    def answer(self, payload: Payload, peer_thread: int) -> bytes:
        """An answer to a request of `peer_thread`."""
        return ThreadFrame(payload, (self.own_id, peer_thread))

    def unbound(self, payload: Payload) -> bytes:
        """A frame for any thread of the peer (DELs)."""
        return ThreadFrame(payload, (self.own_id, 0))
