"""Python opcodes per call on each side: ``python -m bench.opcodes``.

    python -m bench.opcodes [--op bound|attr|root|callback]
                            [--target grpyc|rpyc|floor] [--top N]

Runs `bench.footprint`'s server and client programs (for the floor, an
echo server and client of its own) as two processes and counts, with
``sys.settrace`` opcode events, the Python bytecode instructions each
side executes per call, and in which functions. The count hardly depends
on the machine or its load (it moves by a few opcodes from one run to
the next, where timings move by 15-40 %), so it shows what a change to a
hot path takes away before any timing can; what an opcode costs in time
is another question (docs/benchmarks.md, "Where the time goes").
``--target floor`` runs the one-reader floor's echo round trip for every
op (it has no attributes or callbacks). Compiled code (grpyc's `.so`
modules, gevent's) runs no opcodes: its work shows only in
`bench.footprint`'s instruction counts.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import footprint
from bench.footprint import _FEW, _MORE, _wait_for
from bench.targets import OPERATIONS

ROOT = Path(__file__).resolve().parent.parent

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


def _counted(program, measured):
    """`program` with the count around its `measured` lines (they must be in it)."""
    if measured not in program:
        raise ValueError(f"{measured!r} not in the program")
    return _COUNTER + program.replace(measured, "counting()\n" + measured + "report()\n")


# grpyc and stock rpyc: `bench.footprint`'s programs (same service, same ops).
_RPC_SERVER = _counted(footprint._SERVER, "server.start()\n")
_RPC_CLIENT = _counted(footprint._CLIENT, "for _ in range(count):\n    run()\n")

# The floor: one echo round trip per call, whatever the op.
_FLOOR_SERVER = _counted(footprint._FLOOR_SERVER, "done.wait()\n")
_FLOOR_CLIENT = _counted(
    footprint._FLOOR_CLIENT,
    'for _ in range(count):\n    conn.call(floor.OP_ECHO, b"x" * 24)\n',
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
        floor_target = args.target == "floor"
        Path(scratch, "server.py").write_text(_FLOOR_SERVER if floor_target else _RPC_SERVER)
        Path(scratch, "client.py").write_text(_FLOOR_CLIENT if floor_target else _RPC_CLIENT)
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
    parser.add_argument("--op", choices=sorted(OPERATIONS), default="bound")
    parser.add_argument("--target", choices=["grpyc", "rpyc", "floor"], default="grpyc")
    parser.add_argument("--top", type=int, default=12, help="functions listed per side")
    args = parser.parse_args(argv)
    for side, (total, rows) in per_call(args).items():
        print(f"{args.target} {side} {args.op}: {total:,.1f} opcodes per call")
        for count, name in rows[: args.top]:
            print(f"  {count:8.1f}  {name}")


if __name__ == "__main__":
    main()
