"""The client operations for an RPyC-style library (grpyc or stock rpyc).

The code is what a user of either library writes; only ``connect`` differs.
"""

import random
import time

# The argument of `RpcClient.medium_echo`.
MEDIUM_TEXT = "m" * 1000
# The argument of `RpcClient.random8k_echo`: bytes no compression shrinks.
RANDOM_8K = random.Random(8).randbytes(8192)


def compressible_text(size):
    """``size`` characters of varied words and numbers, as a log page or JSON
    is: zlib level 1 takes them to ~30 %, so both libraries compress them."""
    words = " ".join(f"word{i % 97} value {i * 7 % 1013}" for i in range(size // 8 + 1))
    return words[:size]


class RpcClient:
    """Scenario operations over ``conn.root`` of a bench service."""

    def __init__(self, connect):
        self._connect = connect

    def connect(self, host, port):
        return self._connect(host, port)

    def close(self, conn):
        conn.close()

    def root_echo(self, conn):
        """``conn.root.echo(42)`` as users write it: attribute lookup every call."""

        def call():
            return conn.root.echo(42)

        return call

    def bound_echo(self, conn):
        """The method fetched once: ``echo = conn.root.echo; echo(42)``."""
        return self._echo_of(conn, 42)

    def medium_echo(self, conn):
        """``echo(text)`` of 1,000 characters: a request and an answer of ~1 KB each
        (``bench.cpu --op medium``; a ping or a traceback is that size)."""
        return self._echo_of(conn, MEDIUM_TEXT)

    def text3k_echo(self, conn):
        """``echo(text)`` of 3,100 characters of text, just over RPyC's compression
        threshold (3,000 bytes): a compressed request and answer (``bench.cpu --op text3k``)."""
        return self._echo_of(conn, compressible_text(3_100))

    def text30k_echo(self, conn):
        """``echo(text)`` of 30,000 characters of text, compressed both ways (``--op text30k``)."""
        return self._echo_of(conn, compressible_text(30_000))

    def random8k_echo(self, conn):
        """``echo(data)`` of 8 KiB of random bytes, which no compression shrinks
        (media, archives): what rating them costs (``bench.cpu --op random8k``)."""
        return self._echo_of(conn, RANDOM_8K)

    def blocking_echo(self, conn):
        """``echo_after_yield(42)``: a handler that waits once, as one doing I/O
        (``bench.cpu --op blocking``; the floor has no handler to run it)."""
        return self._echo_of(conn, 42, conn.root.echo_after_yield)

    def _echo_of(self, conn, value, echo=None):
        echo = conn.root.echo if echo is None else echo

        def call():
            return echo(value)

        return call

    def remote_error(self, conn):
        """A call that raises ValueError remotely (``bench.cpu --op error``)."""
        fail = conn.root.fail

        def call():
            try:
                fail()
            except ValueError:
                return
            raise AssertionError("fail() did not raise")

        return call

    def ping(self, conn):
        """``conn.ping()``: RPyC's default 520-character echo (``bench.cpu --op ping``)."""
        return conn.ping

    def echo_bytes(self, conn):
        return conn.root.echo

    def iterate_list(self, conn, count, deadline):
        """Iterate a remote list of ``count`` ints; returns the items seen by ``deadline``."""
        remote_list = conn.root.make_list(count)
        seen = 0
        for _item in remote_list:
            seen += 1
            if time.perf_counter() > deadline:
                break
        return seen

    def read_attrs(self, conn, count, deadline):
        """Read ``thing.value`` of a remote object ``count`` times (or until ``deadline``)."""
        thing = conn.root.make_thing()
        done = 0
        while done < count:
            thing.value  # noqa: B018 - the remote read is what is measured
            done += 1
            if time.perf_counter() > deadline:
                break
        return done

    def attr_read(self, conn):
        """One ``thing.value`` read of a remote object per call (``bench.cpu --op attr``)."""
        thing = conn.root.make_thing()

        def read():
            return thing.value

        return read

    def callback(self, conn):
        """One call whose handler calls the client back once (depth 1)."""
        call = conn.root.call

        def callback():
            return 1

        def run():
            return call(callback)

        return run

    def chain(self, conn, depth):
        """A nested chain: bounce(d) calls back cb(d-1), which calls bounce(d-1), ..."""
        bounce = conn.root.bounce

        def callback(level):
            return bounce(callback, level)

        return bounce(callback, depth)
