"""The service of the drop-in program: plain RPyC 6 code."""

import time

import rpyc
from calc_errors import CalcError


class CalcService(rpyc.Service):
    def on_connect(self, conn):
        print("server: client connected", flush=True)

    def on_disconnect(self, conn):
        print("server: client disconnected", flush=True)

    def exposed_add(self, a, b):
        return a + b

    def exposed_apply(self, func, values):
        # Calls back into the client for every value.
        return tuple(func(value) for value in values)

    def exposed_slow_square(self, x, delay):
        time.sleep(delay)
        return x * x

    def exposed_divide(self, a, b):
        return a / b

    def exposed_primes(self):
        # A list travels by reference: the client gets a proxy.
        return [2, 3, 5, 7]

    def exposed_sqrt(self, x):
        if x < 0:
            raise CalcError("negative", x)
        return x**0.5
