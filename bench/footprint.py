"""Instructions and L1 cache misses per call on one side: ``python -m bench.footprint``.

    python -m bench.footprint [--op bound|attr|root|callback] [--side server|client]
                              [--target grpyc|rpyc|floor] [--parts] [--functions N]

`bench.instructions` counts both sides in one process; this runs the
server and the client as two processes, as the benchmark suite does, and
runs one of them under ``valgrind --tool=cachegrind`` with a simulated
32 KiB L1 instruction cache and 32 KiB L1 data cache (8-way, 64-byte
lines, what the machines here have). Each count is taken twice, for
`_FEW` and `_FEW` + `_MORE` calls; the difference over `_MORE` is one
call. `--target rpyc` runs stock rpyc's OneShotServer and client instead;
`--target floor` the one-reader floor's echo round trip (whatever the op).
`--parts` also splits the counts by where the code lives (CPython, gevent and
libev, greenlet, libc, each compiled grpyc module), from ``cg_annotate``;
`--functions N` lists the N functions (C functions: Python code counts in
the eval loop) that run the most instructions per call.

Why: per call, grpyc executes fewer instructions than stock rpyc on each
side yet took as long. The misses say where the time went: code and data
that no longer fit the L1 caches (docs/benchmarks.md). Across grpyc, stock
rpyc and the floor, instructions are a poor guide to a side's CPU time per
call; its L1 misses weigh more. Needs valgrind.
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

from bench.targets import OPERATIONS

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

from bench.targets.service import BenchMethods

class S(BenchMethods, rpyc.Service):
    pass

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
from bench.targets import OPERATIONS
from bench.targets.rpc_client import RpcClient

run = getattr(RpcClient(rpyc.connect), OPERATIONS[op])(conn)
for _ in range(300):
    run()
for _ in range(count):
    run()
conn.close()
"""

# The floor: one echo round trip per call, whatever the op; the server
# serves one connection and exits when the client is done.
_FLOOR_SERVER = """
import os, sys
import gevent
from gevent.event import Event
from gevent.server import StreamServer
from bench import floor

port_file = sys.argv[2]
done = Event()

def handle(sock, _address):
    try:
        floor.FloorPeer(sock).read_loop()
    finally:
        done.set()

server = StreamServer(("127.0.0.1", 0), handle)
server.start()
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_port))
os.rename(port_file + ".tmp", port_file)
done.wait()
"""

_FLOOR_CLIENT = """
import sys, time
from bench import floor

port_file, count = sys.argv[2], int(sys.argv[4])
for _ in range(3000):  # a server under valgrind takes a while to listen
    try:
        conn = floor.connect("127.0.0.1", int(open(port_file).read()))
        break
    except (OSError, ValueError):
        time.sleep(0.02)
for _ in range(300):
    conn.call(floor.OP_ECHO, b"x" * 24)
for _ in range(count):
    conn.call(floor.OP_ECHO, b"x" * 24)
conn.close()
"""


def programs(target):
    """The (server, client) program texts `target` runs."""
    return (_FLOOR_SERVER, _FLOOR_CLIENT) if target == "floor" else (_SERVER, _CLIENT)


def cachegrind(out_file):
    """The valgrind command line (before the program's) that counts with our caches."""
    return ["valgrind", "--tool=cachegrind", "--cache-sim=yes", *_CACHES,
            f"--cachegrind-out-file={out_file}"]  # fmt: skip


def _wait_for(path, seconds=120.0):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not write its port")
        time.sleep(0.02)


