"""Full collections of a server as connections pile up: ``python -m bench.gcpause``.

    python -m bench.gcpause [--server grpyc|floor|rpyc] [--connections 10000]
                            [--split-cpus]

The server (grpyc's, the floor's or stock rpyc's `ThreadedServer`) runs in
a child process; this process opens `--connections` connections to it one
after another, each making its first call (an echo) as it comes: in a
greenlet of its own for grpyc and the floor, inline for stock rpyc. It
prints one JSON line: the seconds each thousand connections took, the
server's full collections (generation 2: milliseconds, and the tracked
objects of the process then) and the tracked objects the server and the
client hold per connection.

Why: CPython's collector makes a full collection each time the objects that
survived the younger generations grew by a quarter, and one walks every
tracked object of the process, while every other connection of a one-thread
server waits. Each connection held keeps its tracked objects, so a server
holding many connections pauses longer each time. Client and server share
one CPU unless `--split-cpus`, so a pause's milliseconds then include the
client's turns.
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time

from bench.proc import pin_to_cpu, raise_nofile_limit

_MEASURING = """
import gc, json, sys, time
from bench.proc import pin_to_cpu, raise_nofile_limit
raise_nofile_limit()
pin_to_cpu(int(sys.argv[1]))
pauses, started = [], [0.0]

def on_collection(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    elif info["generation"] == 2:
        pauses.append([round((time.perf_counter() - started[0]) * 1000, 1), len(gc.get_objects())])

def listening(port):
    # The server is up: count from here, then tell the client its port.
    gc.collect()
    baseline[0] = len(gc.get_objects())
    gc.callbacks.append(on_collection)
    print(port, flush=True)

def report():
    sys.stdin.readline()  # the client has made all its connections
    gc.collect()
    tracked = len(gc.get_objects()) - baseline[0]
    print(json.dumps({"pauses": pauses, "tracked": tracked}), flush=True)

baseline = [0]
"""

# Each serves, calls `listening` with its port, and `report` when stdin says so.
_SERVERS = {
    "grpyc": """
import gevent
from grpyc.server import Server
from grpyc.service import Service

class Echo(Service):
    def exposed_echo(self, value):
        return value

# The warm-up connection comes on top of --connections: 10,000 must not meet
# the default max_connections (10,000) and be refused.
server = Server(Echo, hostname="127.0.0.1", port=0, max_connections=1_000_000)
server.listen()
gevent.spawn(server.start)
listening(server.port)
gevent.get_hub().threadpool.spawn(report).get()
""",
    "floor": """
import gevent
from bench.floor import make_server

server = make_server()
server.start()
listening(server.server_port)
gevent.get_hub().threadpool.spawn(report).get()
""",
    "rpyc": """
import threading
import rpyc
from rpyc.utils.server import ThreadedServer

class Echo(rpyc.Service):
    def exposed_echo(self, value):
        return value

server = ThreadedServer(Echo, hostname="127.0.0.1", port=0, backlog=4096)
threading.Thread(target=server.start, daemon=True).start()
while not server.active:
    time.sleep(0.01)
listening(server.port)
report()
""",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=sorted(_SERVERS), default="grpyc")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--split-cpus", action="store_true")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    server_cpu, client_cpu = (0, 1) if args.split_cpus else (0, 0)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen(
        [sys.executable, "-c", _MEASURING + _SERVERS[args.server], str(server_cpu)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        port = int(server.stdout.readline())
        pin_to_cpu(client_cpu)
        # The connections stay open (`_held`) until the server has counted.
        per_thousand, client_tracked, _held = _connect_all(args.server, port, args.connections)
        server.stdin.write("done\n")
        server.stdin.flush()
        found = json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
    result = {
        "server": args.server,
        "connections": args.connections,
        "seconds per thousand": per_thousand,
        "server full collections [ms, tracked objects]": found["pauses"],
        "server tracked objects per connection": round(found["tracked"] / args.connections, 1),
        "client tracked objects per connection": round(client_tracked / args.connections, 1),
    }
    print(json.dumps(result))


def _connect_all(kind, port, count):
    """Open `count` connections, each making its first call.

    Returns the seconds each 1,000 took, the tracked objects the client
    holds for them (counted from after a first connection, which imports
    what connecting needs), and the connections.
    """
    connect, first = _client(kind)
    warm_up = connect(port)
    _wait(kind, [first(warm_up)])
    gc.collect()
    baseline = len(gc.get_objects())
    held, firsts, per_thousand = [warm_up], [], []
    last = time.perf_counter()
    for index in range(count):
        conn = connect(port)
        held.append(conn)
        firsts.append(first(conn))
        if (index + 1) % 1000 == 0:
            now = time.perf_counter()
            per_thousand.append(round(now - last, 3))
            last = now
    _wait(kind, firsts)
    del firsts
    gc.collect()
    return per_thousand, len(gc.get_objects()) - baseline, held


def _wait(kind, firsts):
    """Wait for the first calls (greenlets, but for stock's client, which made them inline)."""
    if kind != "rpyc":
        import gevent

        gevent.joinall(firsts, raise_error=True)


def _client(kind):
    """``(connect(port), first(conn))`` of `kind`'s client."""
    if kind == "rpyc":
        import rpyc

        return (lambda port: rpyc.connect("127.0.0.1", port)), (lambda conn: conn.root.echo(1))
    import gevent

    if kind == "floor":
        from bench.floor import OP_ECHO, connect

        return (lambda port: connect("127.0.0.1", port)), (
            lambda peer: gevent.spawn(peer.call, OP_ECHO, b"1")
        )
    import grpyc

    gevent.get_hub()  # a connection made with a hub is served by greenlets, as in S3
    return (lambda port: grpyc.connect("127.0.0.1", port)), (
        lambda conn: gevent.spawn(lambda: conn.root.echo(1))
    )


if __name__ == "__main__":
    main()
