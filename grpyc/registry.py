"""Registry servers and clients: RPyC's service discovery (PROTOCOL.md section 8).

A registry keeps a table ``name -> {(host, port): last seen}``. Servers
announce themselves with REGISTER (again every ``REREGISTER_INTERVAL``),
clients look them up with QUERY and LIST, and entries not refreshed within
the pruning timeout are dropped.

This module owns both ends of that protocol on gevent sockets, so it is
cooperative with or without monkey patching:

- ``UDPRegistryServer`` / ``TCPRegistryServer`` answer requests; the table,
  the commands and the checks of peer bytes live in ``RegistryServer``, the
  subclasses only move bytes.
- ``RegistryClient`` is the one interface servers and discovery use;
  ``UDPRegistryClient`` and ``TCPRegistryClient`` speak the protocol (to
  grpyc or stock rpyc registries), ``RedisRegistryClient`` keeps the same
  table in Redis for fleets that broadcasts do not reach.

Invariants: peer bytes are checked in one place (``_parse_request`` on the
server, ``_reply_is_valid`` on the client); a request that is garbage, of
the wrong shape or over ``max_request_size`` is logged and gets no reply,
and the server goes on. Nothing is printed: each server logs to its own
``logging`` logger.
"""

from __future__ import annotations

import abc
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gevent
import gevent.monkey
from gevent import socket as gsocket
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

from grpyc import brine
from grpyc.consts import DEFAULT_REGISTRY_PORT
from grpyc.lib import Timeout

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE",
    "DEFAULT_PRUNING_TIMEOUT",
    "REGISTRY_PORT",
    "RedisRegistryClient",
    "RegistryClient",
    "RegistryServer",
    "TCPRegistryClient",
    "TCPRegistryServer",
    "UDPRegistryClient",
    "UDPRegistryServer",
]

REGISTRY_PORT = DEFAULT_REGISTRY_PORT
# RPyC's value: servers re-register every 60 s, so an entry survives three
# lost datagrams before it is dropped.
DEFAULT_PRUNING_TIMEOUT = 4 * 60
# A request is a few service names; 8 KiB leaves room for many aliases and is
# far below the 64 KiB a datagram can carry, so a flood of huge datagrams
# costs the server a length check each.
DEFAULT_MAX_REQUEST_SIZE = 8192
# The largest UDP payload; TCP replies are held to the same bound.
_MAX_REPLY_SIZE = 64 * 1024
# Registry commands are pure table look-ups: this many in flight at once is
# far beyond real load and bounds what a flood can hold.
_DEFAULT_MAX_HANDLERS = 64
# RPyC's TCP registry gives a client 3 s to send its request.
_DEFAULT_REQUEST_TIMEOUT = 3.0
# Bursts of servers re-registering at once should queue, not be refused.
_TCP_BACKLOG = 128
# In-flight TCP requests get this long to finish when the server closes.
_CLOSE_GRACE = 0.5
# Back-off after a failed datagram read, so a broken socket cannot spin.
_READ_RETRY_MIN, _READ_RETRY_MAX = 0.01, 1.0
# RPyC's default bind: the registry exists for LAN discovery, so it must be
# reachable from other hosts. Pass host="127.0.0.1" to keep it local.
_ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - a LAN registry binds all interfaces by design
_BROADCAST = "255.255.255.255"
_MAGIC = "RPYC"

Address = tuple[str, int]


# ---------------------------------------------------------------------------
# checks of peer bytes and caller arguments
# ---------------------------------------------------------------------------


