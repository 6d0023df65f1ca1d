"""Servers on `gevent.server.StreamServer`: one greenlet per connection.

RPyC's class names (`ThreadedServer`, `ThreadPoolServer`, `GeventServer`)
all name the greenlet server: on gevent a greenlet per connection is what a
thread per connection was in RPyC, without its cost.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import gevent
import gevent.socket
from gevent.event import Event
from gevent.server import StreamServer

from grpyc.channel import Channel
from grpyc.stream import SocketStream

__all__ = ["GeventServer", "Server", "ThreadPoolServer", "ThreadedServer"]


class Server:
    """A server exposing `service` to every client. RPyC-compatible arguments.

    Args:
        service: the service class (or instance) each connection gets.
        hostname: address to bind; None binds 127.0.0.1 (RPyC binds all
            interfaces; grpyc is safe by default and says so).
        ipv6: bind an IPv6 socket.
        port: TCP port; 0 picks a free one (read `port` after `start`/`listen`).
        backlog: listen backlog.
        reuse_addr: set SO_REUSEADDR.
        authenticator: ``callable(sock) -> (sock, credentials)``, e.g. TLS.
        protocol_config: overrides of `protocol.DEFAULT_CONFIG` per connection.
        logger: the server's logger (default ``grpyc.server.<port>``).
        socket_path: serve on this Unix socket path instead of TCP.
    """

    def __init__(
        self,
        service: Any,
        hostname: str | None = None,
        ipv6: bool = False,
        port: int = 0,
        backlog: int = 1024,
        reuse_addr: bool = True,
        authenticator: Any = None,
        registrar: Any = None,
        auto_register: bool | None = None,
        protocol_config: dict[str, Any] | None = None,
        logger: logging.Logger | None = None,
        listener_timeout: float = 0.5,
        socket_path: str | None = None,
    ) -> None:
        self.service = service
        self.authenticator = authenticator
        self.protocol_config = dict(protocol_config or {})
        self.registrar = registrar
        self.auto_register = auto_register
        self.listener_timeout = listener_timeout
        self.socket_path = socket_path
        self.active = False
        self.clients: set[Any] = set()
        self._listener = self._make_listener(hostname, ipv6, port, backlog, reuse_addr, socket_path)
        self.host, self.port = self._bound_address()
        self.logger = logger or logging.getLogger(f"grpyc.server.{self.port}")
        self._server = StreamServer(self._listener, self._handle)
        self._stopped = Event()

    @staticmethod
    def _make_listener(
        hostname: str | None,
        ipv6: bool,
        port: int,
        backlog: int,
        reuse_addr: bool,
        socket_path: str | None,
    ) -> socket.socket:
        if socket_path is not None:
            listener = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(socket_path)
        else:
            family = socket.AF_INET6 if ipv6 else socket.AF_INET
            listener = gevent.socket.socket(family, socket.SOCK_STREAM)
            if reuse_addr:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            default_host = "::1" if ipv6 else "127.0.0.1"
            listener.bind((hostname or default_host, port))
        listener.listen(backlog)
        return listener

    def _bound_address(self) -> tuple[str, int]:
        if self.socket_path is not None:
            return self.socket_path, 0
        address = self._listener.getsockname()
        return address[0], address[1]

    def _handle(self, sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        credentials = None
        if self.authenticator is not None:
            sock, credentials = self.authenticator(sock)
        config = {
            **self.protocol_config,
            "credentials": credentials,
            "endpoints": (sock.getsockname(), sock.getpeername()),
        }
        service = self.service() if isinstance(self.service, type) else self.service
        conn = service._connect(Channel(SocketStream(sock)), config)
        self.clients.add(conn)
        self.logger.info("connection from %s", address)
        try:
            conn.serve_all()
        finally:
            self.clients.discard(conn)
            self.logger.info("connection from %s closed", address)

    def listen(self) -> None:
        """Start accepting in the background (returns at once)."""
        self.active = True
        self._server.start()

    def start(self) -> None:
        """Serve until `close` is called (blocks). RPyC-compatible."""
        if not self.active:
            self.listen()
        self._stopped.wait()

    def close(self) -> None:
        """Stop accepting and close every connection. RPyC-compatible."""
        self.active = False
        self._stopped.set()
        self._server.stop(timeout=0)
        for conn in list(self.clients):
            conn.close()


GeventServer = Server
ThreadedServer = Server
ThreadPoolServer = Server
