"""The connections a server holds: set up from accepted sockets, counted, forgotten.

A connection counts against ``max_connections`` from accept to its end,
handshake included. Once set up it either holds its accepting greenlet
until it ends (`HeldConnections.serve`: a forked child, `OneShotServer`) or
lets it go (`open_in_background`): an idle connection then holds no greenlet
at all, its reads coming from the hub's reader pool (`_readers`), and its
end is noticed by a close callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from gevent.event import Event

from grpyc._drain import Drain
from grpyc._handshake import Handshake, SetupRules, open_connection

__all__ = ["HeldConnections"]


class HeldConnections:
    """The connections of one server, each with the event set when it ends."""

    def __init__(
        self, clients: set[Any], logger: logging.Logger, spawn: Callable[..., Any]
    ) -> None:
        """`clients` is the server's public set, kept up to date here."""
        self.clients = clients
        self.ends: dict[Any, Event] = {}
        # Sockets accepted and not yet ended (set up or still in the handshake).
        self.in_use = 0
        # Set while the server closes: connections set up meanwhile join it.
        self.drain: Drain | None = None
        self._logger = logger
        self._spawn = spawn

    def serve(self, sock: Any, peer: str, rules: SetupRules) -> bool:
        """Set the connection up, then serve it in this greenlet until it closes.

        Returns whether the connection was set up (and served).
        """
        handshake = Handshake(sock, peer)
        conn = None
        ended = Event()
        try:
            conn = self._open(handshake, ended, rules)
            if conn is not None:
                conn.serve_all()
        finally:
            self._forget(conn, handshake, ended)
        return conn is not None

    def open_in_background(self, sock: Any, peer: str, rules: SetupRules) -> bool:
        """Set the connection up and return with it open; False if that failed.

        Its end releases the slot (`in_use`) and logs the close. On False
        the slot is released already.
        """
        handshake = Handshake(sock, peer)
        ended = Event()
        conn = None
        try:
            conn = self._open(handshake, ended, rules)
        finally:
            if conn is None:
                self._forget(conn, handshake, ended)
                self.release(False, peer)
        if conn is None:
            return False
        conn.when_closed(partial(self._ended_in_background, conn, handshake, ended))
        return True

    def release(self, opened: bool, peer: str) -> None:
        """A socket's connection ended (or was never set up): free its slot."""
        # The slot is free before the "closed" line: whoever reads that line
        # may connect again at once.
        self.in_use -= 1
        if opened:
            self._logger.info("connection from %s closed", peer)

    def _ended_in_background(self, conn: Any, handshake: Handshake, ended: Event) -> None:
        self._forget(conn, handshake, ended)
        self.release(True, handshake.peer)

    def _open(self, handshake: Handshake, ended: Event, rules: SetupRules) -> Any:
        """The connection set up and counted among `clients`, or None (logged)."""
        conn = open_connection(handshake, rules, self._spawn)
        if conn is not None:
            self.clients.add(conn)
            self.ends[conn] = ended
            if self.drain is not None:
                # Set up while the server was closing: drained like the rest.
                self.drain.add(conn, ended)
            self._logger.info("connection from %s open", handshake.peer)
        return conn

    def _forget(self, conn: Any, handshake: Handshake, ended: Event) -> None:
        ended.set()
        self.clients.discard(conn)
        self.ends.pop(conn, None)
        # Closing the channel ends the connection's reading; a client that
        # never completed the handshake has nothing in flight.
        handshake.close()
