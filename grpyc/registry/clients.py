"""Registry clients (registrars): how servers register and clients discover.

``RegistryClient`` is the one interface servers and ``grpyc.discover``
use, whatever the backend; ``UDPRegistryClient`` and ``TCPRegistryClient``
speak PROTOCOL.md section 8 to grpyc or stock rpyc registries (the Redis
backend lives in ``grpyc.registry.redis_backend``). ``register_periodically``
is the loop a server runs to stay registered.

A registry that cannot be reached or does not answer in time is not an
error: it is logged and answers as an empty registry would. Peer bytes are
checked in one place, ``grpyc.registry.wire.parse_reply``.
"""

from __future__ import annotations

import abc
import errno
import logging
from collections.abc import Iterable
from typing import Any, ClassVar, Final, Protocol

from gevent import socket as gsocket

from grpyc.lib import Timeout
from grpyc.registry._sockets import LIMITED_BROADCAST, LOCAL_HOST, REGISTRY_PORT, read_message
from grpyc.registry.wire import check_aliases, check_port, encode_request, parse_reply

__all__ = [
    "RegistryClient",
    "StopSignal",
    "TCPRegistryClient",
    "UDPRegistryClient",
    "register_periodically",
]

# The largest UDP payload; TCP replies are read up to the same bound.
_MAX_REPLY_SIZE: Final = 64 * 1024
# A registration the registry did not acknowledge is retried this soon (as
# in RPyC), instead of after the full re-registration interval.
DEFAULT_REGISTER_RETRY: Final = 1.0

Address = tuple[str, int]


