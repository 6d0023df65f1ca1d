"""Options of the grpyc commands: value types, parsers and option groups.

Only argparse: this module turns text into values and runs nothing. The
options of RPyC's ``rpyc_classic`` and ``rpyc_registry`` are accepted with
their meaning (``-p``, ``-t``, ``-l``, ``-6``, ``-v``...), beside grpyc's own;
where grpyc differs (bind address, ``-l false``), the help says so.
"""

from __future__ import annotations

import argparse
from typing import NoReturn, TypeVar

from grpyc.version import __version__

__all__ = [
    "CLASSIC_WARNING",
    "Parser",
    "StartError",
    "UsageError",
    "build_parser",
    "classic_parser",
    "registry_parser",
]

CLASSIC_WARNING = (
    "WARNING: a classic server runs ANY code a client sends, with this process's "
    "rights. Keep it on 127.0.0.1 (the default), or require client certificates "
    "with --ssl-cafile."
)

_MODES = ("greenlet", "threaded", "forking", "oneshot", "stdio")

# Spellings of a boolean option value (RPyC's ``rpyc_registry -l VALUE``).
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class UsageError(Exception):
    """Options that do not fit together; reported in one line with status 2."""


class StartError(Exception):
    """The server cannot start (address in use, unreadable files); status 1."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (plus a pointer to --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------ value types
_Number = TypeVar("_Number", int, float)


def _number(text: str, kind: type[_Number], what: str) -> _Number:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {what} {text!r}") from None


def _port(text: str) -> int:
    value = _number(text, int, "port")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535")
    return value


def _count(text: str) -> int:
    value = _number(text, int, "count")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _seconds(text: str) -> float:
    value = _number(text, float, "number of seconds")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} seconds is not >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text} seconds is not > 0")
    return value


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"invalid boolean {text!r}: use one of {', '.join(sorted(_TRUE | _FALSE))}"
    )


def _any_value(text: str) -> bool:
    return True


def _add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v",
        "--version",
        action="version",
        version=f"%(prog)s (grpyc {__version__})",
        help="print the version and exit",
    )


# ---------------------------------------------------------------- parsers
def build_parser() -> Parser:
    """The parser of the ``grpyc`` command and its subcommands."""
    parser = Parser(
        prog="grpyc", description="grpyc: RPyC rebuilt on gevent, wire-compatible with rpyc 6."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    classic = commands.add_parser(
        "classic",
        help="serve classic mode (SlaveService): runs any code a client sends",
        description=_classic_description(),
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
    registry = commands.add_parser(
        "registry",
        help="run a registry server (service discovery)",
        description=_registry_description(),
    )
    _add_registry_options(registry)
    commands.add_parser("demo", help="run a server and a client session on 127.0.0.1")
    return parser


def classic_parser(prog: str) -> Parser:
    """A parser for ``grpyc classic``'s options alone, as RPyC's ``rpyc_classic``."""
    parser = Parser(prog=prog, description=_classic_description())
    parser.set_defaults(command="classic")
    _add_server_options(parser)
    return parser


def registry_parser(prog: str) -> Parser:
    """A parser for ``grpyc registry``'s options alone, as RPyC's ``rpyc_registry``."""
    parser = Parser(prog=prog, description=_registry_description())
    parser.set_defaults(command="registry")
    _add_registry_options(parser)
    return parser


def _classic_description() -> str:
    return (
        "Serve classic mode (SlaveService), like RPyC's rpyc_classic, whose options it "
        "accepts. " + CLASSIC_WARNING
    )


def _registry_description() -> str:
    return (
        "Run a registry server, like RPyC's rpyc_registry, whose options it accepts. "
        "Unlike rpyc_registry (every interface), it binds 127.0.0.1 (::1 with -6) by "
        "default; broadcast discovery on a LAN needs --host 0.0.0.0."
    )


# ------------------------------------------------ classic and serve options
def _add_server_options(parser: argparse.ArgumentParser) -> None:
    _add_version(parser)
    where = parser.add_argument_group("where to listen")
    where.add_argument(
        "--host",
        default=None,
        help="address to bind (default and '': 127.0.0.1, or ::1 with --ipv6); "
        "0.0.0.0 or :: serves every interface",
    )
    where.add_argument(
        "-p",
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
        "forking: a process per connection; oneshot: serve one connection, then exit "
        "(prints 'rpyc-oneshot' and 'HOST<TAB>PORT' on stdout, as rpyc_classic does); "
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


def _add_logging_options(parser: argparse.ArgumentParser, quiet_takes_value: bool = False) -> None:
    logs = parser.add_argument_group("logging")
    logs.add_argument("--logfile", metavar="PATH", help="log here instead of stderr")
    quiet_help = "log warnings and errors only"
    if quiet_takes_value:
        # rpyc_registry's -q takes a value; any value means quiet there too.
        logs.add_argument(
            "-q",
            "--quiet",
            nargs="?",
            const=True,
            default=False,
            type=_any_value,
            metavar="VALUE",
            help=quiet_help + " (a VALUE, as rpyc_registry wants, is ignored)",
        )
    else:
        logs.add_argument("-q", "--quiet", action="store_true", help=quiet_help)


# ------------------------------------------------------- registry options
def _add_registry_options(parser: argparse.ArgumentParser) -> None:
    from grpyc.registry import DEFAULT_PRUNING_TIMEOUT, REGISTRY_PORT

    _add_version(parser)
    parser.add_argument(
        "-m",
        "--mode",
        type=str.upper,
        choices=("UDP", "TCP"),
        default="UDP",
        help="registry protocol (default UDP)",
    )
    parser.add_argument(
        "--host", default=None, help="address to bind (default 127.0.0.1, ::1 with -6)"
    )
    parser.add_argument("-6", "--ipv6", action="store_true", help="default to ::1, not 127.0.0.1")
    parser.add_argument(
        "-p",
        "--port",
        type=_port,
        default=REGISTRY_PORT,
        help=f"port (default {REGISTRY_PORT}); 0 picks a free port",
    )
    parser.add_argument(
        "-t",
        "--timeout",
        "--pruning-timeout",
        dest="pruning_timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        default=DEFAULT_PRUNING_TIMEOUT,
        help="seconds before a server that stopped re-registering is dropped "
        f"(default {DEFAULT_PRUNING_TIMEOUT})",
    )
    listing = parser.add_mutually_exclusive_group()
    listing.add_argument(
        "-l",
        "--listing",
        dest="allow_listing",
        nargs="?",
        const=True,
        default=False,
        type=_boolean,
        metavar="BOOL",
        help="answer LIST requests: -l, -l true, -l false (rpyc_registry reads any "
        "VALUE, even 'false', as true)",
    )
    listing.add_argument(
        "--allow-listing", dest="allow_listing", action="store_true", help="same as -l"
    )
    _add_logging_options(parser, quiet_takes_value=True)
