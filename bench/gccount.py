"""Objects a client leaves to the garbage collector per call: ``python -m bench.gccount``.

    python -m bench.gccount [--client grpyc|rpyc] [--runtime gevent|threads]
                            [--op bound|attr|root] [--calls 1000]

Runs `--calls` calls against a grpyc bench server with the collector off and
prints one JSON line: how much the collector's generation-0 count rose per
call (allocations of tracked objects raise it, most frees lower it; it is
what decides when collections run) and the cyclic garbage per call (what
``gc.collect()`` frees afterwards: objects refcounting alone never frees).

Why: the first figure sets how often a program's collections run (a
generation-0 collection each 700, a full one after enough of those), and a
full collection among thousands of threads waiting for the GIL stalls
(`python -m bench.gcstall`). `--runtime threads` is grpyc's plain-threads
runtime; `gevent` starts this thread's hub first, as the suite's client does.
"""

import argparse
import gc
import json
import sys
import tempfile

from bench.run import _start_server, _stop, choose_cpus
from bench.targets import OPERATIONS, TARGETS

_WARM_UP = 300
_CLIENT_TARGETS = {"grpyc": "grpyc", "rpyc": "rpyc-threaded"}


def _one_call(client_name, runtime, op, port):
    """A callable making one `op` call on a new connection of `client_name`'s client."""
    if runtime == "gevent":
        import gevent

        gevent.get_hub()
    client = TARGETS[_CLIENT_TARGETS[client_name]].load().make_client()
    return getattr(client, OPERATIONS[op])(client.connect("127.0.0.1", port))


def per_call(call, calls):
    """``(rise of the generation-0 count, cyclic garbage)`` per call of `call`."""
    for _ in range(_WARM_UP):
        call()
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(calls):
            call()
        allocated = gc.get_count()[0] - before
    finally:
        garbage = gc.collect()
        gc.enable()
    return allocated / calls, garbage / calls


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.gccount")
    parser.add_argument("--client", choices=["grpyc", "rpyc"], default="grpyc")
    parser.add_argument("--runtime", choices=["gevent", "threads"], default="gevent")
    parser.add_argument("--op", choices=["bound", "attr", "root"], default="bound")
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    server = None
    with tempfile.TemporaryFile() as log:
        try:
            server, port = _start_server("grpyc", choose_cpus(False)[0], log)
            call = _one_call(args.client, args.runtime, args.op, port)
            allocated, garbage = per_call(call, args.calls)
        finally:
            _stop(server)
    print(json.dumps({
        "client": args.client, "runtime": args.runtime, "op": args.op,
        "generation-0 count per call": round(allocated, 2),
        "cyclic garbage per call": round(garbage, 2),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
