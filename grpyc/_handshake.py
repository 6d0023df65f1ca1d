"""Setting up one accepted socket as a connection, within the handshake timeout.

From accept to a connection in use, three things must be done within
``handshake_timeout``: the authenticator (TLS), the service's
``on_connect``, and the arrival of the client's first complete frame. The
first two run under a `gevent.Timeout` in the accepting greenlet; the third
is watched by a loop timer, because that greenlet goes on to read.

`Handshake` records where one socket is on that way (for the log, and for
what to close); `SetupRules` is what the server asks of every connection.
Accepting is `_listen`'s business; serving and closing are `server`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent

from grpyc._firstuse import NO_ITEMS, appended
from grpyc.authenticators import AuthenticationError
from grpyc.channel import Channel
from grpyc.stream import SocketStream, is_tcp, set_keepalive

__all__ = ["Handshake", "HandshakeTimeoutError", "SetupRules", "open_connection"]


class HandshakeTimeoutError(TimeoutError):
    """Raised into a connection's setup when handshake_timeout passes."""


class WatchedChannel(Channel):
    """A channel that tells when its first frame arrives or it closes."""

    def __init__(self, stream: SocketStream) -> None:
        super().__init__(stream)
        self.saw_frame = False
        # Dropped once settled (`grpyc._firstuse`).
        self._on_settled: list[Callable[[], None]] | tuple[()] = []

    def on_settled(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` at the first complete frame or when the channel closes."""
        self._on_settled = appended(self._on_settled, callback)

    def _settle(self) -> None:
        callbacks, self._on_settled = self._on_settled, NO_ITEMS
        for callback in callbacks:
            callback()

    def recv(self) -> bytes:
        payload = super().recv()
        self._saw(payload)
        return payload

    def next_buffered(self) -> bytes | None:
        payload = super().next_buffered()
        self._saw(payload)
        return payload

    def _saw(self, payload: bytes | None) -> None:
        if payload is not None and not self.saw_frame:
            self.saw_frame = True
            # From now on the reader calls Channel's own method (twice a call).
            self.next_buffered = super().next_buffered  # type: ignore[method-assign]
            self._settle()

    def close(self) -> None:
        super().close()
        self._settle()


@dataclass(frozen=True, slots=True)
class SetupRules:
    """What the server asks of each new connection (read from the server per accept).

    Attributes:
        service: the service class or instance to connect.
        config: the connection's config, before credentials and endpoints.
        authenticator: ``callable(sock) -> (sock, credentials)``, or None.
        keepalive: TCP keepalive: False, True (defaults), or probe seconds.
        handshake_timeout: seconds from accept to first frame; None: no limit.
        logger: where failed setups are logged.
    """

    service: Any
    config: dict[str, Any]
    authenticator: Callable[[Any], tuple[Any, Any]] | None
    keepalive: bool | int
    handshake_timeout: float | None
    logger: logging.Logger


@dataclass(slots=True)
class Handshake:
    """One accepted socket on its way to a connection.

    Attributes:
        sock: the socket (the TLS socket once the authenticator wrapped it).
        peer: the client's address, for the log.
        stage: what the setup is doing, named in the log if it fails.
        channel: the connection's channel, once there is one.
    """

    sock: Any
    peer: str
    stage: str = "preparing the socket"
    channel: WatchedChannel | None = None

    def close(self) -> None:
        """Close the channel (which ends the connection's reader) and the socket."""
        if self.channel is not None:
            self.channel.close()
        self.sock.close()


def open_connection(
    handshake: Handshake, rules: SetupRules, spawn: Callable[..., Any]
) -> Any | None:
    """The connection once set up, its first frame awaited by a timer; else None (logged).

    Args:
        handshake: the accepted socket; updated as the setup goes on.
        rules: what the server asks of the connection.
        spawn: starts a greenlet the server owns (to abort a silent client).
    """
    # A TimeoutError (an OSError) lets socket code on the way, such as a
    # half-made TLS socket, close what it opened before re-raising.
    started = time.monotonic()
    expired = HandshakeTimeoutError(f"handshake_timeout={rules.handshake_timeout} s passed")
    timer = gevent.Timeout(rules.handshake_timeout, expired)
    timer.start()
    try:
        conn = _set_up(handshake, rules)
    except Exception as exc:  # noqa: BLE001 - to the log: one client must not stop the server
        timed_out = rules.handshake_timeout is not None and not timer.pending
        _log_failed_setup(rules, handshake, exc, timed_out)
        return None
    finally:
        timer.close()
    _expect_first_frame(conn, handshake, rules, started, spawn)
    return conn


def _set_up(handshake: Handshake, rules: SetupRules) -> Any:
    sock = handshake.sock
    if rules.keepalive and is_tcp(sock):
        if rules.keepalive is True:
            set_keepalive(sock)
        else:
            set_keepalive(sock, idle=rules.keepalive, interval=rules.keepalive)
    credentials = None
    if rules.authenticator is not None:
        handshake.stage = "authenticating"
        sock, credentials = rules.authenticator(sock)
        handshake.sock = sock
    handshake.stage = "connecting the service"
    config = {
        **rules.config,
        "credentials": credentials,
        "endpoints": (sock.getsockname(), sock.getpeername()),
    }
    handshake.channel = WatchedChannel(SocketStream(sock))
    return rules.service._connect(handshake.channel, config)


def _expect_first_frame(
    conn: Any, handshake: Handshake, rules: SetupRules, started: float, spawn: Callable[..., Any]
) -> None:
    """Abort `conn` unless its first frame arrives within what is left of the timeout.

    A timer, not a waiting greenlet: the accepting greenlet goes on to read.
    """
    channel = handshake.channel
    if rules.handshake_timeout is None or channel is None or channel.saw_frame:
        return
    left = max(0.0, rules.handshake_timeout - (time.monotonic() - started))

    def check() -> None:
        # A loop callback: aborting runs the service's on_disconnect, so it
        # gets a greenlet.
        if not channel.saw_frame and not conn.closed:
            handshake.stage = "waiting for the first frame"
            _log_failed_setup(rules, handshake, TimeoutError("no frame"), True)
            spawn(conn.abort, "no frame within handshake_timeout")

    watch = gevent.get_hub().loop.timer(left)
    watch.start(check)
    channel.on_settled(watch.close)


def _log_failed_setup(
    rules: SetupRules, handshake: Handshake, exc: Exception, timed_out: bool
) -> None:
    if timed_out:
        rules.logger.info(
            "closed connection from %s: %s took longer than handshake_timeout=%s s",
            handshake.peer,
            handshake.stage,
            rules.handshake_timeout,
        )
    elif isinstance(exc, AuthenticationError):
        rules.logger.info(
            "closed connection from %s: authentication failed: %s", handshake.peer, exc
        )
    else:
        rules.logger.error(
            "closed connection from %s: error while %s",
            handshake.peer,
            handshake.stage,
            exc_info=exc,
        )
