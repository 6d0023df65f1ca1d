"""RPyC's two command classes, ``ClassicServer`` and ``RegistryServer``, run by grpyc.

`grpyc.cli.rpyc_classic` and `grpyc.cli.rpyc_registry` (``rpyc.cli.*``
after ``grpyc.install_as_rpyc()``) publish one each with its ``main``.
Each command parses its options with the parser of ``grpyc classic`` or
``grpyc registry`` (which accept every option of RPyC's commands) and runs
as that subcommand; docs/servers.md lists where the two differ.
"""

from __future__ import annotations

import argparse
from typing import ClassVar, NoReturn

from grpyc.cli import run
from grpyc.cli._options import classic_parser, registry_parser

__all__ = ["ClassicServer", "RegistryServer", "RpycCommand"]


class RpycCommand:
    """An RPyC command class (a plumbum ``Application`` in RPyC). RPyC-compatible.

    Only its entry points are provided: ``run()`` parses a command line as
    plumbum does, ``main()`` as RPyC's module-level ``main()`` does.
    """

    PROGNAME: ClassVar[str]

    @staticmethod
    def parser(prog: str) -> argparse.ArgumentParser:
        """The command's option parser, its errors starting with `prog`."""
        raise NotImplementedError

    @classmethod
    def run(cls, argv: list[str] | None = None, exit: bool = True) -> int:
        """Run the command with `argv` (plumbum's convention: ``argv[0]`` is the program).

        Raises `SystemExit` with the status when `exit` is true (plumbum's
        default), else returns the status.
        """
        args = cls.parser(cls.PROGNAME).parse_args(None if argv is None else list(argv)[1:])
        status = run(args, cls.PROGNAME)
        if exit:
            raise SystemExit(status)
        return status

    @classmethod
    def main(cls, argv: list[str] | None = None) -> NoReturn:
        """Run the command with `argv` (default: ``sys.argv[1:]``); exits with its status.

        Exits (raises `SystemExit`) as RPyC's ``main()`` does, so launch
        scripts that only call ``main()`` end with the right status.
        """
        args = cls.parser(cls.PROGNAME).parse_args(argv)
        raise SystemExit(run(args, cls.PROGNAME))


class ClassicServer(RpycCommand):
    """RPyC's ``rpyc_classic``: a classic-mode server. RPyC-compatible; see `RpycCommand`."""

    PROGNAME = "rpyc_classic"
    parser = staticmethod(classic_parser)


class RegistryServer(RpycCommand):
    """RPyC's ``rpyc_registry``: a registry server. RPyC-compatible; see `RpycCommand`."""

    PROGNAME = "rpyc_registry"
    parser = staticmethod(registry_parser)
