"""Registry servers: the table of ``grpyc.registry.table`` on UDP and TCP sockets.

``RegistryServer`` adds a listening socket, a pruning greenlet and a life
cycle (``start``, ``start_in_background``, ``close``) to ``RegistryTable``;
``UDPRegistryServer`` and ``TCPRegistryServer`` only move bytes between
their sockets and ``handle_request``. All sockets are gevent's, so the
servers cooperate with or without monkey patching.

Defaults and why (docs/registry.md says more):

- Both bind 127.0.0.1, like the ``grpyc registry`` command: serving the LAN
  is a choice (``host="0.0.0.0"``), not a default.
- On a loopback address the UDP server also hears datagrams *broadcast*
  to its port, but only from this machine's own addresses. Every default
  registrar (grpyc's and RPyC's) broadcasts to 255.255.255.255, which a
  socket bound to 127.0.0.1 never receives; without this, a registry and a
  server on one machine would not find each other.
- UDP replies are held to a small multiple of their request, because a
  datagram's source can be forged.
- The TCP server drops its oldest connection when ``max_connections`` are
  open, so silent sockets cannot keep real requests out.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Final, Unpack

import gevent
from gevent import socket as gsocket
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

from grpyc.lib import Timeout, kill_greenlets
from grpyc.registry._sockets import (
    LIMITED_BROADCAST,
    LOCAL_HOST,
    REGISTRY_PORT,
    bound_socket,
    is_local_address,
    read_message,
)
from grpyc.registry.table import RegistryTable, TableOptions
from grpyc.registry.wire import datagram_reply_budget

__all__ = ["RegistryServer", "TCPRegistryServer", "UDPRegistryServer"]

# Registry commands are pure table look-ups: this many datagrams in flight
# at once is far beyond real load and bounds what a flood can hold.
_DEFAULT_MAX_HANDLERS: Final = 64
# RPyC's TCP registry gives a client 3 s to send its request.
_DEFAULT_REQUEST_TIMEOUT: Final = 3.0
# Open TCP connections; one costs a greenlet and a socket (~10 KiB). Past
# it the oldest is dropped: a real request is answered within a
# millisecond of its connect, so only idle sockets grow old.
_DEFAULT_MAX_CONNECTIONS: Final = 256
# Bursts of servers re-registering at once should queue, not be refused.
_TCP_BACKLOG: Final = 128
# In-flight requests get this long to finish when the server closes.
_CLOSE_GRACE: Final = 0.5
# Back-off after a failed datagram read, so a broken socket cannot spin.
_READ_RETRY_MIN, _READ_RETRY_MAX = 0.01, 1.0

Address = tuple[str, int]

# Seconds close() waits for the greenlets it killed to end.
_KILL_WAIT = 5.0


class RegistryServer(RegistryTable):
    """A registry table served on a socket until ``close()``. RPyC-compatible.

    Subclasses move bytes (UDP or TCP); everything a request means is
    decided by ``RegistryTable.handle_request``, without I/O.

    Differences from RPyC: stale entries are also pruned periodically;
    ``close()`` may be called at any time, more than once; see
    ``RegistryTable`` for the rest.
    """

    def __init__(
        self,
        listenersock: gsocket.socket,
        pruning_timeout: float | None = None,
        logger: logging.Logger | None = None,
        allow_listing: bool = False,
        **options: Unpack[TableOptions],
    ) -> None:
        """Set up an empty table around ``listenersock``; on error, close it.

        Args:
            listenersock: the bound socket the subclass serves on.
            pruning_timeout, logger, allow_listing: as for ``RegistryTable``.
            options: ``clock`` and ``limits``, as for ``RegistryTable``.
        """
        self.sock: gsocket.socket | None = listenersock
        try:
            self.port: int = listenersock.getsockname()[1]
            super().__init__(pruning_timeout, logger, allow_listing, **options)
        except BaseException:
            listenersock.close()
            raise
        self.active = False
        self._closed = Event()
        self._pruner: gevent.Greenlet | None = None

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger(f"grpyc.registry.{type(self).__name__}.{self.port}")

    def start(self) -> None:
        """Serve until ``close()``; blocks the calling greenlet. RPyC-compatible."""
        self.start_in_background()
        try:
            self._closed.wait()
        except KeyboardInterrupt:
            self.logger.warning("registry interrupted by the user")
        finally:
            self.close()

    def start_in_background(self) -> None:
        """Start serving and return at once; ``close()`` stops it.

        Raises:
            ValueError: the server is already running or closed.
        """
        if self._closed.is_set() or self.sock is None:
            raise ValueError(f"registry server on port {self.port} is closed")
        if self.active:
            raise ValueError(f"registry server on port {self.port} is already running")
        self._start_transport()
        self.active = True
        self._pruner = gevent.spawn(self._prune_periodically)
        self.logger.debug("registry serving on port %s", self.port)

    def _prune_periodically(self) -> None:
        # Half the timeout: a dead server's on_service_removed fires within
        # 1.5 pruning timeouts; QUERY and LIST never wait for this.
        while not self._closed.wait(self.pruning_timeout / 2):
            self.prune()

    def close(self) -> None:
        """Stop serving and release the sockets; safe to call more than once."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._pruner is not None:
            kill_greenlets([self._pruner], timeout=_KILL_WAIT)
        if self.active:
            self._stop_transport()
        self._release_sockets()
        self.active = False
        self.logger.debug("registry on port %s closed", self.port)

    def _release_sockets(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _start_transport(self) -> None:
        raise NotImplementedError

    def _stop_transport(self) -> None:
        raise NotImplementedError


def _is_ipv4_loopback(sock: gsocket.socket) -> bool:
    if sock.family != gsocket.AF_INET:
        return False
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


class UDPRegistryServer(RegistryServer):
    """Registry answering datagrams. RPyC-compatible.

    Where grpyc differs from RPyC: it binds 127.0.0.1 by default (RPyC:
    every interface); pass ``host="0.0.0.0"`` to serve the LAN. On a
    loopback address it also hears broadcasts to its port sent from this
    machine (``hear_local_broadcasts``), so default registrars find it.
    Requests over ``limits.max_request_size`` (1,500 bytes, what RPyC
    reads) are ignored, and replies are held to ``limits.max_amplification``
    times their request.
    """

    def __init__(
        self,
        host: str = LOCAL_HOST,
        port: int = REGISTRY_PORT,
        pruning_timeout: float | None = None,
        logger: logging.Logger | None = None,
        allow_listing: bool = False,
        *,
        max_handlers: int = _DEFAULT_MAX_HANDLERS,
        hear_local_broadcasts: bool = True,
        **options: Unpack[TableOptions],
    ) -> None:
        """Bind ``host:port`` (and the broadcast listener, see the class).

        Args:
            max_handlers: datagrams answered at once; the kernel queues the rest.
            hear_local_broadcasts: on a loopback ``host``, also answer
                broadcasts to this port from this machine's addresses.
            options: ``clock`` and ``limits``, as for ``RegistryTable``.
        """
        super().__init__(
            bound_socket(host, port, gsocket.SOCK_DGRAM),
            pruning_timeout,
            logger,
            allow_listing,
            **options,
        )
        self._handlers = Pool(max_handlers)
        self._readers: list[gevent.Greenlet] = []
        self.broadcast_sock: gsocket.socket | None = None
        if hear_local_broadcasts and self.sock is not None and _is_ipv4_loopback(self.sock):
            self.broadcast_sock = self._open_broadcastbound_socket()

    def _open_broadcastbound_socket(self) -> gsocket.socket | None:
        # Bound to the broadcast address, this socket receives only datagrams
        # sent to it, never unicast from the network.
        try:
            return bound_socket(LIMITED_BROADCAST, self.port, gsocket.SOCK_DGRAM)
        except OSError as exc:
            self.logger.warning(
                "cannot hear local broadcasts on port %s (%s); registrars must send to %s",
                self.port,
                exc,
                LOCAL_HOST,
            )
            return None

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger(f"grpyc.registry.udp.{self.port}")

    def _start_transport(self) -> None:
        assert self.sock is not None
        self._readers.append(gevent.spawn(self._read_datagrams, self.sock, False))
        if self.broadcast_sock is not None:
            self._readers.append(gevent.spawn(self._read_datagrams, self.broadcast_sock, True))

    def _stop_transport(self) -> None:
        kill_greenlets(self._readers, timeout=_KILL_WAIT)
        kill_greenlets(list(self._handlers), finish_within=_CLOSE_GRACE, timeout=_KILL_WAIT)

    def _release_sockets(self) -> None:
        if self.broadcast_sock is not None:
            self.broadcast_sock.close()
            self.broadcast_sock = None
        super()._release_sockets()

    def _read_datagrams(self, sock: gsocket.socket, local_only: bool) -> None:
        retry = _READ_RETRY_MIN
        while True:
            try:
                # One byte over the limit tells an oversized datagram from a full one.
                data, address = sock.recvfrom(self.limits.max_request_size + 1)
            except OSError as exc:
                self.logger.warning("registry read failed: %s", exc)
                self._closed.wait(retry)
                retry = min(retry * 2, _READ_RETRY_MAX)
                continue
            retry = _READ_RETRY_MIN
            if local_only and not is_local_address(address[0]):
                # A LAN host's broadcast: this registry serves this machine only.
                self.logger.debug("ignored a broadcast from %s", address[0])
                continue
            # Blocks while max_handlers are busy: the kernel queue absorbs the burst.
            self._handlers.spawn(self._answer_datagram, data, address)

    def _answer_datagram(self, data: bytes, address: Any) -> None:
        budget = datagram_reply_budget(len(data), self.limits.max_amplification)
        reply = self.handle_request(data, address[0], budget)
        # Replies leave from the main socket: its port is the one clients
        # expect, and the broadcast address cannot be a source.
        if reply is None or self.sock is None:
            return
        try:
            self.sock.sendto(reply, address)
        except OSError as exc:
            self.logger.warning("could not reply to %s:%s: %s", address[0], address[1], exc)


class TCPRegistryServer(RegistryServer):
    """Registry answering one request per TCP connection. RPyC-compatible.

    For networks whose routers drop broadcasts. Where grpyc differs from
    RPyC: it binds 127.0.0.1 by default (``host="0.0.0.0"`` serves the LAN),
    and with ``max_connections`` open it drops the oldest to admit a new
    one, so idle sockets cannot lock real clients out.
    """

    def __init__(
        self,
        host: str = LOCAL_HOST,
        port: int = REGISTRY_PORT,
        pruning_timeout: float | None = None,
        logger: logging.Logger | None = None,
        reuse_addr: bool = True,
        allow_listing: bool = False,
        *,
        max_connections: int = _DEFAULT_MAX_CONNECTIONS,
        request_timeout: float = _DEFAULT_REQUEST_TIMEOUT,
        **options: Unpack[TableOptions],
    ) -> None:
        """Bind and listen on ``host:port``.

        Args:
            max_connections: connections open at once; past it the oldest is dropped.
            request_timeout: seconds a connection has to send its whole request.
            options: ``clock`` and ``limits``, as for ``RegistryTable``.
        """
        if type(max_connections) is not int or max_connections < 1:
            raise ValueError(f"max_connections must be an int >= 1, got {max_connections!r}")
        super().__init__(
            bound_socket(
                host, port, gsocket.SOCK_STREAM, reuse_addr=reuse_addr, backlog=_TCP_BACKLOG
            ),
            pruning_timeout,
            logger,
            allow_listing,
            **options,
        )
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._server: StreamServer | None = None
        # Open connections' greenlets, oldest first (dicts keep insertion order).
        self._open: dict[gevent.Greenlet, None] = {}

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger(f"grpyc.registry.tcp.{self.port}")

    def _start_transport(self) -> None:
        self._server = StreamServer(self.sock, self._answer_connection)
        self._server.start()

    def _stop_transport(self) -> None:
        if self._server is not None:
            self._server.close()
        kill_greenlets(list(self._open), finish_within=_CLOSE_GRACE, timeout=_KILL_WAIT)

    def _admit(self, handler: gevent.Greenlet) -> None:
        self._open[handler] = None
        while len(self._open) > self.max_connections:
            oldest = next(iter(self._open))
            del self._open[oldest]
            # Its socket is closed by StreamServer when the greenlet ends.
            oldest.kill(block=False)
            self.logger.debug(
                "dropped the oldest connection: max_connections=%d", self.max_connections
            )

    def _answer_connection(self, sock: gsocket.socket, address: Any) -> None:
        handler = gevent.getcurrent()
        self._admit(handler)
        host = address[0]
        try:
            deadline = Timeout(self.request_timeout)
            data = read_message(sock, self.limits.max_request_size, deadline)
            if not data:
                # A bare connect-and-close (port probe, health check) is no request.
                return
            reply = self.handle_request(data, host)
            if reply is not None:
                sock.sendall(reply)
        except OSError as exc:
            self.logger.info("registry connection from %s failed: %s", host, exc)
        finally:
            self._open.pop(handler, None)
