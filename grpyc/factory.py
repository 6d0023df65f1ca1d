"""Ways to get a `Connection`: TCP, TLS, Unix sockets, pipes, child processes, SSH, discovery.

RPyC-compatible names and arguments (``rpyc.utils.factory``). Each function
builds or finds a stream, wraps it in a `Channel` and hands it to the local
service, which makes the connection. Nothing here reads frames: the
connection's own reader greenlet does, from the moment it exists.

Where grpyc differs from RPyC, the function's docstring says so: the
in-process peer of `connect_thread` is a greenlet, `connect_multiprocess`
starts its child with the ``spawn`` method, `connect_by_service` tries the
servers in random order, and a ``config`` argument defaults to ``None``
rather than a shared ``{}`` (both mean "no overrides").
"""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence
from typing import Any

import gevent.lock
import gevent.socket
from gevent import ssl

from grpyc.channel import Channel
from grpyc.protocol import Connection
from grpyc.service import Service, Slave, VoidService
from grpyc.stream import PipeStream, SocketStream, TunneledSocketStream

__all__ = [
    "DiscoveryError",
    "ForbiddenError",
    "connect",
    "connect_by_service",
    "connect_channel",
    "connect_multiprocess",
    "connect_pipes",
    "connect_stdpipes",
    "connect_stream",
    "connect_subproc",
    "connect_thread",
    "discover",
    "list_services",
    "ssh_connect",
    "ssl_connect",
    "unix_connect",
]

Address = tuple[str, int]


class DiscoveryError(Exception):
    """No reachable server offers the requested service. RPyC-compatible."""


class ForbiddenError(Exception):
    """The registry does not allow listing its services. RPyC-compatible."""


def _service_instance(service: Service | type[Service]) -> Service:
    return service() if isinstance(service, type) else service


# ------------------------------------------------------------ streams
def connect_channel(
    channel: Channel, service: Any = VoidService, config: dict[str, Any] | None = None
) -> Connection:
    """A connection over an existing channel. RPyC-compatible.

    Args:
        channel: the channel to the peer.
        service: the local service (class or instance) exposed to the peer.
        config: overrides of `protocol.DEFAULT_CONFIG`.
    """
    # _connect is a hybrid (class or instance) descriptor, which mypy sees as Any.
    conn: Connection = _service_instance(service)._connect(channel, dict(config or {}))
    return conn


def connect_stream(
    stream: Any, service: Any = VoidService, config: dict[str, Any] | None = None
) -> Connection:
    """A connection over an existing stream. RPyC-compatible."""
    return connect_channel(Channel(stream), service, config)


def connect_pipes(
    input: Any, output: Any, service: Any = VoidService, config: dict[str, Any] | None = None
) -> Connection:
    """A connection over a pair of pipes (read end, write end). RPyC-compatible."""
    return connect_stream(PipeStream(input, output), service, config)


def connect_stdpipes(
    service: Any = VoidService, config: dict[str, Any] | None = None
) -> Connection:
    """A connection over this process's stdin and stdout. RPyC-compatible.

    Descriptors 0 and 1 then point to the null device (see
    `PipeStream.from_std`), so a stray ``print`` cannot corrupt the frames.
    """
    return connect_stream(PipeStream.from_std(), service, config)


def connect(
    host: str,
    port: int,
    service: Any = VoidService,
    config: dict[str, Any] | None = None,
    ipv6: bool = False,
    keepalive: bool = False,
) -> Connection:
    """Connect over TCP (TCP_NODELAY on). RPyC-compatible.

    Args:
        host: host name or address.
        port: TCP port.
        service: the local service exposed to the peer (callbacks land here).
        config: overrides of `protocol.DEFAULT_CONFIG`.
        ipv6: connect over IPv6.
        keepalive: turn on TCP keepalive on the socket.
    """
    stream = SocketStream.connect(host, port, ipv6=ipv6, keepalive=keepalive)
    return connect_stream(stream, service, config)


def unix_connect(
    path: str, service: Any = VoidService, config: dict[str, Any] | None = None
) -> Connection:
    """Connect over a Unix domain socket. RPyC-compatible."""
    return connect_stream(SocketStream.unix_connect(path), service, config)