class _InvalidRequestError(ValueError):
    """Bytes that are not a well-formed registry request."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _is_port(value: Any) -> bool:
    return type(value) is int and 0 < value < 65536


def _query_args_ok(args: tuple[Any, ...]) -> bool:
    return len(args) == 1 and isinstance(args[0], str)


def _list_args_ok(args: tuple[Any, ...]) -> bool:
    if len(args) != 1 or not isinstance(args[0], tuple) or len(args[0]) != 1:
        return False
    return args[0][0] is None or isinstance(args[0][0], str)


def _register_args_ok(args: tuple[Any, ...]) -> bool:
    if len(args) != 2 or not isinstance(args[0], tuple):
        return False
    return all(isinstance(name, str) for name in args[0]) and _is_port(args[1])


def _unregister_args_ok(args: tuple[Any, ...]) -> bool:
    return len(args) == 1 and _is_port(args[0])


_ARGS_OK: dict[str, Callable[[tuple[Any, ...]], bool]] = {
    "QUERY": _query_args_ok,
    "LIST": _list_args_ok,
    "REGISTER": _register_args_ok,
    "UNREGISTER": _unregister_args_ok,
}


def _parse_request(data: bytes, max_request_size: int) -> tuple[str, tuple[Any, ...]]:
    """``(COMMAND, args)`` of a request, checked against PROTOCOL.md section 8.

    Raises:
        _InvalidRequestError: the bytes are oversized, undecodable or of the wrong shape.
    """
    if len(data) > max_request_size:
        raise _InvalidRequestError(
            f"request of {len(data)} bytes exceeds max_request_size={max_request_size}"
        )
    try:
        request = brine.load(data)
    except ValueError as exc:
        raise _InvalidRequestError(f"undecodable request of {len(data)} bytes: {exc}") from exc
    if not isinstance(request, tuple) or len(request) != 3:
        raise _InvalidRequestError(
            f"request is not a (magic, command, args) triple: {_short(request)}"
        )
    magic, cmd, args = request
    if magic != _MAGIC:
        raise _InvalidRequestError(f"invalid magic {_short(magic)}")
    # RPyC looks commands up case-insensitively.
    command = cmd.upper() if isinstance(cmd, str) else None
    if command not in _ARGS_OK:
        raise _InvalidRequestError(f"unknown command {_short(cmd)}")
    if not isinstance(args, tuple) or not _ARGS_OK[command](args):
        raise _InvalidRequestError(f"invalid arguments for {command}: {_short(args)}")
    return command, args


def _is_server_tuple(reply: Any) -> bool:
    return isinstance(reply, tuple) and all(
        isinstance(entry, tuple)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and type(entry[1]) is int
        for entry in reply
    )


def _is_name_tuple_or_none(reply: Any) -> bool:
    return reply is None or (
        isinstance(reply, tuple) and all(isinstance(name, str) for name in reply)
    )


_REPLY_OK: dict[str, Callable[[Any], bool]] = {
    "QUERY": _is_server_tuple,
    "LIST": _is_name_tuple_or_none,
    "REGISTER": lambda reply: reply == "OK",
    "UNREGISTER": lambda reply: reply == "OK",
}


def _reply_is_valid(cmd: str, data: bytes) -> tuple[bool, Any]:
    """``(True, reply)`` when ``data`` is a well-formed reply to ``cmd``."""
    try:
        reply = brine.load(data)
    except ValueError:
        return False, None
    return _REPLY_OK[cmd](reply), reply


def _is_complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole brine value (TCP has no framing)."""
    try:
        brine.load(data)
    except ValueError:
        return False
    return True


def _check_aliases(aliases: Iterable[str]) -> tuple[str, ...]:
    if isinstance(aliases, str):
        raise TypeError(f"aliases must be an iterable of names, not the string {aliases!r}")
    names = tuple(aliases)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"service alias must be str, got {name!r}")
    return names


def _check_port(port: int) -> int:
    if not _is_port(port):
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")
    return port


def _check_pruning_timeout(pruning_timeout: float | None) -> float:
    if pruning_timeout is None:
        return DEFAULT_PRUNING_TIMEOUT
    if not pruning_timeout > 0:
        raise ValueError(f"pruning_timeout must be > 0 seconds, got {pruning_timeout!r}")
    return float(pruning_timeout)


def _read_message(sock: gsocket.socket, max_size: int, deadline: Timeout) -> bytes:
    """Bytes from ``sock`` until they form a brine value, EOF, or pass ``max_size``.

    Raises:
        TimeoutError: ``deadline`` passed first.
    """
    data = bytearray()
    while len(data) <= max_size:
        if deadline.expired():
            raise TimeoutError(f"no complete message within the deadline ({len(data)} bytes)")
        sock.settimeout(deadline.timeleft())
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if _is_complete(bytes(data)):
            break
    return bytes(data)


# ---------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------


