"""RPyC's ``rpyc_registry`` module (``rpyc.cli.rpyc_registry`` after ``grpyc.install_as_rpyc()``).

RPyC-compatible: `RegistryServer` and `main`, from `grpyc.cli._rpyc_commands`.
"""

from grpyc.cli._rpyc_commands import RegistryServer

__all__ = ["RegistryServer", "main"]

main = RegistryServer.main

if __name__ == "__main__":
    main()
