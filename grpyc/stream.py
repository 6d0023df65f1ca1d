"""Byte streams: TCP, TLS, Unix sockets and pipes (RPyC-compatible names).

A stream moves bytes and knows nothing of frames (`grpyc.channel` does).
A stream is made in one of two modes, by where it is made (`lib.in_gevent`):

- **cooperative** (code under gevent: monkey patched, or the thread has a
  hub): sockets are gevent sockets (a plain socket handed in is adopted),
  pipes are non-blocking descriptors watched by the hub; every blocking call
  waits in the hub, so other greenlets run meanwhile.
- **plain** (a thread that does not use gevent): blocking sockets and
  descriptors, waited on by the OS; such a stream never creates a gevent hub,
  and any OS thread may use it.

Invariants: whatever ends a stream (EOF, reset, broken pipe, local close),
`read`, `read_some`, `read_into` and `write` raise `EOFError` and the
stream is closed, as in RPyC. `close` is idempotent and wakes a greenlet or
thread blocked reading the same stream. Every TCP socket gets TCP_NODELAY.
On Linux, the rest of a big frame body on a gevent TCP socket is waited for
with a low-water mark (`SocketStream.read_body_into`).
"""

from __future__ import annotations

import _socket
import contextlib
import socket
import ssl as plain_ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any, Self

import gevent
import gevent.socket as gsocket
import gevent.ssl as gssl
from gevent.monkey import get_original

from grpyc._namedpipe import NamedPipeStream, Win32PipeStream
from grpyc._pipestream import PipeStream
from grpyc._streambase import (
    NOTHING_PENDING,
    BytesLike,
    Stream,
    in_gevent,
    wait_readable,
    write_vectored,
)

__all__ = [
    "NamedPipeStream",
    "PipeStream",
    "SocketStream",
    "Stream",
    "TunneledSocketStream",
    "Win32PipeStream",
    "is_tcp",
    "set_keepalive",
    "set_nodelay",
]


# The unpatched functions: plain streams never touch a gevent hub.
_BlockingSocket = get_original("socket", "socket")
_original_getaddrinfo = get_original("socket", "getaddrinfo")
_original_sleep = get_original("time", "sleep")

# RPyC's `keepalive=True`: probe after 60 s idle, every 60 s, drop after 5 misses.
_KEEPALIVE_SECONDS = 60
_KEEPALIVE_COUNT = 5

# Backoff before the next connect attempt after a timeout (RPyC retries too).
_CONNECT_BACKOFF = 0.001
_CONNECT_BACKOFF_MAX = 0.05


