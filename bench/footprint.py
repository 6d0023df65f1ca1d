"""Instructions and L1 cache misses per call on one side: ``python -m bench.footprint``.

    python -m bench.footprint [--op bound|attr|root|callback] [--side server|client]
                              [--target grpyc|rpyc]

`bench.instructions` counts both sides in one process; this runs the
server and the client as two processes, as the benchmark suite does, and
runs one of them under ``valgrind --tool=cachegrind`` with a simulated
32 KiB L1 instruction cache and 32 KiB L1 data cache (8-way, 64-byte
lines, what the machines here have). Each count is taken twice, for
`_FEW` and `_FEW` + `_MORE` calls; the difference over `_MORE` is one
call. `--target rpyc` runs stock rpyc's OneShotServer and client instead.

Why: per call, grpyc executes fewer instructions than stock rpyc on each
side yet took as long. The misses say where the time went: code and data
that no longer fit the L1 caches (docs/benchmarks.md). Needs valgrind.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_FEW, _MORE = 200, 1000
_CACHES = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,16,64"]

_SERVER = """
import os, sys
if sys.argv[1] == "grpyc":
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
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(server.port))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
server.start()
"""

_CLIENT = """
import os, sys, time
target, port_file, op, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if target == "grpyc":
    import gevent
    gevent.get_hub()
    import grpyc as rpyc
else:
    import rpyc
for _ in range(3000):  # the server writes its port before it listens (stock's does)
    try:
        conn = rpyc.connect("127.0.0.1", int(open(port_file).read()))
        break
    except (OSError, ValueError):
        time.sleep(0.02)
echo, thing, call = conn.root.echo, conn.root.make_thing(), conn.root.call

def callback():
    return 1

ops = {"bound": lambda: echo(42), "attr": lambda: thing.value,
       "root": lambda: conn.root.echo(42), "callback": lambda: call(callback)}
run = ops[op]
for _ in range(300):
    run()
for _ in range(count):
    run()
conn.close()
"""


def _wait_for(path, seconds=120.0):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not write its port")
        time.sleep(0.02)


def _count(args, calls, scratch):
    """valgrind's totals for the measured side of one run of `calls` calls."""
    port_file = str(Path(scratch, f"port.{calls}"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    valgrind = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=yes",
        *_CACHES,
        "--cachegrind-out-file=/dev/null",
    ]
    server = [sys.executable, "server.py", args.target, port_file]
    client = [sys.executable, "client.py", args.target, port_file, args.op, str(calls)]
    if args.side == "server":
        server = valgrind + server
    else:
        client = valgrind + client
    run = {"cwd": scratch, "env": env, "stderr": subprocess.PIPE, "text": True}
    with subprocess.Popen(server, **run) as server_proc:
        try:
            if args.side == "client":
                _wait_for(port_file)
            client_proc = subprocess.run(client, timeout=900, check=True, **run)
            server_err = server_proc.communicate(timeout=300)[1]
        finally:
            if server_proc.poll() is None:
                server_proc.kill()
    report = server_err if args.side == "server" else client_proc.stderr
    return _parse(report)


def _parse(report):
    counts = {}
    for name, pattern in (
        ("instructions", r"I\s+refs:\s+([\d,]+)"),
        ("I1 misses", r"I1\s+misses:\s+([\d,]+)"),
        ("D1 misses", r"D1\s+misses:\s+([\d,]+)"),
    ):
        found = re.search(pattern, report)
        if found is None:
            raise RuntimeError(f"no {name} in valgrind's output:\n{report[-2000:]}")
        counts[name] = int(found.group(1).replace(",", ""))
    return counts


def per_call(args):
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "server.py").write_text(_SERVER)
        Path(scratch, "client.py").write_text(_CLIENT)
        few = _count(args, _FEW, scratch)
        more = _count(args, _FEW + _MORE, scratch)
    return {name: (more[name] - few[name]) // _MORE for name in few}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=["bound", "attr", "root", "callback"], default="bound")
    parser.add_argument("--side", choices=["server", "client"], default="server")
    parser.add_argument("--target", choices=["grpyc", "rpyc"], default="grpyc")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.exit(2, "bench.footprint: valgrind is not installed\n")
    counts = per_call(args)
    figures = "  ".join(f"{value:,} {name}" for name, value in counts.items())
    print(f"{args.target} {args.side} {args.op}: {figures} per call")


if __name__ == "__main__":
    main()
