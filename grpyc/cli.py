"""The ``grpyc`` command (``python -m grpyc``).

Subcommands: ``demo`` runs a server and a client session showing what grpyc
does. Server subcommands live here too as they land.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grpyc", description="grpyc: RPyC rebuilt on gevent, wire-compatible with rpyc 6."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run a server and a client session on 127.0.0.1")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grpyc`` command; returns the exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from grpyc._demo import run_demo

        return run_demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
