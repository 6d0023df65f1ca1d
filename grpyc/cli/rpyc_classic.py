"""RPyC's ``rpyc_classic`` command, run by grpyc (``rpyc.cli.rpyc_classic`` after
``grpyc.install_as_rpyc()``). RPyC-compatible.

Same options as ``grpyc classic`` (which accepts every option of RPyC's
``rpyc_classic``); docs/servers.md lists where the two differ.
"""

from __future__ import annotations

from typing import NoReturn

from grpyc.cli import run
from grpyc.cli._options import classic_parser

__all__ = ["ClassicServer", "main"]

PROG = "rpyc_classic"


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the command with `argv` (default: ``sys.argv[1:]``); exits with its status.

    Exits (raises `SystemExit`) as RPyC's ``main()`` does, so launch
    scripts that only call ``main()`` end with the right status.
    """
    args = classic_parser(PROG).parse_args(argv)
    raise SystemExit(run(args, PROG))


class ClassicServer:
    """RPyC's command class (a plumbum ``Application`` in RPyC). RPyC-compatible.

    Only its entry point is provided: ``ClassicServer.run()`` parses the command
    line as `main` does.
    """

    PROGNAME = PROG

    @classmethod
    def run(cls, argv: list[str] | None = None, exit: bool = True) -> int:
        """Run the command with `argv` (plumbum's convention: ``argv[0]`` is the program).

        Raises `SystemExit` with the status when `exit` is true (plumbum's
        default), else returns the status.
        """
        args = classic_parser(PROG).parse_args(None if argv is None else list(argv)[1:])
        status = run(args, PROG)
        if exit:
            raise SystemExit(status)
        return status


if __name__ == "__main__":
    main()
