"""A full collection among thousands of OS threads: ``python -m bench.gcstall``.

    python -m bench.gcstall [--client grpyc|rpyc] [--server grpyc|rpyc-threaded]
                            [--threads 2000] [--seconds 2] [--bump N] [--freeze]
                            [--split-cpus]

The client (grpyc from plain OS threads, or stock rpyc) makes `--threads`
connections to the server, each with its first call in a thread of its own,
then calls from one thread per connection, all at once, for `--seconds`;
server and client share one CPU unless `--split-cpus`. It prints one JSON
line: calls/s, the slowest call, errors, and each collection of the
garbage collector in the client during the calls (generation, ms).

Why: with ~2,000 threads waiting for the GIL on one CPU, a full collection
(generation 2) in the client runs for tens of seconds: the collecting thread
holds the GIL, the others wake every 5 ms (the switch interval) to ask for it
and take the CPU, the server's with it. Whether a full collection starts
during the calls depends on the collector's counters when they begin:
`--bump N` runs N generation-1 collections first, which raises the
generation-2 count as a set-up may leave it; `--freeze` runs
``gc.collect()`` and ``gc.freeze()`` first (what the suite's S3 does). See
docs/benchmarks.md ("grpyc-threads").
"""

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
import types

from bench.run import _start_server, _stop, choose_cpus, run_client_child
from bench.runtime import ThreadRuntime
from bench.scenarios import run_callers
from bench.targets import TARGETS

_JOIN_CAP = 150.0  # seconds the callers get to finish after the stop: a stall ends
_CLIENT_TARGETS = {"grpyc": "grpyc-threads", "rpyc": "rpyc-threaded"}  # OS threads, no hub


def _prepared_calls(client, port, count):
    """`count` bound ``echo`` calls, each fetched and made once in a thread of its own."""
    echos = [None] * count

    def prepare(index, conn):
        echo = client.bound_echo(conn)
        echo()
        echos[index] = echo

    threads = []
    for index in range(count):
        conn = client.connect("127.0.0.1", port)
        thread = threading.Thread(target=prepare, args=(index, conn))
        thread.daemon = True
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(60)
    return [echo for echo in echos if echo is not None]


def _collections_during(run):
    """``(run(), [(generation, ms), ...])``: the collections while `run` ran."""
    log, began = [], [0.0]

    def note(phase, info):
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            log.append((info["generation"], round((time.perf_counter() - began[0]) * 1000, 1)))

    gc.callbacks.append(note)
    try:
        return run(), log
    finally:
        gc.callbacks.remove(note)


def _call_at_once(echos, seconds):
    """Each of `echos` called in a loop by a thread of its own for `seconds`
    (the suite's `run_callers`, on OS threads)."""
    ctx = types.SimpleNamespace(runtime=ThreadRuntime(), note=_note)
    rate, latencies, errors, hung = run_callers(ctx, echos, seconds, _JOIN_CAP)
    return {
        "calls/s": round(rate),
        "slowest call s": round(max(latencies, default=0.0), 2),
        "errors": errors,
        "callers still running": hung,
    }


def _note(text):
    print(text, file=sys.stderr)


def _child(argv):
    """The client child: ``--child CLIENT PORT THREADS SECONDS BUMP FREEZE CPU``."""
    client, port, threads, seconds, bump, freeze, cpu = argv
    from bench.proc import die_with_parent, pin_to_cpu, raise_nofile_limit

    die_with_parent()
    pin_to_cpu(int(cpu))
    raise_nofile_limit()
    bench_client = TARGETS[_CLIENT_TARGETS[client]].load().make_client()
    echos = _prepared_calls(bench_client, int(port), int(threads))
    if freeze == "1":
        gc.collect()
        gc.freeze()
    for _ in range(int(bump)):
        gc.collect(1)
    counts_before = gc.get_count()
    figures, collections = _collections_during(lambda: _call_at_once(echos, float(seconds)))
    figures.update({
        "client": client, "connections": len(echos),
        "gc counts before": list(counts_before),
        "full collections ms": [ms for generation, ms in collections if generation == 2],
        "younger collections": sum(1 for generation, _ in collections if generation < 2),
    })  # fmt: skip
    print(json.dumps(figures))
    sys.stdout.flush()
    os._exit(0)  # callers still stalled are daemon threads: do not wait for them


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.gcstall")
    parser.add_argument("--client", choices=["grpyc", "rpyc"], default="rpyc")
    parser.add_argument("--server", choices=["grpyc", "rpyc-threaded"], default="grpyc")
    parser.add_argument("--threads", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--bump", type=int, default=0, metavar="N")
    parser.add_argument("--freeze", action="store_true")
    parser.add_argument("--split-cpus", action="store_true")
    args = parser.parse_args(argv)
    server_cpu, client_cpu = choose_cpus(args.split_cpus)
    server = None
    with tempfile.TemporaryFile() as log:
        try:
            server, port = _start_server(args.server, server_cpu, log)
            child_argv = [args.client, str(port), str(args.threads), str(args.seconds)]
            child_argv += [str(args.bump), "1" if args.freeze else "0", str(client_cpu)]
            timeout = args.seconds + _JOIN_CAP + 180
            done = run_client_child("bench.gcstall", None, child_argv, timeout)
            print(done.stdout.strip() or done.stderr.strip()[-800:])
            return done.returncode
        finally:
            _stop(server)


if __name__ == "__main__":
    sys.exit(main())