def set_nodelay(sock: Any) -> None:
    """Turn on TCP_NODELAY, so a small frame leaves at once instead of up to 40 ms later."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_keepalive(
    sock: Any,
    idle: int = _KEEPALIVE_SECONDS,
    interval: int = _KEEPALIVE_SECONDS,
    count: int = _KEEPALIVE_COUNT,
) -> None:
    """Turn on TCP keepalive, so a peer that vanished without a FIN is noticed.

    Args:
        sock: a TCP socket, connected or accepted.
        idle: seconds of silence before the first probe.
        interval: seconds between probes.
        count: unanswered probes before the connection is dropped.

    Where the platform lacks an option, its system default stays.
    """
    for name, value in (("idle", idle), ("interval", interval), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"keepalive {name} must be an int >= 1, got {value!r}")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # macOS calls the idle time TCP_KEEPALIVE.
    idle_option = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
    options = (
        (idle_option, idle),
        (getattr(socket, "TCP_KEEPINTVL", None), interval),
        (getattr(socket, "TCP_KEEPCNT", None), count),
    )
    for option, value in options:
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _apply_keepalive(sock: Any, keepalive: bool | int) -> None:
    if keepalive is True:
        set_keepalive(sock)
    elif keepalive:
        set_keepalive(sock, idle=keepalive, interval=keepalive)


def is_tcp(sock: Any) -> bool:
    """Whether `sock` is a TCP socket (IPv4 or IPv6, SOCK_STREAM)."""
    family = getattr(sock, "family", None)
    return family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM


def _cooperative(sock: Any) -> Any:
    # A plain blocking socket would freeze every greenlet while it waits,
    # so it is rebuilt as a gevent socket on the same descriptor.
    if type(sock) is not _BlockingSocket:
        return sock
    timeout = sock.gettimeout()
    adopted = gsocket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    adopted.settimeout(timeout)
    return adopted


_MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)  # not on Windows

# While a big frame body arrives over TCP, the kernel wakes its reader only
# once this much of the body (or all that is left of it) is there (the socket's
# SO_RCVLOWAT). Woken for every piece the sender wrote, a reader on the same
# CPU as its sender took 128 KiB-4 MiB a wake, and a 16 MiB echo ran at
# 1,500-1,900 MiB/s depending on the connection; with 2 MiB at least a wake,
# 1,970-2,120 on every connection (512 KiB: ~1,850; 4 and 8 MiB no better).
# Linux only: the one kernel it was measured on, whose poll honours it.
_BODY_LOW_WATER = 2 * 1024 * 1024
# Only while this much of a body is left. Echoes, medians over 8-10
# connections, none / a mark all along / from here: 1 MiB 2,846 / 2,510 /
# 2,865 MiB/s; 2 MiB 2,737 / 2,926 / 2,980; 4 MiB 1,692 / 3,134 / 3,245;
# 16 MiB 1,647 / 2,092 / 2,093. Waiting for all of a 1 MiB body costs more
# than the wakes it saves.
_BODY_LOW_WATER_FROM = 1500 * 1024
# Below this the mark saves no wake worth a system call.
_BODY_LOW_WATER_MIN = 64 * 1024
# The mark is at most this share of the socket's receive buffer: the kernel
# wakes no reader before its mark is queued, and a mark the buffer cannot
# hold is never reached (a plain thread's read with a 2 MiB mark waited
# forever with 1 MiB queued and its sender stalled).
_BODY_LOW_WATER_SHARE = 4
# A sender slower than the mark (a slow link) is read as it comes after this.
_BODY_PATIENCE = 0.005
_SO_RCVLOWAT: int = getattr(socket, "SO_RCVLOWAT", 0) if sys.platform == "linux" else 0
# Linux's one-shot "acknowledge now" (`SocketStream.ack_now`).
_TCP_QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)


def _raw_socket(sock: Any) -> Any:
    """The non-blocking OS socket inside a plain gevent socket (not TLS), else None.

    Reads and writes try it first and leave waiting to gevent's wrapper.
    """
    if type(sock) is not gsocket.socket:
        return None
    raw = getattr(sock, "_sock", None)
    if not isinstance(raw, _socket.socket) or raw.gettimeout() != 0.0:
        return None
    return raw


def _plain(sock: Any) -> Any:
    # A gevent socket belongs to the hub of the thread that made it; a stream
    # any thread may use needs the plain socket on the same descriptor.
    if not isinstance(sock, gsocket.socket) or isinstance(sock, gssl.SSLSocket):
        return sock
    timeout = sock.gettimeout()
    plain = _BlockingSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    plain.settimeout(timeout)
    return plain


def _new_socket(family: int, socktype: int, proto: int, cooperative: bool) -> Any:
    factory = gsocket.socket if cooperative else _BlockingSocket
    return factory(family, socktype, proto)


def _connect_once(
    address: Any,
    family: int,
    socktype: int,
    proto: int,
    timeout: float | None,
    cooperative: bool = True,
) -> Any:
    sock = _new_socket(family, socktype, proto, cooperative)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_address(
    address: tuple[Any, ...],
    family: int,
    socktype: int,
    proto: int,
    timeout: float | None,
    attempts: int,
    cooperative: bool,
) -> Any:
    for attempt in range(1, attempts):
        try:
            return _connect_once(address, family, socktype, proto, timeout, cooperative)
        except TimeoutError:
            pause = min(_CONNECT_BACKOFF * 2**attempt, _CONNECT_BACKOFF_MAX)
            (gevent.sleep if cooperative else _original_sleep)(pause)
    return _connect_once(address, family, socktype, proto, timeout, cooperative)


def _resolve(
    host: str, port: int, family: int, socktype: int, proto: int, cooperative: bool
) -> Any:
    """``getaddrinfo``'s addresses for `host`: a numeric address (``127.0.0.1``,
    ``::1``) at once, a name through gevent's resolver when `cooperative`."""
    try:
        # No lookup, so nothing to wait for: gevent's resolver would hand even
        # this to its thread pool (~90 us of a ~220 us connect).
        return _original_getaddrinfo(host, port, family, socktype, proto, socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass  # a name
    resolve = gsocket.getaddrinfo if cooperative else _original_getaddrinfo
    return resolve(host, port, family, socktype, proto)


def _open_tcp(
    host: str,
    port: int,
    family: int,
    socktype: int,
    proto: int,
    timeout: float | None,
    attempts: int,
    cooperative: bool = True,
) -> Any:
    addresses = _resolve(host, port, family, socktype, proto, cooperative)
    error: OSError | None = None
    for family_, socktype_, proto_, _, address in addresses:
        try:
            return _connect_address(
                address, family_, socktype_, proto_, timeout, attempts, cooperative
            )
        except OSError as exc:
            error = exc
    assert error is not None  # getaddrinfo returns at least one address or raises
    raise error


def _ssl_context(options: dict[str, Any], cooperative: bool = True) -> Any:
    # Pops RPyC's ssl_kwargs keys; what is left goes to wrap_socket().
    # gevent's SSLContext makes cooperative sockets even without monkey
    # patching (gevent.ssl.create_default_context() would not); the stdlib's
    # makes blocking ones for plain streams.
    context_class = gssl.SSLContext if cooperative else plain_ssl.SSLContext
    version = options.pop("ssl_version", None)
    if version is None:
        context = context_class(plain_ssl.PROTOCOL_TLS_CLIENT)
        context.load_default_certs(plain_ssl.Purpose.SERVER_AUTH)
    else:
        context = context_class(version)
    certfile = options.pop("certfile", None)
    keyfile = options.pop("keyfile", None)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile=keyfile)
    ca_certs = options.pop("ca_certs", None)
    if ca_certs is not None:
        context.load_verify_locations(ca_certs)
    ciphers = options.pop("ciphers", None)
    if ciphers is not None:
        context.set_ciphers(ciphers)
    # check_hostname must be off before verify_mode may become CERT_NONE.
    check_hostname = options.pop("check_hostname", None)
    if check_hostname is not None:
        context.check_hostname = check_hostname
    cert_reqs = options.pop("cert_reqs", None)
    if cert_reqs is not None:
        context.verify_mode = cert_reqs
    return context


