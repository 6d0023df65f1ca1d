"""The ``grpyc`` command (``python -m grpyc``): servers for real deployments.

Subcommands:

- ``classic``: a classic-mode server (`SlaveService`), RPyC's ``rpyc_classic``;
- ``serve MODULE:Class``: a server for any `Service` class;
- ``registry``: a registry server, RPyC's ``rpyc_registry``;
- ``demo``: a server and a client session showing what grpyc does.

Servers bind 127.0.0.1 unless ``--host`` says otherwise. Once bound, a
server writes one line to stderr, ``grpyc <command> server listening on
HOST:PORT``, so scripts using ``--port 0`` can read the port. SIGTERM and
SIGINT close it gracefully (``--grace-period``); a second signal skips the
rest of the grace period. Exit status: 0 after a clean shutdown, 1 when
the server cannot start (address in use, unreadable TLS files), 2 for bad
options; each error is one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

__all__ = ["main"]

# Descriptors a server process needs beside its connections: listener,
# log file, registry sockets, the hub's own.
_SPARE_DESCRIPTORS = 64
# How long the registry's close may take after a signal before the command exits.
_CLOSE_WAIT = 5.0

_CLASSIC_WARNING = (
    "WARNING: a classic server runs ANY code a client sends, with this process's "
    "rights. Keep it on 127.0.0.1 (the default), or require client certificates "
    "with --ssl-cafile."
)

_MODES = ("greenlet", "threaded", "forking", "oneshot", "stdio")


class UsageError(Exception):
    """Options that do not fit together; reported in one line with status 2."""


class StartError(Exception):
    """The server cannot start (address in use, unreadable files); status 1."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (plus a pointer to --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------ option types
def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} seconds is not >= 0")
    return value


# ------------------------------------------------------------------ parser
def _build_parser() -> _Parser:
    parser = _Parser(
        prog="grpyc", description="grpyc: RPyC rebuilt on gevent, wire-compatible with rpyc 6."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    classic = commands.add_parser(
        "classic",
        help="serve classic mode (SlaveService): runs any code a client sends",
        description="Serve classic mode (SlaveService), like RPyC's rpyc_classic. "
        + _CLASSIC_WARNING,
    )
    _add_server_options(classic)
    serve = commands.add_parser(
        "serve",
        help="serve a Service class: grpyc serve MODULE:Class",
        description="Serve any grpyc (or RPyC-style) Service class. MODULE is imported "
        "from the current directory or PYTHONPATH.",
    )
    serve.add_argument("target", metavar="MODULE:Class", help="the service class to serve")
    _add_server_options(serve)
    _add_registry_parser(commands)
    commands.add_parser("demo", help="run a server and a client session on 127.0.0.1")
    return parser


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("where to listen")
    where.add_argument(
        "--host",
        default=None,
        help="address to bind (default 127.0.0.1, or ::1 with --ipv6); "
        "0.0.0.0 or :: serves every interface",
    )
    where.add_argument(
        "--port",
        type=_port,
        default=None,
        help="TCP port (default 18812, 18821 with TLS); 0 picks a free port",
    )
    where.add_argument("--ipv6", action="store_true", help="listen on IPv6")
    where.add_argument("--unix-socket", metavar="PATH", help="listen on a Unix socket instead")
    how = parser.add_argument_group("how to serve")
    how.add_argument(
        "-m",
        "--mode",
        type=str.lower,
        choices=_MODES,
        default="greenlet",
        help="greenlet (default; 'threaded' is the same): a greenlet per connection; "
        "forking: a process per connection; oneshot: serve one connection, then exit; "
        "stdio: serve this process's stdin/stdout",
    )
    how.add_argument(
        "--workers",
        type=_count,
        metavar="N",
        default=1,
        help="worker processes sharing the socket, to use every core (greenlet mode)",
    )
    _add_limit_options(how)
    _add_tls_options(parser)
    _add_registration_options(parser)
    _add_logging_options(parser)


def _add_limit_options(group: argparse._ArgumentGroup) -> None:
    from grpyc.server import (
        DEFAULT_GRACE_PERIOD,
        DEFAULT_HANDSHAKE_TIMEOUT,
        DEFAULT_MAX_CONNECTIONS,
    )

    group.add_argument(
        "--max-connections",
        type=_count,
        metavar="N",
        default=DEFAULT_MAX_CONNECTIONS,
        help="connections served at once, per process; more are closed at once "
        f"(default {DEFAULT_MAX_CONNECTIONS})",
    )
    group.add_argument(
        "--handshake-timeout",
        type=_seconds,
        metavar="SECONDS",
        default=DEFAULT_HANDSHAKE_TIMEOUT,
        help="seconds a client has to finish TLS and send its first frame; 0: no limit "
        f"(default {DEFAULT_HANDSHAKE_TIMEOUT:g})",
    )
    group.add_argument(
        "--idle-timeout",
        type=_seconds,
        metavar="SECONDS",
        default=0,
        help="close connections silent this many seconds; 0: never (default)",
    )
    group.add_argument(
        "--grace-period",
        type=_seconds,
        metavar="SECONDS",
        default=DEFAULT_GRACE_PERIOD,
        help="seconds calls in flight get to finish on SIGTERM/SIGINT "
        f"(default {DEFAULT_GRACE_PERIOD:g})",
    )
    group.add_argument(
        "--keepalive", action="store_true", help="turn TCP keepalive on for every connection"
    )


def _add_tls_options(parser: argparse.ArgumentParser) -> None:
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--ssl-keyfile", metavar="PEM", help="the server's private key")
    tls.add_argument("--ssl-certfile", metavar="PEM", help="the server's certificate chain")
    tls.add_argument(
        "--ssl-cafile",
        metavar="PEM",
        help="require client certificates signed by these CAs",
    )


def _add_registration_options(parser: argparse.ArgumentParser) -> None:
    from grpyc.consts import DEFAULT_REGISTRY_PORT

    registry = parser.add_argument_group("registration")
    registry.add_argument(
        "--register", action="store_true", help="announce the service to a registry"
    )
    registry.add_argument(
        "--registry-type",
        type=str.upper,
        choices=("UDP", "TCP", "REDIS"),
        default="UDP",
        help="registry protocol (default UDP)",
    )
    registry.add_argument(
        "--registry-host",
        metavar="HOST",
        help="registry address (UDP default: broadcast 255.255.255.255; required for TCP)",
    )
    registry.add_argument(
        "--registry-port",
        type=_port,
        metavar="PORT",
        default=DEFAULT_REGISTRY_PORT,
        help=f"registry port (default {DEFAULT_REGISTRY_PORT})",
    )
    registry.add_argument(
        "--registry-url",
        metavar="URL",
        default="redis://127.0.0.1:6379/0",
        help="Redis URL for --registry-type REDIS (default redis://127.0.0.1:6379/0)",
    )


def _add_logging_options(parser: argparse.ArgumentParser) -> None:
    logs = parser.add_argument_group("logging")
    logs.add_argument("--logfile", metavar="PATH", help="log here instead of stderr")
    logs.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def _add_registry_parser(commands: Any) -> None:
    from grpyc.registry import DEFAULT_PRUNING_TIMEOUT, REGISTRY_PORT

    registry = commands.add_parser(
        "registry",
        help="run a registry server (service discovery)",
        description="Run a registry server, like RPyC's rpyc_registry. It binds 127.0.0.1 "
        "by default; broadcast discovery on a LAN needs --host 0.0.0.0.",
    )
    registry.add_argument(
        "-m",
        "--mode",
        type=str.upper,
        choices=("UDP", "TCP"),
        default="UDP",
        help="registry protocol (default UDP)",
    )
    registry.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    registry.add_argument(
        "--port",
        type=_port,
        default=REGISTRY_PORT,
        help=f"port (default {REGISTRY_PORT}); 0 picks a free port",
    )
    registry.add_argument(
        "--pruning-timeout",
        type=_seconds,
        metavar="SECONDS",
        default=DEFAULT_PRUNING_TIMEOUT,
        help="seconds before a server that stopped re-registering is dropped "
        f"(default {DEFAULT_PRUNING_TIMEOUT})",
    )
    registry.add_argument("--allow-listing", action="store_true", help="answer LIST requests")
    _add_logging_options(registry)


# ----------------------------------------------------------------- running
def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grpyc`` command; returns the exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from grpyc._demo import run_demo

        return run_demo()
    prog = f"grpyc {args.command}"
    try:
        if args.command == "registry":
            return _run_registry(args)
        return _run_server(args)
    except UsageError as exc:
        sys.stderr.write(f"{prog}: error: {exc} (see {prog} --help)\n")
        return 2
    except StartError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 1


def _configure_logging(args: argparse.Namespace) -> None:
    try:
        handler: logging.Handler = (
            logging.FileHandler(args.logfile) if args.logfile else logging.StreamHandler()
        )
    except OSError as exc:
        raise StartError(f"cannot open log file: {exc}") from exc
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, handlers=[handler], force=True
    )


