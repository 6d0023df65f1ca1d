"""The floor target: bench.floor's echo server and client (see bench/floor.py)."""

import time

from bench import floor
from bench.targets.rpc_client import RANDOM_8K, compressible_text

# About the size of the request RPyC sends for ``echo(42)``.
SMALL_BODY = b"echo(42)................"
# About the size of the request for ``echo("m" * 1000)`` (`bench.cpu --op medium`).
MEDIUM_BODY = b"m" * 1024


def serve(on_port):
    server = floor.make_server()
    server.start()
    on_port(server.server_port)
    server.serve_forever()


class FloorClient:
    """Each scenario's operation as the raw round trips it needs."""

    def connect(self, host, port):
        return floor.connect(host, port)

    def close(self, conn):
        conn.close()

    def root_echo(self, conn):
        # No attribute lookup on the floor: the same single round trip.
        return self.bound_echo(conn)

    def bound_echo(self, conn):
        return self._echo_of(conn, SMALL_BODY)

    def medium_echo(self, conn):
        return self._echo_of(conn, MEDIUM_BODY)

    def text3k_echo(self, conn):
        # The floor never compresses: the same text, as it is.
        return self._echo_of(conn, compressible_text(3_100).encode())

    def text30k_echo(self, conn):
        return self._echo_of(conn, compressible_text(30_000).encode())

    def random8k_echo(self, conn):
        return self._echo_of(conn, RANDOM_8K)

    def _echo_of(self, conn, body):
        def call():
            return conn.call(floor.OP_ECHO, body)

        return call

    def echo_bytes(self, conn):
        def echo(payload):
            return conn.call(floor.OP_ECHO, payload)

        return echo

    def _round_trips(self, conn, count, deadline):
        done = 0
        while done < count:
            conn.call(floor.OP_ECHO, SMALL_BODY)
            done += 1
            if time.perf_counter() > deadline:
                break
        return done

    def iterate_list(self, conn, count, deadline):
        return self._round_trips(conn, count, deadline)

    def read_attrs(self, conn, count, deadline):
        return self._round_trips(conn, count, deadline)

    def attr_read(self, conn):
        """The floor has no attributes: one echo round trip per read (``bench.cpu --op attr``)."""

        def read():
            return conn.call(floor.OP_ECHO, SMALL_BODY)

        return read

    def callback(self, conn):
        def run():
            return conn.call(floor.OP_CALLBACK, SMALL_BODY)

        return run

    def chain(self, conn, depth):
        # BOUNCE alternates sides, so 2*depth hops make the same chain as
        # RPyC's bounce(d) -> callback(d-1) -> bounce(d-1) -> ...
        return int(bytes(conn.call(floor.OP_BOUNCE, b"%d" % (2 * depth)))) // 2


def make_client():
    return FloorClient()
