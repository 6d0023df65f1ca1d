"""Python opcodes per call on each side: ``python -m bench.opcodes``.

    python -m bench.opcodes [--op bound|attr|root|callback]
                            [--target grpyc|rpyc|floor] [--top N]

Runs a server and a client as two processes (as `bench.footprint` does)
and counts, with ``sys.settrace`` opcode events, the Python bytecode
instructions each side executes per call, and in which functions. The
count hardly depends on the machine or its load (it moves by a few
opcodes from one run to the next, where timings move by 15-40 %), so it
shows what a change to a hot path takes away before any timing can;
what an opcode costs in time is another question (docs/benchmarks.md,
"Where the time goes"). ``--target floor`` runs the
one-reader floor's echo round trip for every op (it has no attributes
or callbacks). Compiled code (grpyc's `.so` modules, gevent's) runs no
opcodes: its work shows only in `bench.footprint`'s instruction counts.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.footprint import _wait_for

ROOT = Path(__file__).resolve().parent.parent
_WARM, _FEW, _MORE = 300, 200, 1000

# Both programs: `counting()` starts the count, `report()` prints it as one
# JSON line on stdout (``{"file:function": opcodes, ...}``). Each side counts
# a whole session (the server's includes the handshake and the warm-up), so
# the parent runs two sessions, of `_FEW` and `_FEW` + `_MORE` calls, and
# takes the difference over `_MORE`: one call.
_COUNTER = """
import collections, json, sys, threading
_counts = collections.Counter()

def _local(frame, event, arg):
    if event == "opcode":
        code = frame.f_code
        _counts[code.co_filename.rsplit("/", 1)[-1] + ":" + code.co_name] += 1
    return _local

def _tracer(frame, event, arg):
    frame.f_trace_opcodes = True
    frame.f_trace_lines = False
    return _local

def counting():
    _counts.clear()
    threading.settrace(_tracer)
    sys.settrace(_tracer)

def report():
    sys.settrace(None)
    threading.settrace(None)
    print(json.dumps(dict(_counts)), flush=True)
"""

_SERVER = (
    _COUNTER
    + """
import os
target, port_file = sys.argv[1], sys.argv[2]
if target == "floor":
    import gevent
    from bench import floor
    from gevent.event import Event
    done = Event()

    def handle(sock, _address):
        try:
            floor.FloorPeer(sock).read_loop()
        finally:
            done.set()

    from gevent.server import StreamServer
    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    port = server.server_port
else:
    if target == "grpyc":
        import gevent
        import grpyc as rpyc
        from grpyc.server import OneShotServer
    else:
        import rpyc
        from rpyc.utils.server import OneShotServer

    class Thing:
        exposed_value = 7

    class S(rpyc.Service):
        def exposed_echo(self, x): return x
        def exposed_make_thing(self): return Thing()
        def exposed_call(self, cb): return cb()

    server = OneShotServer(S, hostname="127.0.0.1", port=0)
    port = server.port
with open(port_file + ".tmp", "w") as f:
    f.write(str(port))
os.rename(port_file + ".tmp", port_file)
counting()
if target == "floor":
    done.wait()
    server.stop()
else:
    server.start()
report()
"""
)

_CLIENT = (
    _COUNTER
    + """
import time
target, port_file, op, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if target == "floor":
    import gevent
    from bench import floor
    conn = floor.connect("127.0.0.1", int(open(port_file).read()))
    run = lambda: conn.call(floor.OP_ECHO, b"x" * 24)
else:
    if target == "grpyc":
        import gevent
        gevent.get_hub()
        import grpyc as rpyc
    else:
        import rpyc
    conn = rpyc.connect("127.0.0.1", int(open(port_file).read()))
    echo, thing, call = conn.root.echo, conn.root.make_thing(), conn.root.call

    def callback():
        return 1

    run = {
        "bound": lambda: echo(42), "attr": lambda: thing.value,
        "root": lambda: conn.root.echo(42), "callback": lambda: call(callback),
    }[op]
for _ in range(WARM_CALLS):
    run()
counting()
for _ in range(calls):
    run()
report()
conn.close()
""".replace("WARM_CALLS", str(_WARM))
)


def _session(args, calls, scratch):
    """One server and one client process: each side's opcode counts by function."""
    port_file = str(Path(scratch, f"port.{calls}"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = {"cwd": scratch, "env": env, "stdout": subprocess.PIPE, "text": True}
    with subprocess.Popen([sys.executable, "server.py", args.target, port_file], **run) as server:
        try:
            _wait_for(port_file)
            client = subprocess.run(
                [sys.executable, "client.py", args.target, port_file, args.op, str(calls)],
                timeout=600, check=True, **run,
            )  # fmt: skip
            server_out = server.communicate(timeout=120)[0]
        finally:
            if server.poll() is None:
                server.kill()
    return {
        "server": json.loads(server_out.splitlines()[-1]),
        "client": json.loads(client.stdout.splitlines()[-1]),
    }


def per_call(args):
    """``{side: (opcodes per call, [(per call, "file:function"), ...])}``, most first."""
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "server.py").write_text(_SERVER)
        Path(scratch, "client.py").write_text(_CLIENT)
        few = _session(args, _FEW, scratch)
        more = _session(args, _FEW + _MORE, scratch)
    figures = {}
    for side in ("server", "client"):
        names = set(few[side]) | set(more[side])
        counts = {
            name: (more[side].get(name, 0) - few[side].get(name, 0)) / _MORE for name in names
        }
        rows = sorted(((round(n, 1), name) for name, n in counts.items()), reverse=True)
        figures[side] = (round(sum(counts.values()), 1), [row for row in rows if row[0] >= 0.5])
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=["bound", "attr", "root", "callback"], default="bound")
    parser.add_argument("--target", choices=["grpyc", "rpyc", "floor"], default="grpyc")
    parser.add_argument("--top", type=int, default=12, help="functions listed per side")
    args = parser.parse_args(argv)
    for side, (total, rows) in per_call(args).items():
        print(f"{args.target} {side} {args.op}: {total:,.1f} opcodes per call")
        for count, name in rows[: args.top]:
            print(f"  {count:8.1f}  {name}")


if __name__ == "__main__":
    main()