class RegistryServer:
    """The registry table, its pruning and its commands. RPyC-compatible.

    Subclasses move bytes (UDP or TCP); everything a request means is decided
    here, in ``handle_request``, without I/O.

    Differences from RPyC: ``on_service_removed`` runs only for entries that
    existed (RPyC also calls it for every name on any UNREGISTER); stale
    entries are pruned periodically as well as on QUERY, and LIST never
    shows them; ``close()`` may be called at any time, more than once.
    """

    def __init__(
        self,
        listenersock: gsocket.socket,
        pruning_timeout: float | None = None,
        logger: logging.Logger | None = None,
        allow_listing: bool = False,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    ) -> None:
        """Set up an empty table around ``listenersock``.

        Args:
            listenersock: the bound socket the subclass serves on.
            pruning_timeout: seconds without REGISTER after which an entry is
                dropped; None is ``DEFAULT_PRUNING_TIMEOUT``.
            allow_listing: answer LIST (otherwise its reply is None, as in RPyC).
            clock: monotonic seconds; tests pass a fake one to drive pruning.
            max_request_size: larger requests are logged and ignored.
        """
        self.sock: gsocket.socket | None = listenersock
        self.port: int = listenersock.getsockname()[1]
        self.pruning_timeout = _check_pruning_timeout(pruning_timeout)
        self.allow_listing = allow_listing
        self.max_request_size = max_request_size
        self.logger = logger if logger is not None else self._get_logger()
        self.services: dict[str, dict[Address, float]] = {}
        self.active = False
        self._clock = clock
        self._closed = Event()
        self._pruner: gevent.Greenlet | None = None

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger(f"grpyc.registry.{type(self).__name__}.{self.port}")

    # hooks -----------------------------------------------------------------

    def on_service_added(self, name: str, addrinfo: Address) -> None:
        """Called when a server joins under ``name`` (not on re-registration)."""

    def on_service_removed(self, name: str, addrinfo: Address) -> None:
        """Called when a server leaves ``name``: unregistered or pruned."""

    def _call_hook(self, hook: Callable[[str, Address], None], name: str, addr: Address) -> None:
        try:
            hook(name, addr)
        except Exception:
            # To the log: a failing user hook must not stop the registry.
            self.logger.exception("registry hook %s(%r, %r) failed", hook.__name__, name, addr)

    # the table -------------------------------------------------------------

    def _add_service(self, name: str, addrinfo: Address) -> None:
        servers = self.services.setdefault(name, {})
        is_new = addrinfo not in servers
        servers[addrinfo] = self._clock()
        if is_new:
            self._call_hook(self.on_service_added, name, addrinfo)

    def _remove_service(self, name: str, addrinfo: Address) -> None:
        servers = self.services.get(name)
        if servers is None or servers.pop(addrinfo, None) is None:
            return
        if not servers:
            del self.services[name]
        self._call_hook(self.on_service_removed, name, addrinfo)

    def _prune_name(self, name: str) -> None:
        oldest = self._clock() - self.pruning_timeout
        stale = [addr for addr, seen in self.services.get(name, {}).items() if seen < oldest]
        for addrinfo in stale:
            self.logger.debug("pruning stale %s at %s:%s", name, *addrinfo)
            self._remove_service(name, addrinfo)

    def prune(self) -> None:
        """Drop every entry not refreshed within ``pruning_timeout``."""
        for name in list(self.services):
            self._prune_name(name)

    # commands (RPyC-compatible names and signatures) -------------------------

    def cmd_query(self, host: str, name: str) -> tuple[Address, ...]:
        """Servers of ``name``, least recently refreshed first (as in RPyC)."""
        name = name.upper()
        self._prune_name(name)
        servers = sorted(self.services.get(name, {}).items(), key=lambda item: item[1])
        return tuple(addr for addr, _ in servers)

    def cmd_list(self, host: str, filter_host: tuple[str | None]) -> tuple[str, ...] | None:
        """Registered names (only those on ``filter_host[0]`` when it is set),
        or None when listing is off."""
        if not self.allow_listing:
            return None
        self.prune()
        wanted = filter_host[0]
        return tuple(
            name
            for name, servers in self.services.items()
            if not wanted or any(addr[0] == wanted for addr in servers)
        )

    def cmd_register(self, host: str, names: tuple[str, ...], port: int) -> str:
        """Record ``host:port`` under each of ``names``; the host is the sender's."""
        self.logger.debug("registering %s:%s as %s", host, port, ", ".join(names))
        for name in names:
            self._add_service(name.upper(), (host, port))
        return "OK"

    def cmd_unregister(self, host: str, port: int) -> str:
        """Remove ``host:port`` from every name."""
        self.logger.debug("unregistering %s:%s", host, port)
        for name in list(self.services):
            self._remove_service(name, (host, port))
        return "OK"

    def handle_request(self, data: bytes, host: str) -> bytes | None:
        """The reply to one request from ``host``, or None when none is due."""
        try:
            cmd, args = _parse_request(data, self.max_request_size)
        except _InvalidRequestError as exc:
            self.logger.warning("ignored request from %s: %s", host, exc)
            return None
        try:
            return brine.dump(getattr(self, f"cmd_{cmd.lower()}")(host, *args))
        except Exception:
            # To the log: a failing (overridden) command must not stop the registry.
            self.logger.exception("registry command %s from %s failed", cmd, host)
            return None

    # life cycle ------------------------------------------------------------

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
        """Stop serving and release the socket; safe to call more than once."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._pruner is not None:
            _stop_others([self._pruner], 0)
        if self.active:
            self._stop_transport()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.active = False
        self.logger.debug("registry on port %s closed", self.port)

    def _start_transport(self) -> None:
        raise NotImplementedError

    def _stop_transport(self) -> None:
        raise NotImplementedError


def _stop_others(greenlets: Iterable[gevent.Greenlet], grace: float) -> None:
    """Give ``greenlets`` ``grace`` seconds to finish, then kill them; never the
    current one, so a hook or handler may close its own server."""
    current = gevent.getcurrent()
    others = [greenlet for greenlet in greenlets if greenlet is not current]
    gevent.joinall(others, timeout=grace)
    gevent.killall(others)


def _bound_socket(host: str, port: int, socktype: int, reuse_addr: bool = False) -> gsocket.socket:
    family, socktype, proto, _, sockaddr = gsocket.getaddrinfo(host, port, 0, socktype)[0]
    sock = gsocket.socket(family, socktype, proto)
    try:
        if reuse_addr:
            sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


class UDPRegistryServer(RegistryServer):
    """Registry answering datagrams (and broadcasts). RPyC-compatible.

    Binds all interfaces by default, as RPyC does, because it exists to be
    found on the LAN; pass ``host="127.0.0.1"`` to keep it on this machine.
    """

    def __init__(
        self,
        host: str = _ALL_INTERFACES,
        port: int = REGISTRY_PORT,
        pruning_timeout: float | None = None,
        logger: logging.Logger | None = None,
        allow_listing: bool = False,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        max_handlers: int = _DEFAULT_MAX_HANDLERS,
    ) -> None:
        sock = _bound_socket(host, port, gsocket.SOCK_DGRAM)
        try:
            super().__init__(
                sock,
                pruning_timeout,
                logger,
                allow_listing,
                clock=clock,
                max_request_size=max_request_size,
            )
        except BaseException:
            sock.close()
            raise
        self._handlers = Pool(max_handlers)
        self._reader: gevent.Greenlet | None = None

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger(f"grpyc.registry.udp.{self.port}")

    def _start_transport(self) -> None:
        self._reader = gevent.spawn(self._read_datagrams)

    def _stop_transport(self) -> None:
        if self._reader is not None:
            _stop_others([self._reader], 0)
        _stop_others(list(self._handlers), _CLOSE_GRACE)

    def _read_datagrams(self) -> None:
        assert self.sock is not None
        sock, retry = self.sock, _READ_RETRY_MIN
        while True:
            try:
                # One byte over the limit tells an oversized datagram from a full one.
                data, address = sock.recvfrom(self.max_request_size + 1)
            except OSError as exc:
                self.logger.warning("registry read failed: %s", exc)
                self._closed.wait(retry)
                retry = min(retry * 2, _READ_RETRY_MAX)
                continue
            retry = _READ_RETRY_MIN
            # Blocks while max_handlers are busy: the kernel queue absorbs the burst.
            self._handlers.spawn(self._answer_datagram, data, address)

    def _answer_datagram(self, data: bytes, address: Any) -> None:
        reply = self.handle_request(data, address[0])
        if reply is None or self.sock is None:
            return
        try:
            self.sock.sendto(reply, address)
        except OSError as exc:
            self.logger.warning("could not reply to %s:%s: %s", address[0], address[1], exc)


class TCPRegistryServer(RegistryServer):
    """Registry answering one request per TCP connection. RPyC-compatible.

    For networks whose routers drop broadcasts. Binds all interfaces by
    default, as RPyC does; pass ``host="127.0.0.1"`` to keep it local.
    """

    def __init__(
        self,
        host: str = _ALL_INTERFACES,
        port: int = REGISTRY_PORT,
        pruning_timeout: float | None = None,
        logger: logging.Logger | None = None,
        reuse_addr: bool = True,
        allow_listing: bool = False,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        max_connections: int = _DEFAULT_MAX_HANDLERS,
        request_timeout: float = _DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        sock = _bound_socket(host, port, gsocket.SOCK_STREAM, reuse_addr)
        try:
            sock.listen(_TCP_BACKLOG)
            super().__init__(
                sock,
                pruning_timeout,
                logger,
                allow_listing,
                clock=clock,
                max_request_size=max_request_size,
            )
        except BaseException:
            sock.close()
            raise
        self.request_timeout = request_timeout
        self._max_connections = max_connections
        self._server: StreamServer | None = None

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger(f"grpyc.registry.tcp.{self.port}")

    def _start_transport(self) -> None:
        self._server = StreamServer(
            self.sock, self._answer_connection, spawn=Pool(self._max_connections)
        )
        self._server.start()

    def _stop_transport(self) -> None:
        if self._server is not None:
            self._server.close()
            _stop_others(list(self._server.pool), _CLOSE_GRACE)

    def _answer_connection(self, sock: gsocket.socket, address: Any) -> None:
        host = address[0]
        try:
            data = _read_message(sock, self.max_request_size, Timeout(self.request_timeout))
            if not data:
                # A bare connect-and-close (port probe, health check) is no request.
                return
            reply = self.handle_request(data, host)
            if reply is not None:
                sock.sendall(reply)
        except OSError as exc:
            self.logger.info("registry connection from %s failed: %s", host, exc)


# ---------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------


class RegistryClient(abc.ABC):
    """How servers register and clients discover, whatever the backend.

    A registry that cannot be reached or does not answer in time is not an
    error: it is logged and answers as an empty registry would (``()`` from
    ``discover`` and ``list``, ``False`` from ``register``).
    """

    # Seconds between re-registrations, well inside the registry's expiry.
    REREGISTER_INTERVAL: float = 60

    @abc.abstractmethod
    def discover(self, name: str) -> tuple[Address, ...]:
        """``(host, port)`` of each server registered under ``name``."""

    @abc.abstractmethod
    def list(self, filter_host: str | None = None) -> tuple[str, ...] | None:
        """Registered service names (on ``filter_host`` only, when given);
        None when the registry does not allow listing."""

    @abc.abstractmethod
    def register(self, aliases: Iterable[str], port: int, interface: str = "") -> bool:
        """Announce a server on ``port`` under ``aliases``; True once acknowledged.

        ``interface`` is the local address to register from (the registry
        records the sender's address); "" lets the system choose.
        """

    @abc.abstractmethod
    def unregister(self, port: int) -> None:
        """Withdraw the server on ``port`` from every name."""

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing
        """Release what the client holds (nothing for the UDP and TCP clients)."""


class _ProtocolClient(RegistryClient):
    """The four commands over PROTOCOL.md section 8; subclasses move bytes."""

    # Wait for UNREGISTER's "OK", so that the entry is gone when it returns.
    _WAIT_FOR_UNREGISTER = True

    def __init__(
        self, ip: str, port: int, timeout: float | None, logger: logging.Logger | None
    ) -> None:
        self.ip = ip
        self.port = port
        self.timeout = timeout
        self.logger = logger if logger is not None else self._get_logger()

    def _get_logger(self) -> logging.Logger:
        raise NotImplementedError

    def _transact(
        self, cmd: str, args: tuple[Any, ...], interface: str = "", wait: bool = True
    ) -> tuple[bool, Any]:
        """Send one request; ``(True, reply)`` for a valid reply, else ``(False, None)``."""
        raise NotImplementedError

    def discover(self, name: str) -> tuple[Address, ...]:
        if not isinstance(name, str):
            raise TypeError(f"service name must be str, got {name!r}")
        ok, reply = self._transact("QUERY", (name,))
        return reply if ok else ()

    def list(self, filter_host: str | None = None) -> tuple[str, ...] | None:
        if filter_host is not None and not isinstance(filter_host, str):
            raise TypeError(f"filter_host must be str or None, got {filter_host!r}")
        ok, reply = self._transact("LIST", ((filter_host,),))
        return reply if ok else ()

    def register(self, aliases: Iterable[str], port: int, interface: str = "") -> bool:
        request = (_check_aliases(aliases), _check_port(port))
        self.logger.info("registering port %s on %s:%s", port, self.ip, self.port)
        ok, _ = self._transact("REGISTER", request, interface=interface)
        if not ok:
            self.logger.warning("no registry at %s:%s acknowledged", self.ip, self.port)
        return ok

    def unregister(self, port: int) -> None:
        _check_port(port)
        self.logger.info("unregistering port %s from %s:%s", port, self.ip, self.port)
        self._transact("UNREGISTER", (port,), wait=self._WAIT_FOR_UNREGISTER)


class UDPRegistryClient(_ProtocolClient):
    """Registry client over datagrams, broadcast by default. RPyC-compatible.

    With a broadcast address the first valid reply wins, as in RPyC. Replies
    from any port other than the registry's, or malformed ones, are skipped
    while the timeout lasts.
    """

    # Fire-and-forget, as in RPyC: a closing server must not stall for the
    # timeout when no registry listens.
    _WAIT_FOR_UNREGISTER = False

    def __init__(
        self,
        ip: str = _BROADCAST,
        port: int = REGISTRY_PORT,
        timeout: float | None = 2,
        bcast: bool | None = None,
        logger: logging.Logger | None = None,
        ipv6: bool = False,
    ) -> None:
        super().__init__(ip, port, timeout, logger)
        self.sock_family = gsocket.AF_INET6 if ipv6 else gsocket.AF_INET
        if ipv6:
            self.bcast = False
        else:
            self.bcast = bcast if bcast is not None else "255" in ip.split(".")

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger("grpyc.registry.client.udp")

    def _transact(
        self, cmd: str, args: tuple[Any, ...], interface: str = "", wait: bool = True
    ) -> tuple[bool, Any]:
        request = brine.dump((_MAGIC, cmd, args))
        deadline = Timeout(self.timeout)
        with gsocket.socket(self.sock_family, gsocket.SOCK_DGRAM) as sock:
            try:
                if interface:
                    sock.bind((interface, 0))
                if self.bcast:
                    sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_BROADCAST, 1)
                sock.sendto(request, (self.ip, self.port))
                return self._await_reply(sock, cmd, deadline) if wait else (False, None)
            except OSError as exc:
                self.logger.warning("%s to %s:%s failed: %s", cmd, self.ip, self.port, exc)
                return False, None

    def _await_reply(self, sock: gsocket.socket, cmd: str, deadline: Timeout) -> tuple[bool, Any]:
        while not deadline.expired():
            sock.settimeout(deadline.timeleft())
            try:
                data, address = sock.recvfrom(_MAX_REPLY_SIZE)
            except TimeoutError:
                break
            if address[1] != self.port:
                continue
            ok, reply = _reply_is_valid(cmd, data)
            if ok:
                return True, reply
            self.logger.warning("ignored invalid %s reply from %s: %s", cmd, address[0], data[:80])
        self.logger.debug("no %s reply from %s:%s in time", cmd, self.ip, self.port)
        return False, None


class TCPRegistryClient(_ProtocolClient):
    """Registry client over one TCP connection per request. RPyC-compatible."""

    def __init__(
        self,
        ip: str,
        port: int = REGISTRY_PORT,
        timeout: float | None = 2,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(ip, port, timeout, logger)

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger("grpyc.registry.client.tcp")

    def _transact(
        self, cmd: str, args: tuple[Any, ...], interface: str = "", wait: bool = True
    ) -> tuple[bool, Any]:
        request = brine.dump((_MAGIC, cmd, args))
        deadline = Timeout(self.timeout)
        source = (interface, 0) if interface else None
        try:
            sock = gsocket.create_connection(
                (self.ip, self.port), timeout=self.timeout, source_address=source
            )
            with sock:
                sock.sendall(request)
                if not wait:
                    return False, None
                data = _read_message(sock, _MAX_REPLY_SIZE, deadline)
        except OSError as exc:
            self.logger.warning("%s to %s:%s failed: %s", cmd, self.ip, self.port, exc)
            return False, None
        ok, reply = _reply_is_valid(cmd, data)
        if not ok:
            self.logger.warning(
                "invalid %s reply from %s:%s: %s", cmd, self.ip, self.port, data[:80]
            )
            return False, None
        return True, reply


# ---------------------------------------------------------------------------
# Redis backend
# ---------------------------------------------------------------------------

# Data model: one sorted set per name, "{prefix}svc:{NAME}", whose members are
# "host:port" scored by their expiry (ms, Redis server clock), and one sorted
# set "{prefix}names" of names scored by their latest expiry. The scripts read
# Redis's own TIME, so clients need no synchronised clocks, and every command
# is one atomic round trip. Each key also expires with its last member.
_LUA_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: names key, then one svc key per name. ARGV: ttl ms, member, names.
_REGISTER_LUA = (
    _LUA_NOW
    + """
local expiry = now + tonumber(ARGV[1])
local score = string.format('%.0f', expiry)
for i = 2, #KEYS do
    local name = ARGV[i + 1]
    redis.call('ZADD', KEYS[i], score, ARGV[2])
    local top = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', KEYS[i], top[2])
    local known = redis.call('ZSCORE', KEYS[1], name)
    if not known or tonumber(known) < expiry then
        redis.call('ZADD', KEYS[1], score, name)
    end
end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then
    redis.call('PEXPIREAT', KEYS[1], top[2])
end
return #KEYS - 1
"""
)

# KEYS: svc key. Live members, longest-registered first.
_DISCOVER_LUA = (
    _LUA_NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)

# KEYS: names key. ARGV: svc key prefix, host filter ('' for none).
# Reads svc keys it is not given: single-instance Redis, not Cluster.
_LIST_LUA = (
    _LUA_NOW
    + """
local floor = string.format('%.0f', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', floor)
local out = {}
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', ARGV[1] .. name, '(' .. floor, '+inf')) do
        if ARGV[2] == '' or string.match(member, '^(.*):%d+$') == ARGV[2] then
            table.insert(out, name)
            break
        end
    end
end
return out
"""
)

# KEYS: names key. ARGV: svc key prefix, member.
_UNREGISTER_LUA = """
local removed = 0
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    removed = removed + redis.call('ZREM', ARGV[1] .. name, ARGV[2])
end
return removed
"""


def _import_redis() -> Any:
    try:
        import redis  # optional dependency: loaded on first use
    except ImportError as exc:
        raise ImportError(
            "RedisRegistryClient needs the redis package: pip install grpyc[redis]"
        ) from exc
    return redis


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _outcome(call: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, call()
    except Exception as exc:  # noqa: BLE001 - handed back to the calling greenlet, which raises it
        return False, exc


def _local_address_towards(host: str, port: int) -> str:
    """The local address the system routes to ``host`` from (sends nothing)."""
    family, _, _, _, sockaddr = gsocket.getaddrinfo(host, port, 0, gsocket.SOCK_DGRAM)[0]
    with gsocket.socket(family, gsocket.SOCK_DGRAM) as probe:
        probe.connect(sockaddr)
        return str(probe.getsockname()[0])


class RedisRegistryClient(RegistryClient):
    """The registry kept in Redis, for fleets that broadcasts do not reach.

    ``register`` stores each alias with an expiry ``ttl`` seconds ahead (Redis
    server clock), so a server that dies disappears within ``ttl``; live
    servers refresh every ``REREGISTER_INTERVAL`` (a third of ``ttl``).
    Listing is always allowed. Needs Redis 5+ (single instance, not Cluster)
    and the ``redis`` package (``pip install grpyc[redis]``).

    The redis client blocks, so each call runs in the gevent hub's
    threadpool, unless ``socket`` is monkey-patched and it cooperates itself.
    """

    def __init__(
        self,
        url: Any = "redis://127.0.0.1:6379/0",
        ttl: float = 30.0,
        prefix: str = "grpyc:",
        logger: logging.Logger | None = None,
        *,
        timeout: float | None = 2.0,
        host: str | None = None,
    ) -> None:
        """Connect lazily to Redis at ``url``; nothing is sent until the first call.

        Args:
            url: a ``redis://`` URL, or a ready redis client (then not closed by ``close()``).
            ttl: seconds an entry lives without re-registration.
            prefix: start of every key this client touches.
            timeout: socket timeout of a client built from ``url``.
            host: address to register this machine's servers under; default: the
                local address of the route to the Redis server.

        Raises:
            ImportError: the redis package is not installed.
            ValueError: ``ttl`` is not positive.
        """
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
        redis = _import_redis()
        self._owns_client = isinstance(url, str)
        if self._owns_client:
            url = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._redis = url
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.ttl = float(ttl)
        self.REREGISTER_INTERVAL = self.ttl / 3
        self.prefix = prefix
        self.host = host
        self.logger = logger if logger is not None else logging.getLogger("grpyc.registry.redis")
        self._names_key = f"{prefix}names"
        self._svc_prefix = f"{prefix}svc:"
        self._registered_hosts: dict[int, str] = {}
        self._scripts = {
            "register": self._redis.register_script(_REGISTER_LUA),
            "discover": self._redis.register_script(_DISCOVER_LUA),
            "list": self._redis.register_script(_LIST_LUA),
            "unregister": self._redis.register_script(_UNREGISTER_LUA),
        }

    def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        call = functools.partial(self._scripts[script], keys=keys, args=args)
        if gevent.monkey.is_module_patched("socket"):
            return call()
        # The blocking client waits in a worker thread; only this greenlet waits for it.
        ok, value = gevent.get_hub().threadpool.apply(_outcome, (call,))
        if not ok:
            raise value
        return value

    def _attempt(
        self, what: str, script: str, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[bool, Any]:
        try:
            return True, self._run(script, keys, args)
        except self._errors as exc:
            self.logger.warning("redis registry %s failed: %s", what, exc)
            return False, None

    def _advertised_host(self, interface: str) -> str:
        if interface:
            return interface
        if self.host is None:
            kwargs = getattr(getattr(self._redis, "connection_pool", None), "connection_kwargs", {})
            redis_host = kwargs.get("host")
            # No host: a Unix socket, so the servers are on Redis's machine.
            self.host = (
                _local_address_towards(redis_host, kwargs.get("port", 6379))
                if redis_host
                else "127.0.0.1"
            )
        return self.host

    def discover(self, name: str) -> tuple[Address, ...]:
        if not isinstance(name, str):
            raise TypeError(f"service name must be str, got {name!r}")
        key = f"{self._svc_prefix}{name.upper()}"
        ok, members = self._attempt(f"discover {name!r}", "discover", [key], [])
        servers = []
        for member in members if ok else ():
            host, _, port = _text(member).rpartition(":")
            if host and port.isdigit():
                servers.append((host, int(port)))
        return tuple(servers)

    def list(self, filter_host: str | None = None) -> tuple[str, ...] | None:
        args = [self._svc_prefix, filter_host or ""]
        ok, names = self._attempt("list", "list", [self._names_key], args)
        return tuple(_text(name) for name in names) if ok else ()

    def register(self, aliases: Iterable[str], port: int, interface: str = "") -> bool:
        names = tuple(dict.fromkeys(name.upper() for name in _check_aliases(aliases)))
        _check_port(port)
        try:
            host = self._advertised_host(interface)
        except OSError as exc:
            self.logger.warning("cannot tell this machine's address towards redis: %s", exc)
            return False
        self._registered_hosts[port] = host
        if not names:
            return True
        keys = [self._names_key, *(f"{self._svc_prefix}{name}" for name in names)]
        ttl_ms = max(1, round(self.ttl * 1000))
        ok, _ = self._attempt("register", "register", keys, [ttl_ms, f"{host}:{port}", *names])
        return ok

    def unregister(self, port: int) -> None:
        _check_port(port)
        host = self._registered_hosts.pop(port, None)
        if host is None:
            try:
                host = self._advertised_host("")
            except OSError as exc:
                self.logger.warning("cannot tell this machine's address towards redis: %s", exc)
                return
        args = [self._svc_prefix, f"{host}:{port}"]
        self._attempt("unregister", "unregister", [self._names_key], args)

    def close(self) -> None:
        """Close the redis client if this object built it from a URL."""
        if self._owns_client:
            self._redis.close()
