"""A stock rpyc peer with ``bind_threads`` on, for tests/interop/test_bind_threads_interop.py.

``python -m tests.interop.bind_threads_peer server`` serves `BoundService` with
stock rpyc's ThreadedServer and prints its port; ``... client PORT`` runs the
probes against a server at PORT and prints one JSON line of what it saw.
"""

import json
import sys
import threading

import rpyc
from rpyc.utils.server import ThreadedServer

CONFIG = {"bind_threads": True, "allow_public_attrs": True, "sync_request_timeout": 10}


class BoundService(rpyc.Service):
    def exposed_add(self, a, b):
        return a + b

    def exposed_call(self, func, *args):
        return func(*args)

    def exposed_bounce(self, callback, depth):
        """Call back the peer, which calls bounce again: `depth` levels."""
        if depth <= 0:
            return 0
        return callback(depth - 1) + 1

    def exposed_fail(self, text):
        raise ValueError(text)


def probe(root):
    out = {"add": root.add(2, 3), "call": root.call(lambda x: x * 2, 21)}

    def bounce(depth):
        return root.bounce(bounce, depth)

    out["bounce"] = bounce(6)
    try:
        root.fail("boom")
    except ValueError as exc:
        out["fail"] = str(exc).split("\n")[0]
    results = [None] * 4

    def worker(n):
        results[n] = root.call(lambda x: x + n, 100)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    out["threads"] = results
    return out


def main():
    if sys.argv[1] == "server":
        server = ThreadedServer(BoundService, hostname="127.0.0.1", port=0, protocol_config=CONFIG)
        server._listen()  # listening before the port is told
        print(server.port, flush=True)
        server.start()
    else:
        conn = rpyc.connect("127.0.0.1", int(sys.argv[2]), service=BoundService, config=CONFIG)
        print(json.dumps(probe(conn.root)), flush=True)
        conn.close()


if __name__ == "__main__":
    main()
