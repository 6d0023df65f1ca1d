"""CPU time per call, client and server, user and system: ``python -m bench.cpu``.

    python -m bench.cpu [--targets grpyc,floor,rpyc-threaded] [--op bound|root|callback|attr]
    python -m bench.cpu --targets grpyc/rpyc-threaded,rpyc-threaded/grpyc
    python -m bench.cpu --baseline ../old --targets grpyc-base,grpyc --op blocking

A target ``CLIENT/SERVER`` pairs one target's client with another's server
(grpyc's client against stock's threaded server, and so on).

For each target: a server child (as the suite starts it), and a client in a
child of its own that calls ``op`` in a loop for ``--seconds`` and reports
how much CPU each side spent per call (the client from ``os.times()``, the
server from /proc/PID/stat). With both pinned to one CPU, client + server
CPU is the whole round trip, so the difference to the floor is exactly
what each side's Python adds per call.
"""

import argparse
import json
import os
import sys
import tempfile
import time

from bench.proc import cpu_times
from bench.run import _start_server, _stop, choose_cpus, run_client_child, use_baseline
from bench.targets import OPERATIONS


def measure(target_name, op, seconds, port, server_pid):
    """Run in the client child: the JSON figures of one target."""
    from bench.targets import TARGETS

    client = TARGETS[target_name].load().make_client()
    conn = client.connect("127.0.0.1", port)
    call = getattr(client, OPERATIONS[op])(conn)
    for _ in range(200):  # warm-up
        call()
    count = 0
    server_before, client_before = cpu_times(server_pid), os.times()
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        call()
        count += 1
    wall = time.perf_counter() - began
    client_after, server_after = os.times(), cpu_times(server_pid)

    def per_call(before, after):
        return round((after - before) / count * 1e6, 1)

    return {
        "target": target_name,
        "op": op,
        "calls/s": round(count / wall),
        "wall µs": round(wall / count * 1e6, 1),
        "client user µs": per_call(client_before.user, client_after.user),
        "client sys µs": per_call(client_before.system, client_after.system),
        "server user µs": per_call(server_before[0], server_after[0]),
        "server sys µs": per_call(server_before[1], server_after[1]),
        # Which grpyc the client ran (a baseline target's: the baseline's).
        "client grpyc": _grpyc_dir(),
    }


def _grpyc_dir():
    grpyc = sys.modules.get("grpyc")
    return None if grpyc is None else os.path.dirname(grpyc.__file__)


def _child(argv):
    """The client child: ``--child TARGET OP SECONDS PORT SERVER_PID CPU``."""
    target_name, op, seconds, port, server_pid, cpu = argv
    from bench.targets import TARGETS

    if TARGETS[target_name].patched:
        from gevent import monkey

        monkey.patch_all()
    from bench.proc import die_with_parent, pin_to_cpu

    die_with_parent()
    pin_to_cpu(int(cpu))
    if not TARGETS[target_name].threads:
        # As the suite's client child does (bench.runtime): this thread runs
        # gevent, so grpyc picks its cooperative runtime, not the one for plain
        # threads (figures before 2026-12-04 measured that one for grpyc).
        import gevent

        gevent.get_hub()
    figures = measure(target_name, op, float(seconds), int(port), int(server_pid))
    print(json.dumps(figures, ensure_ascii=False))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.cpu")
    parser.add_argument("--targets", default="floor,grpyc,rpyc-threaded")
    parser.add_argument("--op", choices=sorted(OPERATIONS), default="bound")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--split-cpus", action="store_true")
    parser.add_argument(
        "--baseline", default=None, help="a checkout whose grpyc the grpyc-base targets run"
    )
    args = parser.parse_args(argv)
    if args.baseline:
        use_baseline(args.baseline)
    server_cpu, client_cpu = choose_cpus(args.split_cpus)
    for spec in args.targets.split(","):
        target_name, _, server_name = spec.partition("/")
        server = None
        with tempfile.TemporaryFile() as log:
            try:
                server, port = _start_server(server_name or target_name, server_cpu, log)
                # The target's own tree and environment (a baseline's grpyc,
                # grpyc-pure's GRPYC_PURE_PYTHON), as the server gets them.
                child_argv = [target_name, args.op, str(args.seconds), str(port)]
                child_argv += [str(server.pid), str(client_cpu)]
                done = run_client_child("bench.cpu", target_name, child_argv, args.seconds + 60)
                if server_name:
                    print(f"server {server_name}: ", end="")
                print(done.stdout.strip() or done.stderr.strip()[-500:])
            finally:
                _stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
