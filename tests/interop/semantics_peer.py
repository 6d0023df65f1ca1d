"""The service of tests/interop/test_semantics_interop.py, served by stock rpyc or grpyc.

``python -m tests.interop.semantics_peer IMPL`` (IMPL: ``stock`` or ``grpyc``)
serves `SemanticsService` on 127.0.0.1 and prints the port. The same code
runs on both: grpyc through ``install_as_rpyc()``.
"""

import sys


class Documented:
    def inherited(self):
        """Said by the base class."""

    def documented(self):
        """Overridden below without a docstring: inspect takes this one."""


class Holder(Documented):
    """Plain data with a property that refuses, and methods."""

    def __init__(self):
        self.value = 7
        self.misses = 0

    @property
    def broken(self):
        raise AttributeError("broken on purpose")

    @property
    def counted_miss(self):
        self.misses += 1
        raise AttributeError("counted miss")

    def method(self):
        return self.value

    def documented(self):
        pass

    def indented(self):
        """First line.

            Indented further,
        and back.
        """

    def _private(self):
        return "private"


class Manager:
    def __init__(self):
        self.seen = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.seen = exc_type is not None
        return False


def make_service(rpyc):
    class SemanticsService(rpyc.Service):
        def exposed_holder(self):
            return Holder()

        def exposed_manager(self):
            return Manager()

        def exposed_data(self):
            return [1, 2, 3]

        def exposed_sleep_then(self, seconds, value):
            import time

            time.sleep(seconds)
            return value

        def exposed_module(self):
            import unittest

            return unittest

    return SemanticsService


def main():
    if sys.argv[1] == "grpyc":
        import grpyc

        grpyc.install_as_rpyc()
    import rpyc
    from rpyc.utils.server import ThreadedServer

    config = {"allow_public_attrs": True, "allow_pickle": True}
    if len(sys.argv) > 2:
        config["allow_safe_attrs"] = False
    server = ThreadedServer(
        make_service(rpyc), hostname="127.0.0.1", port=0, protocol_config=config
    )
    server._listen()  # RPyC's own fixture step: listening before the port is told
    print(server.port, flush=True)
    server.start()


if __name__ == "__main__":
    main()
