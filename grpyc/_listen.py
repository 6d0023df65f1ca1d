"""Listening sockets: binding TCP, IPv6 and Unix sockets, and accepting on them.

`bind_listener` makes a plain (not gevent) listening socket, so that any OS
thread's hub can accept on it later: the server binds at construction, in
the caller's thread, and accepts in whichever thread starts serving.
`Acceptor` accepts on it with `gevent.server.StreamServer`, one greenlet per
connection, and sends its errors to the server's log. What happens to an
accepted socket is `server`'s business.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from typing import Any

import gevent.socket
from gevent.monkey import get_original
from gevent.pool import Pool
from gevent.server import StreamServer

__all__ = ["DEFAULT_SOCKET_MODE", "Acceptor", "bind_listener", "describe_address"]

# The unpatched class: a listener must not be tied to the hub of the thread
# that happened to create it.
_PlainSocket: type[socket.socket] = get_original("socket", "socket")

# A Unix socket lets in whoever may write to its file: by default only the
# server's own user (RPyC leaves it to the umask, often 0755 or 0775).
DEFAULT_SOCKET_MODE = 0o600

# Out of descriptors (or memory) while accepting: pause accepting this long
# instead of spinning on a listener that stays readable.
_ACCEPT_PAUSE = 0.1
_ACCEPT_RESOURCE_ERRORS = frozenset([errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])


def describe_address(address: Any) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a TCP address; Unix peers have none."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return "a Unix socket client"


def bind_listener(
    hostname: str | None,
    ipv6: bool,
    port: int,
    backlog: int,
    reuse_addr: bool,
    socket_path: str | None = None,
    socket_mode: int = DEFAULT_SOCKET_MODE,
) -> socket.socket:
    """A listening, non-blocking socket on the address given.

    Args:
        hostname: address to bind; None: the loopback (``::1`` with `ipv6`);
            "": every interface.
        ipv6: bind an IPv6 socket.
        port: the TCP port; 0 picks a free one.
        backlog: the listen backlog.
        reuse_addr: set SO_REUSEADDR (TCP only).
        socket_path: bind this Unix socket instead of TCP. An existing file
            there makes it fail (``EADDRINUSE``), as in RPyC.
        socket_mode: the Unix socket file's permission bits; the file never
            exists with looser ones.

    Raises:
        OSError: the address cannot be bound.
    """
    if socket_path is not None:
        return _listen_on(_bind_unix(socket_path, socket_mode), backlog)
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    if hostname is None:
        hostname = "::1" if ipv6 else "127.0.0.1"
    address = gevent.socket.getaddrinfo(
        hostname or None, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )[0][-1]
    listener = _PlainSocket(family, socket.SOCK_STREAM)
    try:
        if reuse_addr:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except BaseException:
        listener.close()
        raise
    return _listen_on(listener, backlog)


def _listen_on(listener: socket.socket, backlog: int) -> socket.socket:
    try:
        listener.listen(backlog)
    except BaseException:
        listener.close()
        raise
    listener.setblocking(False)
    return listener


def _bind_unix(path: str, mode: int) -> socket.socket:
    """A Unix socket bound at `path`, whose file is created with at most `mode`."""
    listener = _PlainSocket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            # Linux creates the file with the socket's own mode minus the
            # umask, so it is never looser than `mode`.
            os.fchmod(listener.fileno(), mode)
        except OSError:
            # Elsewhere (BSD, macOS) a socket has no mode of its own.
            _bind_unix_privately(listener, path, mode)
        else:
            listener.bind(path)
        # Widen to exactly `mode` (the umask may have narrowed it): any
        # window here is narrower than `mode`, never looser.
        os.chmod(path, mode)
    except BaseException:
        listener.close()
        raise
    return listener


def _bind_unix_privately(listener: socket.socket, path: str, mode: int) -> None:
    """Bind in a private directory, set `mode`, then link the file into place.

    Until the link nobody else can reach the socket (the directory is 0700);
    the link fails like bind() when `path` exists.
    """
    private = tempfile.mkdtemp(prefix=".grpyc-", dir=os.path.dirname(path) or ".")
    hidden = os.path.join(private, "s")
    try:
        listener.bind(hidden)
        os.chmod(hidden, mode)
        try:
            os.link(hidden, path)
        except FileExistsError:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE), path) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(hidden)
        os.rmdir(private)


# gevent ships no types: StreamServer is Any to mypy.
class Acceptor(StreamServer):  # type: ignore[misc]
    """StreamServer whose accept errors go to the server's log.

    Built and started in the thread that serves (its hub runs the accept
    watcher). Running out of descriptors pauses accepting for a moment
    (clients wait in the backlog) instead of spinning, and nothing is printed.
    """

    def __init__(
        self,
        listener: socket.socket,
        handle: Callable[[Any, Any], None],
        pool: Pool,
        logger: logging.Logger,
    ) -> None:
        super().__init__(listener, handle, spawn=pool)
        self._logger = logger
        self._pause: Any = None
        self._kept: set[Any] = set()

    def keep(self, sock: Any) -> None:
        """The handler of `sock` returns with the connection still open: do not close it."""
        self._kept.add(sock)

    def do_close(self, sock: Any, *args: Any) -> None:
        # StreamServer closes each socket as its handler returns.
        if sock in self._kept:
            self._kept.discard(sock)
        else:
            super().do_close(sock, *args)

    def do_read(self) -> tuple[Any, Any] | None:
        try:
            # (socket, address), or None when gevent found nothing to accept.
            accepted: tuple[Any, Any] | None = super().do_read()
        except OSError as exc:
            if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                self._logger.error(
                    "cannot accept a connection: %s; pausing accept for %.1f s", exc, _ACCEPT_PAUSE
                )
                self._pause_accepting()
                return None
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                # The client left before we accepted: nothing to serve.
                return None
            raise
        return accepted

    def _pause_accepting(self) -> None:
        self.stop_accepting()
        self._pause = self.loop.timer(_ACCEPT_PAUSE)
        self._pause.start(self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self._pause is not None:
            self._pause.close()
            self._pause = None
        if self.started and not self.closed:
            self.start_accepting()

    def close(self) -> None:
        if self._pause is not None:
            self._pause.stop()
            self._pause.close()
            self._pause = None
        super().close()
