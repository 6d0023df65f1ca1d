"""The ``grpyc`` command (``python -m grpyc``): servers for real deployments.

Subcommands:

- ``classic``: a classic-mode server (`SlaveService`), RPyC's ``rpyc_classic``;
- ``serve MODULE:Class``: a server for any `Service` class;
- ``registry``: a registry server, RPyC's ``rpyc_registry``;
- ``demo``: a server and a client session showing what grpyc does.

``classic`` and ``registry`` accept the options of RPyC's ``rpyc_classic``
and ``rpyc_registry``; `grpyc.cli.rpyc_classic` and `grpyc.cli.rpyc_registry`
are those two commands under RPyC's names (``rpyc.cli.*`` after
``grpyc.install_as_rpyc()``). Servers bind 127.0.0.1 unless ``--host`` says
otherwise. Once bound, a server writes one line to stderr, ``grpyc <command>
server listening on HOST:PORT``, so scripts using ``--port 0`` can read the
port; oneshot mode also prints RPyC's ``rpyc-oneshot`` and ``HOST<TAB>PORT``
lines on stdout. SIGTERM and SIGINT close a server gracefully
(``--grace-period``); a second signal skips the rest of the grace period.
Exit status: 0 after a clean shutdown, 1 when the server cannot start
(address in use, unreadable TLS files), 2 for bad options; each error is one
line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from grpyc.cli._options import StartError, UsageError, build_parser

__all__ = ["main", "run"]

# RPyC's command modules, loaded when first reached as attributes (as
# ``rpyc.cli.rpyc_classic`` after ``import rpyc.cli``).
_COMMAND_MODULES = frozenset(["rpyc_classic", "rpyc_registry"])


def __getattr__(name: str) -> ModuleType:
    if name in _COMMAND_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grpyc`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from grpyc._demo import run_demo

        return run_demo()
    return run(args, f"grpyc {args.command}")


def run(args: argparse.Namespace, prog: str) -> int:
    """Run the parsed ``classic``, ``serve`` or ``registry`` command; returns the status.

    Args:
        args: what the command's parser returned (``args.command`` names it).
        prog: the program name errors start with (``grpyc classic``, ``rpyc_classic``).
    """
    from grpyc.cli._registry import run_registry
    from grpyc.cli._serve import run_server

    try:
        if args.command == "registry":
            return run_registry(args)
        return run_server(args)
    except UsageError as exc:
        sys.stderr.write(f"{prog}: error: {exc} (see {prog} --help)\n")
        return 2
    except StartError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 1