# ---------------------------------------------------------------- TLS
def _ssl_kwargs(
    keyfile: str | None,
    certfile: str | None,
    ca_certs: str | None,
    cert_reqs: ssl.VerifyMode | None,
    ssl_version: int | None,
    ciphers: str | None,
    verify_mode: ssl.VerifyMode | None,
) -> dict[str, Any]:
    """RPyC's reading of `ssl_connect`'s arguments, as `SocketStream.ssl_connect` options."""
    options: dict[str, Any] = {"server_side": False}
    for key, value in (
        ("keyfile", keyfile),
        ("certfile", certfile),
        ("ca_certs", ca_certs),
        ("ssl_version", ssl_version),
        ("ciphers", ciphers),
    ):
        if value is not None:
            options[key] = value
    effective = ssl.CERT_NONE if verify_mode is None else verify_mode
    if ca_certs is not None:
        effective = ssl.CERT_REQUIRED
    if cert_reqs is not None:
        effective = cert_reqs
    options["cert_reqs"] = effective
    # RPyC checks host names only when cert_reqs is given explicitly; with
    # CERT_NONE the check must be off or the context refuses the mode.
    if cert_reqs is None or effective == ssl.CERT_NONE:
        options["check_hostname"] = False
    return options


def ssl_connect(
    host: str,
    port: int,
    keyfile: str | None = None,
    certfile: str | None = None,
    ca_certs: str | None = None,
    cert_reqs: ssl.VerifyMode | None = None,
    ssl_version: int | None = None,
    ciphers: str | None = None,
    service: Any = VoidService,
    config: dict[str, Any] | None = None,
    ipv6: bool = False,
    keepalive: bool = False,
    verify_mode: ssl.VerifyMode | None = None,
) -> Connection:
    """Connect over TLS (encrypted, optionally authenticated). RPyC-compatible.

    Args:
        keyfile: the client's private key, for a client certificate.
        certfile: the client's certificate chain.
        ca_certs: CAs the server's certificate must chain to; giving it makes
            verification ``CERT_REQUIRED``.
        cert_reqs: the verification mode, overriding the two above; only
            when it is given (and not ``CERT_NONE``) is the host name checked
            against the certificate, as in RPyC.
        ssl_version: an `ssl` protocol constant (default: the best both speak).
        ciphers: an OpenSSL cipher string.
        verify_mode: the verification mode when neither ``ca_certs`` nor
            ``cert_reqs`` is given (default ``CERT_NONE``, as in RPyC).
        service, config, ipv6, keepalive: as for `connect`.

    Raises:
        ssl.SSLError: the handshake or the verification failed.
        OSError: the server cannot be reached, or a file cannot be loaded.

    Where grpyc differs from RPyC: ``cert_reqs=ssl.CERT_NONE`` works (RPyC's
    context refuses it because host name checking is still on).
    """
    options = _ssl_kwargs(keyfile, certfile, ca_certs, cert_reqs, ssl_version, ciphers, verify_mode)
    stream = SocketStream.ssl_connect(host, port, options, ipv6=ipv6, keepalive=keepalive)
    return connect_stream(stream, service, config)


# -------------------------------------------------------- local peers
def connect_thread(
    service: Any = VoidService,
    config: dict[str, Any] | None = None,
    remote_service: Any = VoidService,
    remote_config: dict[str, Any] | None = None,
) -> Connection:
    """Serve ``remote_service`` in this process and connect to it. RPyC-compatible.

    Where grpyc differs from RPyC: no thread and no listening socket. The two
    ends are a socket pair; the remote end is served by its own connection's
    greenlets, in this thread's hub, and closes when the returned connection
    closes (or is lost).
    """
    local_sock, remote_sock = gevent.socket.socketpair()
    # Each end's on_connect may call the other (classic services fetch the
    # peer's root), so the remote end is made in its own greenlet meanwhile.
    remote = gevent.spawn(connect_stream, SocketStream(remote_sock), remote_service, remote_config)
    try:
        conn = connect_stream(SocketStream(local_sock), service, config)
    except BaseException:
        remote.kill()
        local_sock.close()
        remote_sock.close()
        raise
    try:
        remote.get()
    except BaseException:
        conn.close()
        raise
    return conn


