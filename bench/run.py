"""The suite's parent process: start, pin, time and stop every child, then report.

For each scenario and each target it starts a server child (which prints
its port) and a client child (which prints one JSON line), pinned to CPUs
with ``sched_setaffinity``; S3 gets fresh children for every repetition so
that each one measures the server's memory from a clean start. Every child
is stopped in a ``finally`` (terminate, then kill after a timeout) and also
dies with this process (PR_SET_PDEATHSIG).
"""

import argparse
import json
import os
import platform
import select
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.targets import TARGETS

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_ORDER = ["S1", "S2", "S3", "S4", "S5", "S6", "B"]

# Seconds a client child may take before it is killed (S3 scales with size).
_CLIENT_TIMEOUT = {"S1": 60, "S2": 60, "S4": 120, "S5": 150, "S6": 150, "B": 60}
_SERVER_START_TIMEOUT = 20.0
LARGE_S3 = 2000  # S3 counts above this run once, and on rpyc only when asked
_STOP_TIMEOUT = 5.0


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="grpyc vs stock rpyc 6.0.2 vs a raw-socket floor, on 127.0.0.1.",
    )
    parser.add_argument("--quick", action="store_true", help="few short repetitions (smoke run)")
    parser.add_argument(
        "--split-cpus",
        action="store_true",
        help="pin client and server to different CPUs (default: the same CPU)",
    )
    parser.add_argument("--only", default="", help="scenarios to run, e.g. S1,S2,B")
    parser.add_argument("--targets", default="", help=f"targets to run (of {','.join(TARGETS)})")
    parser.add_argument("--out", default="docs/bench", help="directory for results.{md,json,png}")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per figure")
    parser.add_argument("--duration", type=float, default=None, help="seconds per timed rep")
    parser.add_argument(
        "--s3",
        default=None,
        help="S3 connection counts (default 2000,10000; --quick: 200)",
    )
    parser.add_argument(
        "--s3-reps",
        type=int,
        default=None,
        help="fresh-process repetitions per S3 count up to 2,000 (larger counts: 1)",
    )
    parser.add_argument(
        "--s3-10k-all",
        action="store_true",
        help="run S3 counts above 2,000 on the stock rpyc targets too (adds minutes)",
    )
    parser.add_argument(
        "--doc",
        default=None,
        help="markdown file whose results block to rewrite "
        "(default: docs/benchmarks.md when --out is docs/bench, else none)",
    )
    args = parser.parse_args(argv)
    args.scenarios = _pick(args.only, SCENARIO_ORDER, "scenario")
    args.target_names = _pick(args.targets, list(TARGETS), "target")
    args.reps = args.reps or (2 if args.quick else 5)
    args.duration = args.duration or (0.1 if args.quick else 0.5)
    s3_counts = args.s3 or ("200" if args.quick else "2000,10000")
    args.s3_counts = [int(n) for n in s3_counts.split(",")]
    args.s3_reps = args.s3_reps or (1 if args.quick else 3)
    out = Path(args.out)
    args.out = out if out.is_absolute() else ROOT / out
    if args.doc is None and args.out == ROOT / "docs" / "bench":
        args.doc = str(ROOT / "docs" / "benchmarks.md")
    return args


def _pick(text, known, what):
    if not text:
        return list(known)
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in known]
    if unknown:
        raise SystemExit(f"unknown {what}(s) {unknown}; known: {', '.join(known)}")
    return [item for item in known if item in chosen]


# ---------------------------------------------------------------- children
def _child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("GEVENT_LOOP", None)
    return env


