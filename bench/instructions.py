"""Instructions per round trip, counted by valgrind: ``python -m bench.instructions``.

    python -m bench.instructions [--op bound|attr|callback|root] [--tree DIR ...]

On a VM the same code runs up to ~20 % faster or slower from one process to
the next, so a change of a few per cent in a hot path hides in timings. The
number of instructions one round trip executes does not move: each run
below repeats within ~0.3 %. For each tree (default: this checkout), a
grpyc server and client in one process, run twice under ``valgrind
--tool=cachegrind`` (``--cache-sim=no``: only instructions are counted),
with `_FEW` and `_FEW` + `_MORE` calls of ``op``; the difference over
`_MORE` is what one call costs both sides, start-up and imports left out.

It counts the CPU's work in user space only (Python, gevent, the codecs),
not the kernel's, and in-process, so the peer is never preempted mid-call:
pair it with ``python -m bench --only ... --baseline`` for time. Needs
valgrind (``apt-get install valgrind``).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_FEW, _MORE = 200, 1000

# The program valgrind runs: a server and a client of this tree's grpyc on
# one gevent hub, `op` called `count` times after a warm-up.
_PROGRAM = """
import sys, gevent
from grpyc.server import Server
from grpyc.service import Service
from grpyc.factory import connect

class Thing:
    exposed_value = 7

class S(Service):
    def exposed_echo(self, x): return x
    def exposed_make_thing(self): return Thing()
    def exposed_call(self, cb): return cb()

server = Server(S, hostname="127.0.0.1", port=0)
server.listen()
gevent.spawn(server.start)
gevent.sleep(0.05)
conn = connect("127.0.0.1", server.port)
echo, thing, call = conn.root.echo, conn.root.make_thing(), conn.root.call

def callback():
    return 1

ops = {
    "bound": lambda: echo(42),
    "attr": lambda: thing.value,
    "callback": lambda: call(callback),
    "root": lambda: conn.root.echo(42),
}
op, count = ops[sys.argv[1]], int(sys.argv[2])
for _ in range(300):
    op()
for _ in range(count):
    op()
"""


def _count(tree, op, calls, scratch):
    """Instructions valgrind counts for one run of the program in `scratch`."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    # Run in `scratch`: cwd comes first on sys.path, and no other `grpyc` is there.
    result = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "program.py",
            op,
            str(calls),
        ],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_call(tree, op):
    """Instructions one call of `op` costs, client and server together."""
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "program.py").write_text(_PROGRAM)
        few = _count(tree, op, _FEW, scratch)
        more = _count(tree, op, _FEW + _MORE, scratch)
    return (more - few) // _MORE


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=["bound", "attr", "callback", "root"], default="bound")
    parser.add_argument("--tree", action="append", help="a checkout to count (repeatable)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.exit(2, "bench.instructions: valgrind is not installed\n")
    trees = args.tree or [str(ROOT)]
    counts = {tree: per_call(tree, args.op) for tree in trees}
    first = counts[trees[0]]
    for tree, count in counts.items():
        print(f"{args.op}: {count:,} instructions per call  {count / first:.3f}x  {tree}")


if __name__ == "__main__":
    main()
