"""The suite's parent process: start, pin, time and stop every child, then report.

Every server and client runs in a child process pinned with
``sched_setaffinity``. S1, S2, S5 and S6 run in rounds: in each round every
target in turn gets a fresh server child and client child (`Worker`) for
one repetition, so that whatever else the machine does meanwhile weighs on
all targets alike, and the median is over several pairs of processes (on
a VM the same code runs up to ~20 % faster or slower from one pair to the
next, for a pair's whole life). S3 and S4 get
fresh children for every repetition (S3: the server's memory from a clean
start; S4: the client's peak memory). Every child is stopped in a
``finally`` (terminate, then kill after a timeout) and also dies with this
process (PR_SET_PDEATHSIG).
"""

import argparse
import atexit
import contextlib
import json
import os
import platform
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.targets import BASELINE_TARGETS, OPT_IN_TARGETS, TARGETS

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_ORDER = ["S1", "S2", "S3", "S4", "S5", "S6", "B"]

# Seconds a client child may take before it is killed (S3 scales with size).
_CLIENT_TIMEOUT = {"S4": 120, "B": 60}
# Scenarios run in rounds by `Worker`s, and the seconds one repetition may take.
_ROUND_TIMEOUT = {"S1": 30, "S2": 30, "S5": 60, "S6": 60, "S6depth": 60}
_SERVER_START_TIMEOUT = 20.0
LARGE_S3 = 2000  # S3 counts above this run once, and by default only on:
LARGE_S3_TARGETS = ("grpyc", "floor")
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
    parser.add_argument(
        "--baseline",
        default=None,
        help="a checkout (e.g. a git worktree of an older commit) whose grpyc package the "
        "targets grpyc-base and grpyc-base-patched run, for before/after ratios in one run",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="directory for results.{md,json,png} (default: docs/bench for a full run; "
        "a new temporary directory with --only, --targets, --baseline or --quick)",
    )
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
        "--s4-reps",
        type=int,
        default=None,
        help="fresh pairs of processes per S4 payload size (default 5; --quick: 1)",
    )
    parser.add_argument(
        "--s3-10k-all",
        action="store_true",
        help="run S3 counts above 2,000 on every target, not just grpyc and the floor "
        "(adds minutes)",
    )
    parser.add_argument(
        "--doc",
        default=None,
        help="markdown file whose results block to rewrite "
        "(default: docs/benchmarks.md when --out is docs/bench, else none)",
    )
    args = parser.parse_args(argv)
    args.scenarios = _pick(args.only, SCENARIO_ORDER, "scenario")
    if args.baseline:
        use_baseline(args.baseline)
    known = [name for name in TARGETS if args.baseline or name not in BASELINE_TARGETS]
    default = [name for name in known if name not in OPT_IN_TARGETS]
    args.target_names = _pick(args.targets, known, "target", default)
    args.reps = args.reps or (2 if args.quick else 5)
    args.duration = args.duration or (0.1 if args.quick else 0.5)
    s3_counts = args.s3 or ("200" if args.quick else "2000,10000")
    args.s3_counts = [int(n) for n in s3_counts.split(",")]
    args.s3_reps = args.s3_reps or (1 if args.quick else 3)
    args.s4_reps = args.s4_reps or (1 if args.quick else 5)
    if args.out is None:
        # Only a full run replaces the committed results: a partial one must
        # not overwrite them (a --baseline run did, once).
        partial = args.only or args.targets or args.baseline or args.quick
        args.out = tempfile.mkdtemp(prefix="grpyc-bench-") if partial else "docs/bench"
    out = Path(args.out)
    args.out = out if out.is_absolute() else ROOT / out
    if args.doc is None and args.out == ROOT / "docs" / "bench":
        args.doc = str(ROOT / "docs" / "benchmarks.md")
    return args


def _pick(text, known, what, default=None):
    if not text:
        return list(known if default is None else default)
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in known]
    if unknown:
        raise SystemExit(f"unknown {what}(s) {unknown}; known: {', '.join(known)}")
    return [item for item in known if item in chosen]


# ---------------------------------------------------------------- children
_BASELINE_VARIABLE = "GRPYC_BENCH_BASELINE"