def _no_wait() -> None:
    pass


class SocketStream(Stream):
    """A stream over a connected socket (TCP, TLS or Unix). RPyC-compatible.

    ``SocketStream(sock)`` takes an accepted or connected socket. Made under
    gevent, a plain blocking socket is adopted as a gevent socket on the same
    descriptor; made in a thread that does not use gevent, a gevent socket is
    turned into a plain one (see the module docstring). TCP_NODELAY is set on
    TCP sockets unless ``nodelay=False`` (RPyC leaves it off on accepted
    sockets, which costs up to 40 ms per round trip).
    """

    def __init__(self, sock: Any, *, nodelay: bool = True) -> None:
        self.cooperative = in_gevent()
        self.sock = _cooperative(sock) if self.cooperative else _plain(sock)
        self._closed = False
        # sendmsg() writes header, payload and newline in one syscall; TLS
        # sockets have no vectored write.
        self._vectored = not isinstance(
            self.sock, gssl.SSLSocket | plain_ssl.SSLSocket
        ) and hasattr(self.sock, "sendmsg")
        if nodelay and is_tcp(self.sock):
            set_nodelay(self.sock)

    @property
    def sock(self) -> Any:
        """The socket. RPyC-compatible."""
        return self._sock

    @sock.setter
    def sock(self, sock: Any) -> None:
        self._sock = sock
        self._raw = _raw_socket(sock)
        # A gevent TCP socket: not TLS (the kernel counts the bytes on the
        # wire, and OpenSSL may hold some of them), nor a plain thread's
        # (its blocking read could not stop waiting for the mark).
        self._tcp = is_tcp(sock)
        self._slow_body = 0  # see `read_body_into`
        self._low_water = bool(_SO_RCVLOWAT) and self._raw is not None and self._tcp
        # A plain blocking socket (the plain-threads runtime) can still be read
        # without waiting: recv() with MSG_DONTWAIT, where the platform has it.
        self._dontwait = type(sock) is _BlockingSocket and _MSG_DONTWAIT != 0
        # Whether bytes are buffered above the descriptor (TLS), so a read
        # will not wait: the socket's own pending(), else a C callable that
        # answers False. It runs on every wait: no Python frame. Looked up
        # once per socket: a missing attribute costs an AttributeError
        # through gevent's socket __getattr__.
        self.has_pending: Callable[[], int] = getattr(sock, "pending", None) or NOTHING_PENDING

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        ipv6: bool = False,
        timeout: float | None = 3,
        nodelay: bool = True,
        keepalive: bool | int = False,
        family: int = socket.AF_INET,
        socktype: int = socket.SOCK_STREAM,
        proto: int = 0,
        attempts: int = 6,
        socket_path: str | None = None,
    ) -> Self:
        """Connect to ``host``:``port`` over TCP. RPyC-compatible.

        Args:
            ipv6: use ``AF_INET6`` instead of ``family``.
            timeout: seconds to wait for each connect attempt; reads and
                writes have no timeout afterwards.
            keepalive: ``True`` for RPyC's keepalive (60 s idle and interval,
                5 probes), or the idle and interval seconds as an int.
            family: address family for name resolution (``AF_UNSPEC`` tries
                every address in order).
            attempts: connect attempts per address after a timeout.
            socket_path: connect to this Unix socket instead.

        Raises:
            OSError: the name does not resolve or no address accepts.
        """
        if socket_path is not None:
            return cls.unix_connect(socket_path, timeout)
        if ipv6:
            family = socket.AF_INET6
        sock = _open_tcp(host, port, family, socktype, proto, timeout, attempts, in_gevent())
        try:
            _apply_keepalive(sock, keepalive)
            return cls(sock, nodelay=nodelay)
        except BaseException:
            sock.close()
            raise

    @classmethod
    def unix_connect(cls, path: str, timeout: float | None = 3) -> Self:
        """Connect to the Unix socket at ``path``. RPyC-compatible."""
        sock = _connect_once(path, socket.AF_UNIX, socket.SOCK_STREAM, 0, timeout, in_gevent())
        return cls(sock)

    @classmethod
    def ssl_connect(cls, host: str, port: int, ssl_kwargs: dict[str, Any], **kwargs: Any) -> Self:
        """Connect over TLS. RPyC-compatible.

        Args:
            ssl_kwargs: RPyC's keys ``ssl_version``, ``certfile``, ``keyfile``,
                ``ca_certs``, ``ciphers``, ``check_hostname``, ``cert_reqs``
                build an ``SSLContext``; other keys go to its ``wrap_socket``.
                The dict is not modified.
            kwargs: as for `connect` (``timeout`` also bounds the handshake).
        """
        options = dict(ssl_kwargs)
        context = _ssl_context(options, in_gevent())
        options.setdefault("server_hostname", host)
        timeout = kwargs.get("timeout", 3)
        plain = cls.connect(host, port, **kwargs)
        try:
            plain.sock.settimeout(timeout)
            sock = context.wrap_socket(plain.sock, **options)
            sock.settimeout(None)
        except BaseException:
            plain.close()
            raise
        return cls(sock, nodelay=kwargs.get("nodelay", True))

    def close(self) -> None:
        if not self._mark_closed():
            return
        shutdown = getattr(self.sock, "shutdown", None)
        if shutdown is not None:
            # OSError: the peer is already gone or never connected; nothing to shut down.
            with contextlib.suppress(OSError):
                shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def fileno(self) -> int:
        if self._closed:
            raise EOFError("stream has been closed")
        return int(self.sock.fileno())

    def read_some(self, max_count: int) -> bytes:
        raw = self._raw
        if raw is not None and not self._closed:
            # gevent's recv() is a Python frame around this same call; it
            # only earns its keep when nothing is there (it waits in the hub).
            try:
                data: bytes = raw.recv(max_count)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._broken(exc) from exc
            else:
                if not data:
                    self.close()
                    raise EOFError(f"{self._KIND} closed by peer")
                return data
        received: bytes = self._receive(self._sock.recv, max_count)
        return received

    def read_ready(self, max_count: int) -> bytes:
        if self._closed:
            return b""
        raw, flags = self._raw, 0
        if raw is None:
            if not self._dontwait:
                return b""  # TLS: its own buffer is `has_pending`'s to report
            raw, flags = self._sock, _MSG_DONTWAIT  # a plain thread's blocking socket
        try:
            data: bytes = raw.recv(max_count, flags)
        except OSError:  # nothing there (BlockingIOError), or broken: `read_some` says which
            return b""
        return data  # at the end, b"": the next `read_some` reports it

    def read_into(self, buffer: memoryview) -> int:
        count: int = self._receive(self.sock.recv_into, buffer)
        return count

    def read_body_into(self, buffer: memoryview) -> int:
        # A peer with Nagle's algorithm on (stock RPyC) holds the last small
        # piece of the body until what came is acknowledged, which the kernel
        # delays for a frame of ours to carry: a grpyc client's 1 MiB echo with
        # a stock server took 60 ms on one connection in three, else ~20.
        self.ack_now()
        size = len(buffer)
        low_water = self._body_low_water(size)
        if not low_water:
            return self.read_into(buffer)
        self._set_low_water(low_water)
        try:
            with gevent.Timeout(_BODY_PATIENCE, False):
                return self.read_into(buffer)
        finally:
            # Every other read waits for one byte: a frame may be that short.
            self._set_low_water(1)
        # The sender is slower than the mark: the rest of this body (reads of
        # fewer bytes) is read as it comes. With the mark set for each read, a
        # body sent 64 KiB every 10 ms cost 105 waits and 294 system calls
        # for 4 MiB, against 65 and 131 without the mark.
        self._slow_body = size
        return self.read_into(buffer)

    def _body_low_water(self, size: int) -> int:
        """The mark for a read of the ``size`` bytes left of a body; 0: none."""
        if not self._low_water or size < _BODY_LOW_WATER_FROM or size < self._slow_body:
            return 0
        share = self._receive_buffer() // _BODY_LOW_WATER_SHARE
        low_water = min(size, _BODY_LOW_WATER, share)
        return low_water if low_water >= _BODY_LOW_WATER_MIN else 0

    def ack_now(self) -> bool:
        if not self._tcp:
            return True  # Unix sockets acknowledge nothing
        if not _TCP_QUICKACK:
            return False
        # OSError: the socket broke or closed; the next read or write reports it.
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        return True

    def _receive_buffer(self) -> int:
        try:
            size: int = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except OSError:
            return 0  # broken or closed: the read reports it
        return size

    def _set_low_water(self, count: int) -> None:
        # OSError: the socket broke or closed; the read reports it.
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, count)

    def _receive(self, receive: Callable[[Any], Any], argument: Any) -> Any:
        # A timeout set on the socket by its owner does not end the stream.
        return self._read_retrying(lambda: receive(argument), TimeoutError, _no_wait)

    def write(self, data: BytesLike) -> None:
        if self._closed:
            raise EOFError("stream has been closed")
        try:
            # One plain send() usually takes it all; gevent's sendall() costs
            # a getsockopt() and its chunking on every call, and its send()
            # a Python frame around the OS socket's.
            raw = self._raw
            if raw is None:
                sent = self._sock.send(data)
            else:
                try:
                    sent = raw.send(data)
                except BlockingIOError:
                    sent = 0  # the socket is full: gevent's sendall() waits for room
            if sent < len(data):
                self._sock.sendall(memoryview(data)[sent:])
        except OSError as exc:
            raise self._broken(exc) from exc

    def write_buffers(self, buffers: Sequence[BytesLike]) -> None:
        if len(buffers) == 1:
            self.write(buffers[0])
            return
        if not self._vectored:
            for data in buffers:
                self.write(data)
            return
        if self._closed:
            raise EOFError("stream has been closed")
        try:
            write_vectored(self.sock.sendmsg, buffers)
        except OSError as exc:
            raise self._broken(exc) from exc

    def poll(self, timeout: float | None) -> bool:
        if self._closed:
            raise EOFError("stream has been closed")
        # TLS may hold decrypted bytes that the descriptor no longer shows.
        if self.has_pending():
            return True
        return wait_readable(self.fileno(), timeout, self.cooperative)


class TunneledSocketStream(SocketStream):
    """A socket stream that also closes its tunnel (e.g. SSH) when closed. RPyC-compatible."""

    def __init__(self, sock: Any, tun: Any = None, *, nodelay: bool = True) -> None:
        super().__init__(sock, nodelay=nodelay)
        self.tun = tun

    def close(self) -> None:
        super().close()
        tun, self.tun = self.tun, None
        if tun is not None:
            tun.close()