def _announce(text: str) -> None:
    # The one line scripts read (the port), whatever the log settings.
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _run_server(args: argparse.Namespace) -> int:
    _check_server_options(args)
    service = _service_for(args)
    _configure_logging(args)
    if args.mode == "stdio":
        return _serve_stdio(service)
    server = _make_server(args, service)
    _fit_descriptor_limit(args.max_connections)
    _announce(f"grpyc {args.command} server listening on {_address_of(server)}")
    with server.close_on_signals():
        server.start()
    return 0


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
        return server.socket_path
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


# ---------------------------------------------------------------- registry
def _run_registry(args: argparse.Namespace) -> int:
    from grpyc import registry

    _configure_logging(args)
    try:
        if args.mode == "UDP":
            server: Any = registry.UDPRegistryServer(
                host=args.host,
                port=args.port,
                pruning_timeout=args.pruning_timeout or None,
                allow_listing=args.allow_listing,
            )
        else:
            server = registry.TCPRegistryServer(
                host=args.host,
                port=args.port,
                pruning_timeout=args.pruning_timeout or None,
                allow_listing=args.allow_listing,
            )
    except OSError as exc:
        raise StartError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from exc
    host = f"[{args.host}]" if ":" in args.host else args.host
    _announce(f"grpyc registry server ({args.mode}) listening on {host}:{server.port}")
    with _closing_on_signals(server.close):
        server.start()
    return 0


@contextlib.contextmanager
def _closing_on_signals(close: Callable[[], None]) -> Iterator[None]:
    import gevent

    closers: list[gevent.Greenlet] = []

    def on_signal(signum: int, frame: Any) -> None:
        # Runs between two bytecodes of any greenlet: only schedule.
        closers.append(gevent.spawn(close))

    previous = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        gevent.joinall(closers, timeout=_CLOSE_WAIT)


if __name__ == "__main__":
    sys.exit(main())