def _child_env(target=None):
    env = dict(os.environ)
    paths = [str(ROOT), env.get("PYTHONPATH")]
    if target in BASELINE_TARGETS:
        paths.insert(0, _baseline_shim(env[_BASELINE_VARIABLE]))
    if target is not None:
        env.update(TARGETS[target].env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env.pop("GEVENT_LOOP", None)
    return env


def _child_cwd(target=None):
    """Where a child runs: ``python -m`` puts its working directory first on
    ``sys.path``, so a baseline child runs in the shim (whose ``grpyc`` is the
    baseline's), not in ROOT (whose ``grpyc`` would win)."""
    if target in BASELINE_TARGETS:
        return _baseline_shim(os.environ[_BASELINE_VARIABLE])
    return ROOT


def use_baseline(checkout):
    """Make the grpyc-base targets run the grpyc package of `checkout`."""
    baseline = Path(checkout).resolve()
    if not (baseline / "grpyc" / "__init__.py").is_file():
        raise SystemExit(f"--baseline {baseline}: no grpyc package there")
    os.environ[_BASELINE_VARIABLE] = str(baseline)


_shims: dict[str, str] = {}


def _baseline_shim(baseline):
    """A directory holding only a link to the baseline's grpyc package.

    On the path before ROOT it makes ``import grpyc`` load the baseline while
    ``import bench`` still loads this checkout's harness. Made once per run
    and removed at its end: a directory named by process id outlived its run,
    and a later run with the same id found a link to an old baseline there.
    """
    shim = _shims.get(baseline)
    if shim is None:
        shim = _shims[baseline] = tempfile.mkdtemp(prefix="grpyc-bench-baseline-")
        (Path(shim) / "grpyc").symlink_to(Path(baseline) / "grpyc", target_is_directory=True)
        atexit.register(shutil.rmtree, shim, True)  # the link, never what it points to
    return shim


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


def run_client_child(module, target, argv, timeout):
    """``python -m MODULE --child ARGV...`` as `target`'s client (its tree and
    environment, as `_start_server` gives its server; None: this checkout's)."""
    return subprocess.run(
        [sys.executable, "-m", module, "--child", *argv], cwd=_child_cwd(target),
        env=_child_env(target), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _start_server(target, cpu, log):
    cmd = [sys.executable, "-m", "bench.server_main", target, "--cpu", str(cpu)]
    proc = subprocess.Popen(
        cmd, cwd=_child_cwd(target), env=_child_env(target), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=log,
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
            cmd, cwd=_child_cwd(target), env=_child_env(target), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=log,
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


class Worker:
    """One target's server child and a client child that runs repetitions on command."""

    def __init__(self, target, cpus, args):
        self.target = target
        self.server = self.client = None
        # Closed in close(): the logs live as long as the worker.
        self._server_log = tempfile.TemporaryFile()  # noqa: SIM115
        self._client_log = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.server, port = _start_server(target, cpus[0], self._server_log)
            cmd = [
                sys.executable, "-m", "bench.client_main", target, "serve",
                "--port", str(port), "--server-pid", str(self.server.pid),
                "--cpu", str(cpus[1]), "--duration", str(args.duration),
            ] + (["--quick"] if args.quick else [])  # fmt: skip
            self.client = subprocess.Popen(
                cmd, cwd=_child_cwd(target), env=_child_env(target), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._client_log,
            )  # fmt: skip
        except BaseException:
            self.close()
            raise

    def run(self, scenario, timeout):
        """One repetition of ``scenario``: the client's JSON answer (or an error)."""
        command = json.dumps({"scenario": scenario, "reps": 1}) + "\n"
        try:
            self.client.stdin.write(command.encode())
            self.client.stdin.flush()
        except OSError as exc:
            return {"error": f"client gone: {exc}", "stderr": _tail(self._client_log)}
        ready, _, _ = select.select([self.client.stdout], [], [], timeout)
        if not ready:
            return {"error": f"no answer within {timeout} s", "stderr": _tail(self._client_log)}
        line = self.client.stdout.readline()
        if not line:
            return {"error": "client exited", "stderr": _tail(self._client_log)}
        result = json.loads(line)
        if self.server.poll() is not None:
            result.setdefault("notes", []).append(
                f"server exited with {self.server.returncode}: {_tail(self._server_log)[-300:]}"
            )
        return result

    def close(self):
        if self.client is not None and self.client.poll() is None:
            with contextlib.suppress(OSError):
                self.client.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.client.wait(_STOP_TIMEOUT)
        _stop(self.client)
        _stop(self.server)
        self._server_log.close()
        self._client_log.close()


def _run_rounds(scenario, workers, cpus, args, sink, log):
    """The repetitions of ``scenario`` in rounds: each round runs every target once."""
    # S5 as many rounds as the others (a round of all six targets takes ~20 s):
    # with three, one pair of processes in a slow minute moved its median by
    # 10 % (S5 reads 1.11x stock in a full run, 1.22x and 1.23x in reruns).
    rounds = 1 if scenario == "S6depth" else args.reps
    for round_index in range(rounds):
        for target in args.target_names:
            step = time.monotonic()
            worker = workers.get(target)
            try:
                if worker is None:
                    worker = workers[target] = Worker(target, cpus, args)
                outcome = worker.run(scenario, _ROUND_TIMEOUT[scenario])
            except Exception as exc:  # noqa: BLE001 - a failed target must not stop the suite
                outcome = {"error": f"{type(exc).__name__}: {exc}"}
            if outcome.get("error") and target in workers:
                workers.pop(target).close()  # a wedged worker is replaced next round
            log(f"{scenario:<10} {target:<14} round {round_index + 1}: "
                f"{time.monotonic() - step:5.1f} s")  # fmt: skip
            sink(target, scenario, outcome)
        # The next round runs in new processes: a pair's speed is luck.
        for worker in workers.values():
            worker.close()
        workers.clear()


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

    def sink(target, label, outcome):
        for metric, values in (outcome.get("metrics") or {}).items():
            results[target].setdefault(metric, []).extend(values)
        _collect_problems(target, label, outcome, notes, errors)

    load_before = _loadavg()
    began = time.monotonic()
    workers = {}
    try:
        for scenario in args.scenarios:
            if scenario == "B":
                step = time.monotonic()
                outcome = run_one("grpyc", "B", cpus, args)
                log(f"B          brine          rep 1: {time.monotonic() - step:5.1f} s")
                brine = outcome.get("metrics")
                _collect_problems("brine", "B", outcome, notes, errors)
            elif scenario in _ROUND_TIMEOUT:
                _run_rounds(scenario, workers, cpus, args, sink, log)
                if scenario == "S6":
                    _run_rounds("S6depth", workers, cpus, args, sink, log)
            else:
                _run_fresh(scenario, cpus, args, sink, log)
    finally:
        for worker in workers.values():
            worker.close()
    wall = time.monotonic() - began
    return {
        "meta": {**machine_info(args, cpus, wall), "loadavg": [load_before, _loadavg()]},
        "targets": args.target_names,
        "results": results,
        "brine": brine,
        "notes": notes,
        "errors": errors,
    }


def _run_fresh(scenario, cpus, args, sink, log):
    """S3 and S4: fresh server and client children for every repetition.

    The targets take turns, one repetition each (as `_run_rounds` does): a
    slow minute of the machine then lands on every target's figures alike,
    not on all the repetitions of one (a ratio such as patched/unpatched
    would carry it).
    """
    for count, rep, target in _interleaved(scenario, args):
        label = scenario + {"S3": f" n={count}", "S4": f" {count}MiB"}.get(scenario, "")
        step = time.monotonic()
        outcome = run_one(target, scenario, cpus, args, count)
        log(f"{label:<10} {target:<14} rep {rep + 1}: {time.monotonic() - step:5.1f} s")
        sink(target, label, outcome)


def _interleaved(scenario, args):
    """``(count, rep, target)`` in turns: each repetition runs for every target that has it."""
    plan = {target: _repetitions(scenario, target, args) for target in args.target_names}
    steps = []
    for target in args.target_names:
        steps.extend(step for step in plan[target] if step not in steps)
    return [
        (count, rep, target)
        for count, rep in steps
        for target in args.target_names
        if (count, rep) in plan[target]
    ]


def _loadavg():
    """The 1-minute load average: other work on the machine skews every figure."""
    with open("/proc/loadavg") as loadavg:
        return float(loadavg.read().split()[0])


def _repetitions(scenario, target, args):
    """``(count, rep)`` of each pair of children: S3 per count and rep, S4 per size and rep.

    S4 runs ``--s4-reps`` pairs per size: its rate depends on the TCP
    connection (on this kind of VM the same code gave 658-1,123 MiB/s from
    one pair of processes to the next, with no page faults, and 1,910-2,350
    from one connection to the next within a pair), so one pair is luck;
    `scenarios.s4_bulk` also opens a connection per timed repetition.

    S3 above 2,000 connections runs once, and only on grpyc and the floor
    unless ``--s3-10k-all``: a 10,000-connection run takes 10-60 s per
    target, and the suite must finish within 6 minutes on 2 CPUs.
    """
    if scenario == "S3":
        return [
            (count, rep)
            for count in args.s3_counts
            if count <= LARGE_S3 or args.s3_10k_all or target in LARGE_S3_TARGETS
            for rep in range(args.s3_reps if count <= LARGE_S3 else 1)
        ]
    return [(size, rep) for size in (1, 16) for rep in range(args.s4_reps)]


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
        "command": " ".join(["python -m bench", *map(shlex.quote, args.argv)]),
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
        "s4_reps": args.s4_reps,
        "s3_large_on_all": args.s3_10k_all,
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
