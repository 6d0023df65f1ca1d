"""grpyc: RPyC rebuilt on gevent and greenlets, wire-compatible with rpyc 6."""

from grpyc.version import __version__, version

__all__ = ["__version__", "version"]