class StopSignal(Protocol):
    """What ``register_periodically`` waits on: a gevent ``Event``, for example."""

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds; True once the loop must stop."""
        ...


def register_periodically(
    registrar: Any,
    aliases: Iterable[str],
    port: int,
    stop: StopSignal,
    interface: str = "",
    retry_interval: float = DEFAULT_REGISTER_RETRY,
) -> None:
    """Register now, then every ``registrar.REREGISTER_INTERVAL`` seconds, until ``stop``.

    Blocks the calling greenlet; returns as soon as ``stop.wait`` returns
    True. A registration that fails or is not acknowledged is logged and
    retried after ``retry_interval`` seconds, as RPyC's servers do. Does not
    unregister: the caller does that when it closes. Works with any
    registrar that has RPyC's ``register(aliases, port, interface)`` and
    ``REREGISTER_INTERVAL``, stock rpyc's included.

    Args:
        stop: waited on between registrations (``gevent.event.Event``, or
            anything whose ``wait(timeout)`` returns True once set).
        interface: the local address to register from ("" lets the system
            choose); a server passes the address it is bound to.
    """
    names = check_aliases(aliases)
    check_port(port)
    logger = getattr(registrar, "logger", None) or logging.getLogger("grpyc.registry.client")
    while True:
        try:
            registered = bool(registrar.register(names, port, interface=interface))
        except Exception:
            # To the log, then retried: the registry may come back.
            logger.exception("registering %s on port %s failed", ", ".join(names), port)
            registered = False
        if stop.wait(registrar.REREGISTER_INTERVAL if registered else retry_interval):
            return


class RegistryClient(abc.ABC):
    """How servers register and clients discover, whatever the backend.

    A registry that cannot be reached or does not answer in time is not an
    error: it is logged and answers as an empty registry would (``()`` from
    ``discover`` and ``list``, ``False`` from ``register``).
    """

    # Seconds between re-registrations, well inside the registry's expiry.
    REREGISTER_INTERVAL: float = 60
    logger: logging.Logger

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

    # The module's function as a method: ``registrar.register_periodically(...)``.
    register_periodically = register_periodically


class _ProtocolClient(RegistryClient):
    """The four commands over PROTOCOL.md section 8; subclasses move bytes."""

    # Wait for UNREGISTER's "OK", so that the entry is gone when it returns.
    _WAIT_FOR_UNREGISTER = True
    _LOGGER_NAME: ClassVar[str]

    def __init__(
        self, ip: str, port: int, timeout: float | None, logger: logging.Logger | None
    ) -> None:
        self.ip = ip
        self.port = port
        self.timeout = timeout
        self.logger = logger if logger is not None else self._get_logger()
        # The interface each port registered from: the registry keys entries
        # by the sender's address, so UNREGISTER must leave from the same one.
        self._interfaces: dict[int, str] = {}

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger(self._LOGGER_NAME)

    def _transact(
        self, cmd: str, args: tuple[Any, ...], interface: str = "", wait: bool = True
    ) -> tuple[bool, Any]:
        """Send one request; ``(True, reply)`` for a valid reply, else ``(False, None)``."""
        request = encode_request(cmd, args)
        deadline = Timeout(self.timeout)
        try:
            return self._exchange(cmd, request, interface, deadline if wait else None)
        except OSError as exc:
            self.logger.warning("%s to %s:%s failed: %s", cmd, self.ip, self.port, exc)
            return False, None

    @abc.abstractmethod
    def _exchange(
        self, cmd: str, request: bytes, interface: str, deadline: Timeout | None
    ) -> tuple[bool, Any]:
        """Send ``request`` from ``interface`` and read the reply to ``cmd`` by ``deadline``.

        Returns ``(True, reply)`` for a valid reply, else ``(False, None)``;
        with no ``deadline``, ``(False, None)`` once sent, without reading.

        Raises:
            OSError: the request could not be sent or the reply not read.
        """

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
        request = (check_aliases(aliases), check_port(port))
        self._interfaces[port] = interface
        self.logger.info("registering port %s on %s:%s", port, self.ip, self.port)
        ok, _ = self._transact("REGISTER", request, interface=interface)
        if not ok:
            self.logger.warning("no registry at %s:%s acknowledged", self.ip, self.port)
        return ok

    def unregister(self, port: int) -> None:
        check_port(port)
        self.logger.info("unregistering port %s from %s:%s", port, self.ip, self.port)
        interface = self._interfaces.pop(port, "")
        self._transact("UNREGISTER", (port,), interface=interface, wait=self._WAIT_FOR_UNREGISTER)


class UDPRegistryClient(_ProtocolClient):
    """Registry client over datagrams, broadcast by default. RPyC-compatible.

    With a broadcast address the first valid reply wins, as in RPyC. Replies
    from any port other than the registry's, or malformed ones, are skipped
    while the timeout lasts.

    Where grpyc differs from RPyC: when no route carries the broadcast to
    255.255.255.255 (a machine with no network: ``ENETUNREACH``), the
    request goes to 127.0.0.1 instead, the only registry such a machine
    can reach; RPyC's client raises ``OSError``.
    """

    # Fire-and-forget, as in RPyC: a closing server must not stall for the
    # timeout when no registry listens.
    _WAIT_FOR_UNREGISTER = False
    _LOGGER_NAME = "grpyc.registry.client.udp"

    def __init__(
        self,
        ip: str = LIMITED_BROADCAST,
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

    def _exchange(
        self, cmd: str, request: bytes, interface: str, deadline: Timeout | None
    ) -> tuple[bool, Any]:
        with gsocket.socket(self.sock_family, gsocket.SOCK_DGRAM) as sock:
            if interface:
                sock.bind((interface, 0))
            if self.bcast:
                sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_BROADCAST, 1)
            self._send(sock, request)
            return (False, None) if deadline is None else self._await_reply(sock, cmd, deadline)

    def _send(self, sock: gsocket.socket, request: bytes) -> None:
        try:
            sock.sendto(request, (self.ip, self.port))
        except OSError as exc:
            if exc.errno != errno.ENETUNREACH or self.ip != LIMITED_BROADCAST:
                raise
            self.logger.debug("no route for a broadcast: asking %s instead", LOCAL_HOST)
            sock.sendto(request, (LOCAL_HOST, self.port))

    def _await_reply(self, sock: gsocket.socket, cmd: str, deadline: Timeout) -> tuple[bool, Any]:
        while not deadline.expired():
            sock.settimeout(deadline.timeleft())
            try:
                data, address = sock.recvfrom(_MAX_REPLY_SIZE)
            except TimeoutError:
                break
            if address[1] != self.port:
                continue
            ok, reply = parse_reply(cmd, data)
            if ok:
                return True, reply
            self.logger.warning("ignored invalid %s reply from %s: %s", cmd, address[0], data[:80])
        self.logger.debug("no %s reply from %s:%s in time", cmd, self.ip, self.port)
        return False, None


class TCPRegistryClient(_ProtocolClient):
    """Registry client over one TCP connection per request. RPyC-compatible."""

    _LOGGER_NAME = "grpyc.registry.client.tcp"

    def __init__(
        self,
        ip: str,
        port: int = REGISTRY_PORT,
        timeout: float | None = 2,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(ip, port, timeout, logger)

    def _exchange(
        self, cmd: str, request: bytes, interface: str, deadline: Timeout | None
    ) -> tuple[bool, Any]:
        source = (interface, 0) if interface else None
        with gsocket.create_connection(
            (self.ip, self.port), timeout=self.timeout, source_address=source
        ) as sock:
            sock.sendall(request)
            if deadline is None:
                return False, None
            data = read_message(sock, _MAX_REPLY_SIZE, deadline)
        ok, reply = parse_reply(cmd, data)
        if not ok:
            self.logger.warning(
                "invalid %s reply from %s:%s: %s", cmd, self.ip, self.port, data[:80]
            )
        return ok, reply