def _stop(proc):
    """Terminate, then kill after a timeout; never raises."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(_STOP_TIMEOUT)


def _tail(log):
    log.seek(0)
    return log.read().decode(errors="replace")[-1500:]


def _start_server(target, cpu, log):
    cmd = [sys.executable, "-m", "bench.server_main", target, "--cpu", str(cpu)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=log,
    )  # fmt: skip
    ready, _, _ = select.select([proc.stdout], [], [], _SERVER_START_TIMEOUT)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("PORT "):
        _stop(proc)
        raise RuntimeError(f"server {target} did not report its port: {line!r} {_tail(log)}")
    return proc, int(line.split()[1])


def _run_client(target, scenario, port, server_pid, cpu, args, count=0):
    cmd = [
        sys.executable, "-m", "bench.client_main", target, scenario,
        "--port", str(port), "--server-pid", str(server_pid), "--cpu", str(cpu),
        "--reps", str(args.reps), "--duration", str(args.duration), "--count", str(count),
    ]  # fmt: skip
    if args.quick:
        cmd.append("--quick")
    timeout = _CLIENT_TIMEOUT.get(scenario) or 90 + count * 0.04  # S3: by connections
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=_child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=log,
        )  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"client killed after {timeout:.0f} s", "stderr": _tail(log)}
        finally:
            _stop(proc)
        lines = out.decode(errors="replace").strip().splitlines()
        if proc.returncode or not lines:
            return {"error": f"client exited {proc.returncode}", "stderr": _tail(log)}
        return json.loads(lines[-1])


def run_one(target, scenario, cpus, args, count=0):
    """One server child and one client child; both stopped before returning."""
    server_cpu, client_cpu = cpus
    if scenario == "B":
        return _run_client(target, scenario, 0, 0, client_cpu, args)
    server = None
    with tempfile.TemporaryFile() as log:
        try:
            server, port = _start_server(target, server_cpu, log)
            result = _run_client(target, scenario, port, server.pid, client_cpu, args, count)
            if server.poll() is not None:
                result.setdefault("notes", []).append(
                    f"server exited with {server.returncode}: {_tail(log)[-300:]}"
                )
            return result
        except Exception as exc:  # noqa: BLE001 - a failed target must not stop the suite
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            _stop(server)


# ---------------------------------------------------------------- the run
def choose_cpus(split):
    allowed = sorted(os.sched_getaffinity(0))
    if split and len(allowed) > 1:
        return allowed[0], allowed[1]
    return allowed[0], allowed[0]


def run_suite(args, log=print):
    cpus = choose_cpus(args.split_cpus)
    results = {name: {} for name in args.target_names}
    notes, errors = [], []
    brine = None
    load_before = _loadavg()
    began = time.monotonic()
    for scenario in args.scenarios:
        if scenario == "B":
            step = time.monotonic()
            outcome = run_one("grpyc", "B", cpus, args)
            log(f"B          brine          rep 1: {time.monotonic() - step:5.1f} s")
            brine = outcome.get("metrics")
            _collect_problems("brine", "B", outcome, notes, errors)
            continue
        for target in args.target_names:
            for count, rep in _repetitions(scenario, target, args):
                label = scenario + {"S3": f" n={count}", "S4": f" {count}MiB"}.get(scenario, "")
                step = time.monotonic()
                outcome = run_one(target, scenario, cpus, args, count)
                took = time.monotonic() - step
                log(f"{label:<10} {target:<14} rep {rep + 1}: {took:5.1f} s")
                for metric, values in (outcome.get("metrics") or {}).items():
                    results[target].setdefault(metric, []).extend(values)
                _collect_problems(target, label, outcome, notes, errors)
    wall = time.monotonic() - began
    return {
        "meta": {**machine_info(args, cpus, wall), "loadavg": [load_before, _loadavg()]},
        "targets": args.target_names,
        "results": results,
        "brine": brine,
        "notes": notes,
        "errors": errors,
    }


def _loadavg():
    """The 1-minute load average: other work on the machine skews every figure."""
    with open("/proc/loadavg") as loadavg:
        return float(loadavg.read().split()[0])


def _repetitions(scenario, target, args):
    """``(count, rep)`` of each pair of children: S3 per size and rep, S4 per size.

    S3 above 2,000 connections runs once, and on stock rpyc only with
    ``--s3-10k-all``: 10,000 rpyc threads take about a minute per run, which
    does not fit the suite's time budget.
    """
    if scenario == "S3":
        return [
            (count, rep)
            for count in args.s3_counts
            if count <= LARGE_S3 or args.s3_10k_all or not target.startswith("rpyc")
            for rep in range(args.s3_reps if count <= LARGE_S3 else 1)
        ]
    if scenario == "S4":
        return [(1, 0), (16, 0)]
    return [(0, 0)]


def _collect_problems(target, label, outcome, notes, errors):
    for note in outcome.get("notes") or []:
        notes.append(f"{target} {label}: {note}")
    if outcome.get("error"):
        detail = (outcome.get("stderr") or outcome.get("traceback") or "").strip()
        last = detail.splitlines()[-1] if detail else ""
        errors.append(f"{target} {label}: {outcome['error']} {last}".strip())


def machine_info(args, cpus, wall):
    import gevent
    import greenlet

    try:
        import rpyc

        rpyc_version = rpyc.__version__
    except ImportError:
        rpyc_version = None
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench " + shlex.join(args.argv),
        "wall_seconds": round(wall, 1),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gevent": gevent.__version__,
        "greenlet": greenlet.__version__,
        "rpyc": rpyc_version,
        "pinning": (
            f"server on CPU {cpus[0]}, client on CPU {cpus[1]}"
            + (" (same CPU)" if cpus[0] == cpus[1] else " (split)")
        ),
        "reps": args.reps,
        "duration": args.duration,
        "s3_counts": args.s3_counts,
        "s3_reps": args.s3_reps,
        "s3_large_on_rpyc": args.s3_10k_all,
        "quick": args.quick,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.argv = argv
    from bench import report

    run = run_suite(args, log=lambda text: print(text, flush=True))
    paths = report.write(run, args.out, doc=args.doc)
    print(report.render_table(run))
    print(report.render_brine(run))
    print(f"\nwall time {run['meta']['wall_seconds']} s; wrote {', '.join(map(str, paths))}")
    return 1 if run["errors"] else 0
