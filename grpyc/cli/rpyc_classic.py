"""RPyC's ``rpyc_classic`` module (``rpyc.cli.rpyc_classic`` after ``grpyc.install_as_rpyc()``).

RPyC-compatible: `ClassicServer` and `main`, from `grpyc.cli._rpyc_commands`.
"""

from grpyc.cli._rpyc_commands import ClassicServer

__all__ = ["ClassicServer", "main"]

main = ClassicServer.main

if __name__ == "__main__":
    main()