def connect_subproc(
    args: Sequence[str], service: Any = VoidService, config: dict[str, Any] | None = None
) -> Connection:
    """Start a child process and connect to it over its stdin/stdout. RPyC-compatible.

    The child must serve a connection on its standard pipes, e.g. with
    `connect_stdpipes`. The process is started with `gevent.subprocess`, so
    waiting for it (``conn.proc.wait()``) lets other greenlets run.

    Args:
        args: the command line, as for `subprocess.Popen`.

    Returns:
        The connection, with the `Popen` object as ``conn.proc``.
    """
    from gevent import subprocess

    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        conn = connect_pipes(proc.stdout, proc.stdin, service, config)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    conn.proc = proc  # type: ignore[attr-defined]
    return conn


def _args_namespace(root: Any) -> dict[str, Any] | None:
    """Where `connect_multiprocess`'s ``args`` go in the child's service, as in RPyC."""
    if isinstance(root, Slave):
        return root.namespace
    if isinstance(root, VoidService):
        return None
    namespace = getattr(root, "exposed_namespace", None)
    if not isinstance(namespace, dict):
        raise TypeError(
            f"connect_multiprocess(args=...) needs a classic remote_service or one with an "
            f"exposed_namespace dict; {type(root).__name__} has neither"
        )
    return namespace


def _serve_in_child(
    sock: socket.socket,
    remote_service: Any,
    remote_config: dict[str, Any] | None,
    args: dict[str, Any],
) -> None:
    """The child process of `connect_multiprocess`: serve until the parent closes."""
    root = _service_instance(remote_service)
    namespace = _args_namespace(root) if args else None
    if namespace is not None:
        namespace.update(args)
    conn = connect_stream(SocketStream(sock), root, remote_config)
    conn.serve_all()


def connect_multiprocess(
    service: Any = VoidService,
    config: dict[str, Any] | None = None,
    remote_service: Any = VoidService,
    remote_config: dict[str, Any] | None = None,
    args: dict[str, Any] | None = None,
) -> Connection:
    """Serve ``remote_service`` in a child process and connect to it. RPyC-compatible.

    ``args`` are put in the child service's namespace before it serves
    (``namespace`` of a classic service, ``exposed_namespace`` of another);
    shared objects made by ``multiprocessing.get_context("spawn")`` (e.g. its
    ``Value``) stay shared.

    Where grpyc differs from RPyC: the child is started with multiprocessing's
    ``spawn`` method, never ``fork`` (forking a process whose hub and sockets
    are live copies them into the child). So ``remote_service``,
    ``remote_config`` and ``args`` must be picklable (classes and functions
    importable by name), and the main module is imported again in the child:
    guard a script's entry point with ``if __name__ == "__main__":``. The two
    ends are a socket pair, so nothing listens on a port. The child is a
    daemon process (it cannot start processes of its own) and is available as
    ``conn.proc``; it exits when the connection closes.

    Raises:
        TypeError: ``args`` is not a dict.
        RuntimeError: ``args`` holds a lock-carrying object of another start
            method (multiprocessing refuses to share it).
    """
    import multiprocessing

    if args is not None and not isinstance(args, dict):
        raise TypeError(f"args must be a dict of names to values, not {type(args).__name__}")
    # Plain sockets: multiprocessing hands their descriptors to the child.
    local_sock, remote_sock = socket.socketpair()
    context = multiprocessing.get_context("spawn")
    proc = context.Process(
        target=_serve_in_child,
        args=(remote_sock, remote_service, remote_config, dict(args or {})),
        daemon=True,
    )
    try:
        proc.start()
    except BaseException:
        local_sock.close()
        raise
    finally:
        remote_sock.close()
    conn = connect_stream(SocketStream(local_sock), service, config)
    conn.proc = proc  # type: ignore[attr-defined]
    return conn


