"""The grpyc version (RPyC-compatible names: ``version``, ``__version__``)."""

__version__ = "0.1.0"
version = tuple(__version__.split("."))
release_date = "2026-11-25"
