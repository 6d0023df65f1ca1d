"""The benchmark service, written once and mixed into each library's Service class."""

import time


class Thing:
    """A remote object whose attribute the client reads (S5)."""

    exposed_value = 7


class BenchMethods:
    """Exposed methods shared by the grpyc and the stock rpyc service."""

    def exposed_echo(self, value):
        return value

    def exposed_echo_after_yield(self, value):
        """Echo after letting other work run once, as a handler that waits on I/O
        does (``bench.cpu --op blocking``)."""
        self._yield_once()
        return value

    @staticmethod
    def _yield_once():
        # Stock rpyc's threads yield so (gevent's sleep under patch_all);
        # grpyc's server runs gevent unpatched: `grpyc_target` yields to it.
        time.sleep(0)

    def exposed_fail(self):
        raise ValueError("bench")

    def exposed_make_list(self, count):
        return list(range(count))

    def exposed_make_thing(self):
        return Thing()

    def exposed_call(self, callback):
        return callback()

    def exposed_bounce(self, callback, depth):
        """One level of the nested chain: the client's callback calls bounce again."""
        if depth <= 0:
            return 0
        return callback(depth - 1) + 1