# ---------------------------------------------------------------- SSH
def ssh_connect(
    remote_machine: Any,
    remote_port: int,
    service: Any = VoidService,
    config: dict[str, Any] | None = None,
) -> Connection:
    """Connect through SSH to a server on a remote machine's loopback (plumbum). RPyC-compatible.

    Args:
        remote_machine: a plumbum ``SshMachine`` or ``ParamikoMachine``, or
            any object with RPyC's ``tunnel(local_port, remote_port)``.
        remote_port: the server's port on the remote machine, reached there
            as ``localhost``.
        service, config: as for `connect`.

    The tunnel (or SSH channel) closes when the connection closes.

    Where grpyc differs from RPyC: with an OpenSSH ``SshMachine`` the tunnel
    starts at a Unix socket in a private local directory instead of a free
    local TCP port, so no other local user can connect through it and no
    other process can take the port first; a ``ParamikoMachine`` (which has
    no ``tunnel``, so RPyC's fails with `AttributeError`) works over an SSH
    channel. Other objects get RPyC's TCP tunnel, with its race for the
    free port.

    Raises:
        ImportError: plumbum is not installed.
    """
    from grpyc._ssh import open_stream, require_plumbum

    require_plumbum("ssh_connect")
    stream: TunneledSocketStream = open_stream(remote_machine, remote_port)
    try:
        return connect_stream(stream, service, config)
    except BaseException:
        stream.close()
        raise


# ----------------------------------------------------------- discovery
def _registrar_or_default(registrar: Any, timeout: float) -> Any:
    if registrar is not None:
        return registrar
    from grpyc.registry import UDPRegistryClient

    return UDPRegistryClient(timeout=timeout)


def discover(
    service_name: str, host: str | None = None, registrar: Any = None, timeout: float = 2
) -> tuple[Address, ...]:
    """The ``(host, port)`` of every server registered for a service. RPyC-compatible.

    Args:
        service_name: the service name (e.g. ``"CALC"`` for ``CalcService``).
        host: keep only servers at this host's addresses.
        registrar: a `grpyc.registry.RegistryClient`; by default a
            `UDPRegistryClient` broadcasting on the LAN, as in RPyC.
        timeout: seconds to wait for the default registrar's answer.

    Raises:
        DiscoveryError: no server is registered (on ``host``).
    """
    addresses = tuple(_registrar_or_default(registrar, timeout).discover(service_name))
    if not addresses:
        raise DiscoveryError(f"no servers exposing {service_name!r} were found")
    if host:
        host_ips = set(gevent.socket.gethostbyname_ex(host)[2])
        addresses = tuple(addr for addr in addresses if addr[0] in host_ips)
        if not addresses:
            raise DiscoveryError(f"no servers exposing {service_name!r} were found on {host!r}")
    return addresses


def list_services(
    registrar: Any = None, filter_host: str | None = None, timeout: float = 2
) -> tuple[str, ...]:
    """The service names known to the registry. RPyC-compatible.

    Raises:
        ForbiddenError: the registry does not allow listing.
    """
    services = _registrar_or_default(registrar, timeout).list(filter_host)
    if services is None:
        raise ForbiddenError("the registry does not allow listing (allow_listing is off)")
    return tuple(services)


def connect_by_service(
    service_name: str,
    host: str | None = None,
    registrar: Any = None,
    timeout: float = 2,
    service: Any = VoidService,
    config: dict[str, Any] | None = None,
) -> Connection:
    """Connect to a live server that offers ``service_name``. RPyC-compatible.

    Where grpyc differs from RPyC: the registered servers are tried in random
    order (RPyC takes the registry's order, so every client picks the same
    server); a server that refuses or does not answer is skipped for the next.

    Raises:
        DiscoveryError: none is registered, or none accepts a connection.
    """
    addresses = discover(service_name, host=host, registrar=registrar, timeout=timeout)
    failures: list[str] = []
    for server_host, port in random.sample(addresses, len(addresses)):
        try:
            return connect(server_host, port, service, config)
        except (OSError, EOFError) as exc:
            failures.append(f"{server_host}:{port} ({exc})")
    raise DiscoveryError(f"all servers exposing {service_name!r} are down: {', '.join(failures)}")
