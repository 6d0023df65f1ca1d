"""Graceful close of a server's connections.

Each connection is closed as soon as it has no request of its peer in
flight; when the grace period ends (or the server is told to hurry) the
rest are closed too, their callers getting `EOFError`. Nothing polls: one
greenlet per connection waits on `Connection.wait_idle` and on the
connection's end, bounded by the grace period. Which connections a server
has, and when to drain them, is `server`'s business.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from gevent import Greenlet
from gevent.event import Event
from gevent.pool import Group

__all__ = ["CLOSE_WAIT", "Drain"]

# conn.close() waits up to the connection's close_timeout (2 s by default)
# for the peer's answer; this bounds that wait for all connections at once.
CLOSE_WAIT = 5.0
# A client usually closes its connection right after its last call. A
# connection whose calls just finished gets this long for its client to do
# so before the server sends CLOSE: a stock RPyC client that handles the
# server's CLOSE while closing itself fails in close() (rpyc 6.0.2 cleans up
# twice and raises AttributeError).
LINGER = 0.5


class Drain:
    """Closes connections once idle, within one grace period.

    Args:
        grace_period: seconds, from creation, that calls in flight get.
        hurry: when set, the rest of the grace period is skipped.
        close_connection: closes one connection politely (CLOSE to the peer).
        logger: where connections cut by the grace period are counted.
    """

    def __init__(
        self,
        grace_period: float,
        hurry: Event,
        close_connection: Callable[[Any], None],
        logger: logging.Logger,
    ) -> None:
        self._grace_period = grace_period
        self._deadline = time.monotonic() + grace_period
        self._hurry = hurry
        self._close_connection = close_connection
        self._logger = logger
        self._group = Group()
        # Connections not yet being closed, each with the greenlet waiting for it.
        self._waiting: dict[Any, Greenlet] = {}
        # Of those, the ones idle now, giving their client time to close.
        self._lingering: set[Any] = set()
        self._all_settled = Event()
        self._all_settled.set()

    def _left(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def add(self, conn: Any, ended: Event) -> None:
        """Close `conn` once idle (also for connections set up meanwhile).

        Args:
            conn: the connection.
            ended: set when the connection has ended, whoever closed it.
        """
        if conn in self._waiting or ended.is_set():
            return
        self._all_settled.clear()
        self._waiting[conn] = self._group.spawn(self._close_when_idle, conn, ended)

    def _close_when_idle(self, conn: Any, ended: Event) -> None:
        # wait_idle(0) answers at once, without switching, when idle.
        busy = not conn.wait_idle(0)
        while busy:
            if not conn.wait_idle(self._left()):
                return
            self._lingering.add(conn)
            gevent.wait([ended, self._hurry], timeout=min(LINGER, self._left()), count=1)
            busy = not (ended.is_set() or self._hurry.is_set() or conn.wait_idle(0))
            if busy:
                self._lingering.discard(conn)
        if self._waiting.pop(conn, None) is None:
            return  # the grace period ended meanwhile: _cut_the_rest closes it
        self._lingering.discard(conn)
        if not self._waiting:
            self._all_settled.set()
        self._close_connection(conn)

    def run(self, connections: Iterable[tuple[Any, Event]]) -> None:
        """Drain `connections`; returns once all are closed, or a bounded time later.

        Args:
            connections: ``(connection, ended)`` pairs, as for `add`.
        """
        for conn, ended in list(connections):
            self.add(conn, ended)
        gevent.wait([self._all_settled, self._hurry], timeout=self._left(), count=1)
        self._cut_the_rest()
        self._group.join(timeout=CLOSE_WAIT)
        self._group.kill(block=False)

    def _cut_the_rest(self) -> None:
        """Close the connections still waiting: the grace period is over."""
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, {}
        busy = len(waiting.keys() - self._lingering)
        if busy:
            self._logger.warning(
                "grace_period=%s s is over: closing %d connections with calls in flight",
                self._grace_period,
                busy,
            )
        for conn, greenlet in waiting.items():
            greenlet.kill(block=False)
            self._group.spawn(self._close_connection, conn)