def _count(args, calls, scratch):
    """valgrind's totals for the measured side of one run of `calls` calls,
    and (with `--parts` or `--functions`) the same counts by function."""
    port_file = str(Path(scratch, f"port.{calls}"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    by_function = args.parts or args.functions
    out_file = str(Path(scratch, f"cachegrind.{calls}")) if by_function else "/dev/null"
    valgrind = cachegrind(out_file)
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
    return _parse(report), (_locations(out_file) if by_function else {})


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


# cg_annotate's columns with --cache-sim=yes, and the three shown here.
_EVENTS = ["Ir", "I1mr", "ILmr", "Dr", "D1mr", "DLmr", "Dw", "D1mw", "DLmw"]
_SHOWN = {"instructions": "Ir", "I1 misses": "I1mr", "D1 misses": "D1mr"}


def _part_of(location):
    """The part of the code a ``file:function`` of cg_annotate's belongs to."""
    path = location.split(":", 1)[0]
    if "/grpyc/" in path and path.endswith(".c"):
        return "grpyc compiled " + Path(path).stem
    if "Python-3" in path or "/python3." in path:
        return "CPython"
    if "greenlet" in path:
        return "greenlet"
    if path == "???":
        return "gevent, libev, other code without debug info"
    if "sysdeps" in path or path.startswith("./"):
        return "libc"
    return "other"


def _parts(out_file):
    """``{part: {event: count}}`` of one cachegrind output file."""
    return _grouped(_locations(out_file), _part_of)


def _grouped(locations, key):
    """``{key(location): {event: count}}``: the counts of `locations` added up by key."""
    groups = {}
    for location, counts in locations.items():
        totals = groups.setdefault(key(location), {})
        for event, value in counts.items():
            totals[event] = totals.get(event, 0) + value
    return groups


def _locations(out_file):
    """``{"file:function": {event: count}}`` of one cachegrind output file."""
    report = subprocess.run(
        ["cg_annotate", "--auto=no", "--threshold=0", out_file],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    locations = {}
    listing = False
    for line in report.splitlines():
        if "file:function" in line:
            listing = True
            continue
        fields = re.sub(r"\(\s*[\d.]+%\)", "", line).split()
        if not listing or len(fields) <= len(_EVENTS):
            continue
        counts = fields[: len(_EVENTS)]
        if not all(c == "." or c.replace(",", "").isdigit() for c in counts):
            continue
        totals = locations.setdefault(" ".join(fields[len(_EVENTS) :]), {})
        for event, count in zip(_EVENTS, counts, strict=True):
            value = 0 if count == "." else int(count.replace(",", ""))
            totals[event] = totals.get(event, 0) + value
    return locations


def per_call(args):
    """``(totals, by_function)`` per call: valgrind's totals, and with `--parts` or
    `--functions` the counts of each ``file:function`` (shown names, per call)."""
    server, client = programs(args.target)
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "server.py").write_text(server)
        Path(scratch, "client.py").write_text(client)
        few, few_functions = _count(args, _FEW, scratch)
        more, more_functions = _count(args, _FEW + _MORE, scratch)
    totals = {name: (more[name] - few[name]) // _MORE for name in few}
    by_function = {}
    for location in set(few_functions) | set(more_functions):
        before, after = few_functions.get(location, {}), more_functions.get(location, {})
        by_function[location] = {
            name: (after.get(event, 0) - before.get(event, 0)) / _MORE
            for name, event in _SHOWN.items()
        }
    return totals, by_function


def _print_row(numbers, label):
    if any(abs(value) >= 1 for value in numbers.values()):
        row = "  ".join(f"{value:8,.0f} {name}" for name, value in numbers.items())
        print(f"  {row}  {label}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=sorted(OPERATIONS), default="bound")
    parser.add_argument("--side", choices=["server", "client"], default="server")
    parser.add_argument("--target", choices=["grpyc", "rpyc", "floor"], default="grpyc")
    parser.add_argument("--parts", action="store_true", help="also split the counts by part")
    parser.add_argument(
        "--functions", type=int, default=0, metavar="N",
        help="also list the N functions with the most instructions per call",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.exit(2, "bench.footprint: valgrind is not installed\n")
    counts, by_function = per_call(args)
    figures = "  ".join(f"{value:,} {name}" for name, value in counts.items())
    print(f"{args.target} {args.side} {args.op}: {figures} per call")
    if args.parts:
        parts = _grouped(by_function, _part_of)
        for part, numbers in sorted(parts.items(), key=lambda item: -item[1]["I1 misses"]):
            _print_row(numbers, part)
    if args.functions:
        print(f"  the {args.functions} functions with the most instructions per call:")
        busiest = sorted(by_function.items(), key=lambda item: -item[1]["instructions"])
        for location, numbers in busiest[: args.functions]:
            path, _, function = location.partition(":")
            _print_row(numbers, f"{Path(path).name}:{function}")


if __name__ == "__main__":
    main()
