"""``grpyc classic`` and ``grpyc serve`` (and ``rpyc_classic``): run a server.

Checks the options, builds the `grpyc.server` server for the mode, writes
the lines scripts read (`grpyc.cli._output`) and serves until SIGTERM or
SIGINT (graceful, see `grpyc.server.Server.close_on_signals`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from typing import Any

from grpyc.cli._options import StartError, UsageError
from grpyc.cli._output import announce, configure_logging, print_oneshot_address

__all__ = ["run_server"]

# Descriptors a server process needs beside its connections: listener,
# log file, registry sockets, the hub's own.
_SPARE_DESCRIPTORS = 64


def run_server(args: argparse.Namespace) -> int:
    """Serve until the server closes; returns the exit status."""
    _normalise(args)
    _check_server_options(args)
    service = _service_for(args)
    configure_logging(args)
    if args.mode == "stdio":
        return _serve_stdio(service)
    server = _make_server(args, service)
    _fit_descriptor_limit(args.max_connections)
    announce(f"grpyc {args.command} server listening on {_address_of(server)}")
    if args.mode == "oneshot":
        if server.socket_path is not None:
            print_oneshot_address(server.socket_path, "")
        else:
            print_oneshot_address(server.host, server.port)
    try:
        with server.close_on_signals():
            server.start()
    finally:
        # Servers leave their socket file to the caller, as RPyC's do; the
        # command made it, so the command removes it.
        if server.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(server.socket_path)
    return 0


def _normalise(args: argparse.Namespace) -> None:
    # rpyc_classic's --host defaults to "", meaning this machine: same here.
    if args.host == "":
        args.host = None


def _check_server_options(args: argparse.Namespace) -> None:
    if args.workers > 1 and args.mode not in ("greenlet", "threaded"):
        raise UsageError(f"--workers {args.workers} needs --mode greenlet, not {args.mode}")
    if bool(args.ssl_keyfile) != bool(args.ssl_certfile):
        raise UsageError("TLS needs both --ssl-keyfile and --ssl-certfile")
    if args.ssl_cafile and not args.ssl_keyfile:
        raise UsageError("--ssl-cafile needs --ssl-keyfile and --ssl-certfile")
    if args.unix_socket and (args.host is not None or args.port is not None or args.ipv6):
        raise UsageError("--unix-socket cannot be combined with --host, --port or --ipv6")
    if args.register and args.unix_socket:
        raise UsageError("--register needs a TCP server, not --unix-socket")
    if args.register and args.registry_type == "TCP" and not args.registry_host:
        raise UsageError("--registry-type TCP needs --registry-host")
    if args.mode == "stdio":
        _check_stdio_options(args)


def _check_stdio_options(args: argparse.Namespace) -> None:
    listening = (
        args.host is not None
        or args.port is not None
        or args.ipv6
        or args.unix_socket
        or args.workers > 1
        or args.ssl_keyfile
        or args.register
    )
    if listening:
        raise UsageError(
            "--mode stdio serves stdin/stdout: it takes no listening, TLS or registration options"
        )


def _service_for(args: argparse.Namespace) -> Any:
    if args.command == "classic":
        from grpyc.service import SlaveService

        return SlaveService
    return _load_service(args.target)


def _load_service(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"expected MODULE:Class, got {target!r}")
    # Like other app servers, find modules in the current directory too.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from exc
    for name in attribute.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(getattr(obj, "_connect", None)):
        raise UsageError(f"{target} is not a Service class or instance")
    return obj


def _serve_stdio(service: Any) -> int:
    from grpyc import factory
    from grpyc.stream import PipeStream

    conn = factory.connect_stream(PipeStream.from_std(), service)
    conn.serve_all()
    return 0


def _server_class(mode: str) -> type:
    from grpyc import server

    return {
        "greenlet": server.Server,
        "threaded": server.Server,
        "forking": server.ForkingServer,
        "oneshot": server.OneShotServer,
    }[mode]


def _make_server(args: argparse.Namespace, service: Any) -> Any:
    from grpyc.consts import DEFAULT_SERVER_PORT, DEFAULT_SERVER_SSL_PORT

    port = args.port
    if port is None and not args.unix_socket:
        port = DEFAULT_SERVER_SSL_PORT if args.ssl_keyfile else DEFAULT_SERVER_PORT
    handshake_timeout = args.handshake_timeout or None
    try:
        return _server_class(args.mode)(
            service,
            hostname=args.host,
            ipv6=args.ipv6,
            port=port or 0,
            authenticator=_authenticator(args, handshake_timeout),
            registrar=_registrar(args) if args.register else None,
            auto_register=args.register,
            socket_path=args.unix_socket,
            max_connections=args.max_connections,
            handshake_timeout=handshake_timeout,
            idle_timeout=args.idle_timeout or None,
            keepalive=args.keepalive,
            grace_period=args.grace_period,
            workers=args.workers,
        )
    except OSError as exc:
        where = args.unix_socket or f"{args.host or _default_host(args)}:{port}"
        raise StartError(f"cannot listen on {where}: {exc.strerror or exc}") from exc


def _default_host(args: argparse.Namespace) -> str:
    return "::1" if args.ipv6 else "127.0.0.1"


def _address_of(server: Any) -> str:
    if server.socket_path is not None:
        return str(server.socket_path)
    host = server.host
    return f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"


def _authenticator(args: argparse.Namespace, handshake_timeout: float | None) -> Any:
    if not args.ssl_keyfile:
        return None
    from grpyc.authenticators import SSLAuthenticator

    try:
        return SSLAuthenticator(
            args.ssl_keyfile,
            args.ssl_certfile,
            ca_certs=args.ssl_cafile,
            handshake_timeout=handshake_timeout,
        )
    except OSError as exc:
        raise StartError(f"cannot load the TLS files: {exc}") from exc


def _registrar(args: argparse.Namespace) -> Any:
    from grpyc import registry

    if args.registry_type == "UDP":
        host = args.registry_host or "255.255.255.255"
        return registry.UDPRegistryClient(ip=host, port=args.registry_port)
    if args.registry_type == "TCP":
        return registry.TCPRegistryClient(ip=args.registry_host, port=args.registry_port)
    try:
        return registry.RedisRegistryClient(url=args.registry_url)
    except ImportError as exc:
        raise StartError(str(exc)) from exc


def _fit_descriptor_limit(max_connections: int) -> None:
    """Raise the soft descriptor limit (up to the hard one) to fit max_connections."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + _SPARE_DESCRIPTORS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        logging.getLogger("grpyc.cli").warning(
            "descriptor limit %d is below max_connections=%d plus %d spare; "
            "connections beyond it wait until descriptors free up",
            target,
            max_connections,
            _SPARE_DESCRIPTORS,
        )
