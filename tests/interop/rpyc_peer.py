"""A stock rpyc 6 server, run as a subprocess by the interop tests.

``python -m tests.interop.rpyc_peer [classic]`` prints the port it listens on
(127.0.0.1) and serves until killed or until its stdin closes.
"""

import os
import sys
import threading
import time

import rpyc
from rpyc.utils.server import ThreadedServer


class Thing:
    def __init__(self, value=0):
        self.value = value
        self._secret = "hidden"

    def exposed_get(self):
        return self.value


class StockService(rpyc.Service):
    def exposed_echo(self, value):
        return value

    def exposed_add(self, a, b=0, *, c=0):
        return a + b + c

    def exposed_sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    def exposed_call(self, func, *args, **kwargs):
        return func(*args, **kwargs)

    def exposed_bounce(self, callback, depth):
        if depth <= 0:
            return 0
        return callback(depth - 1) + 1

    def exposed_make_list(self, *items):
        return list(items)

    def exposed_make_dict(self, **items):
        return dict(items)

    def exposed_make_thing(self, value=0):
        return Thing(value)

    def exposed_length(self, obj):
        return len(obj)

    def exposed_fail(self, message="boom"):
        raise ValueError(message)

    def exposed_ping_peer(self):
        self._conn.ping()
        return True

    def exposed_unanswered(self):
        """Requests of this server (its DELs included) the client has not answered
        yet: stock keeps each in a table until its answer comes."""
        return len(self._conn._request_callbacks)

    def on_connect(self, conn):
        self._conn = conn


def _exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


def main():
    classic = len(sys.argv) > 1 and sys.argv[1] == "classic"
    service = rpyc.SlaveService if classic else StockService
    server = ThreadedServer(
        service, hostname="127.0.0.1", port=0, protocol_config={"allow_public_attrs": True}
    )
    server._listen()  # listen before telling the port, or early connects are refused
    print(server.port, flush=True)
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    server.start()


if __name__ == "__main__":
    main()
