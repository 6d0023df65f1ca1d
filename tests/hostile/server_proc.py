"""A grpyc server in its own process, for tests that measure or kill it.

Run as ``python -m tests.hostile.server_proc '<json options>'``. It prints
its port on the first stdout line, serves until its stdin closes, and logs
to stderr. Options: ``protocol_config`` (dict), ``server`` (extra `Server`
keyword arguments, dict).

`HostileTargetService` is also used in-process by the hostile tests.
"""

import gc
import json
import logging
import sys
import time

import gevent
from gevent.fileobject import FileObjectThread

from grpyc.server import Server
from grpyc.service import Service


class Box:
    """A plain object handed out by reference."""

    def __init__(self, value=0):
        self.value = value

    def exposed_get(self):
        return self.value


class HostileTargetService(Service):
    """Echo, references, callbacks, a CPU hog, and what the server holds."""

    server = None  # set by the process that owns the server

    def on_connect(self, conn):
        self.conn = conn

    def exposed_echo(self, value):
        return value

    def exposed_sleep(self, seconds):
        gevent.sleep(seconds)
        return seconds

    def exposed_spin(self, seconds):
        """Busy for `seconds` without ever yielding to the gevent hub."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pass
        return seconds

    def exposed_call(self, func, *args):
        return func(*args)

    def exposed_make_box(self, value=0):
        return Box(value)

    def exposed_stats(self):
        """(connections, exported objects summed over them, live greenlets)."""
        clients = list(self.server.clients) if self.server is not None else [self.conn]
        exported = sum(len(conn._local_objects) for conn in clients)
        return len(clients), exported, count_live_greenlets()


def count_live_greenlets():
    """Live greenlets, not counting the hub's parked pool readers (a cache, `_readers`)."""
    from grpyc._readers import ReaderPool

    # type(), not isinstance(): a proxy would ask its peer for __class__.
    live = sum(
        1 for obj in gc.get_objects() if issubclass(type(obj), gevent.Greenlet) and not obj.dead
    )
    return live - ReaderPool.for_hub(gevent.get_hub()).idle


def main():
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    server = Server(
        HostileTargetService,
        hostname="127.0.0.1",
        port=0,
        protocol_config=options.get("protocol_config"),
        **options.get("server", {}),
    )
    HostileTargetService.server = server
    server.listen()
    sys.stdout.write(f"{server.port}\n")
    sys.stdout.flush()
    # Reading stdin in a thread keeps the hub serving; EOF means "stop".
    FileObjectThread(sys.stdin.buffer, "rb").read()
    server.close()


if __name__ == "__main__":
    main()
