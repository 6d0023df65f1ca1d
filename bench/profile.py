"""Where the time goes: one scenario of one target, profiled in client and server.

    python -m bench.profile S1 [--target grpyc] [--cprofile | --native] [--split-cpus] [--out DIR]

Starts the target's server child and client child exactly as the suite
does (pinned, same CPU unless ``--split-cpus``) and profiles both for the
client's whole run, then prints for each side the functions that cost most.

- default, py-spy: ``py-spy record`` attached to both; *self* (the sampled
  frame itself) and *total* (the frame anywhere on the stack) as
  percentages of that process's samples. Needs py-spy (in the
  ``bench`` extra: ``pip install -e '.[bench]'``) and the right to ptrace
  the children. On one CPU a sample in ``send`` often means "preempted
  by the peer it just woke": use ``--split-cpus`` to see each side's own
  CPU.
- ``--native``: py-spy with native frames (slower sampling: it stops the
  process per sample), then also the busy samples (not waiting in epoll or
  a lock) by the module of their innermost Python frame: where each side's
  CPU goes, C time included (a greenlet switch counts for the Python code
  that switched). Use it with ``--split-cpus``.
- ``--cprofile``: both children run under cProfile (``BENCH_CPROFILE``);
  the top functions by own time, with call counts per scenario call.

The raw data (collapsed stacks or .pstats) is kept in ``--out``.
"""

import argparse
import collections
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run import _child_cwd, _child_env, _start_server, _stop, choose_cpus


def _spy(pid, path, rate, native=False):
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    # --native needs py-spy to stop the process for each sample.
    cmd += ["--native"] if native else ["--nonblocking"]
    cmd += ["--output", str(path)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# A sample whose stack holds one of these waits: the process was not busy.
_IDLE_MARKS = ("epoll_wait", "PyThread_acquire_lock", "pthread_cond", "_find_and_load")


def summarize_modules(path, top):
    """``(busy samples, [(%, module)])``: busy samples by the module of their
    innermost Python frame (native frames count for the Python code that
    called them); samples waiting in epoll or a lock, and imports, left out."""
    by_module = collections.Counter()
    busy = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or any(mark in stack for mark in _IDLE_MARKS):
            continue
        frames = [f for f in stack.split(";") if ".py:" in f]
        if not frames:
            continue
        busy += int(count)
        # package/module: gevent/hub.py and grpyc/hub.py are different modules.
        where = frames[-1].rpartition(" (")[2].split(":", 1)[0]
        by_module["/".join(where.split("/")[-2:])] += int(count)
    return busy, [(100.0 * n / max(busy, 1), name) for name, n in by_module.most_common(top)]


def _frame_name(frame):
    # py-spy raw frames read "function (path/to/module.py:line)": keep module:function.
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{module}:{name}" if module else name


def summarize(path, top):
    """``(samples, [(self %, name)], [(total %, name)])`` of a py-spy raw file."""
    own, total = collections.Counter(), collections.Counter()
    samples = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";") if not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        weight = int(count)
        samples += weight
        own[frames[-1]] += weight
        for name in set(frames):
            total[name] += weight
    if not samples:
        return 0, [], []

    def ranked(counter):
        return [(100.0 * n / samples, name) for name, n in counter.most_common(top)]

    return samples, ranked(own), ranked(total)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("scenario", choices=["S1", "S2", "S3", "S4", "S5", "S6"])
    parser.add_argument("--target", default="grpyc")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per timed rep")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--count", type=int, default=0, help="S3 connections / S4 MiB")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--split-cpus", action="store_true")
    parser.add_argument("--out", default=None, help="keep the raw stacks here")
    parser.add_argument("--cprofile", action="store_true", help="cProfile instead of py-spy")
    parser.add_argument(
        "--native",
        action="store_true",
        help="py-spy with native frames (C, Cython) and busy CPU by module",
    )
    args = parser.parse_args(argv)
    count = args.count or {"S3": 2000, "S4": 16}.get(args.scenario, 0)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    server_cpu, client_cpu = choose_cpus(args.split_cpus)
    if args.cprofile:
        os.environ["BENCH_CPROFILE"] = str(out)
    server = client = None
    spies = []
    with tempfile.TemporaryFile() as log:
        try:
            server, port = _start_server(args.target, server_cpu, log)
            cmd = [
                sys.executable, "-m", "bench.client_main", args.target, args.scenario,
                "--port", str(port), "--server-pid", str(server.pid), "--cpu", str(client_cpu),
                "--reps", str(args.reps), "--duration", str(args.duration),
                "--count", str(count),
            ]  # fmt: skip
            client = subprocess.Popen(
                cmd,
                cwd=_child_cwd(args.target),
                env=_child_env(args.target),
                stdout=subprocess.PIPE,
            )
            if not args.cprofile:
                spies = [
                    _spy(server.pid, out / "server.txt", args.rate, args.native),
                    _spy(client.pid, out / "client.txt", args.rate, args.native),
                ]
            result, _ = client.communicate(timeout=600)
        finally:
            for spy, interrupt in zip(spies, (True, False), strict=False):
                _stop_spy(spy, interrupt)
            _stop(client)
            _stop(server)
    print(f"{args.target} {args.scenario}: {result.decode().strip()[:600]}")
    for side in ("client", "server"):
        if args.cprofile:
            _print_pstats(side, out / f"{side}.pstats", args.top)
        else:
            _print_side(side, out / f"{side}.txt", args.top)
            if args.native:
                _print_modules(side, out / f"{side}.txt", args.top)
    print(f"\nraw stacks in {out}")
    return 0


def _stop_spy(spy, interrupt):
    """Let py-spy write its file: it does when the traced process exits, or on SIGINT."""
    if interrupt:
        spy.send_signal(signal.SIGINT)
    try:
        spy.wait(10)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def _print_side(side, path, top):
    if not os.path.exists(path):
        print(f"\n{side}: no samples ({path} missing)")
        return
    samples, own, total = summarize(path, top)
    print(f"\n== {side}: {samples} samples (% of them) ==")
    print(f"{'self %':>7}  {'function':<50} {'total %':>7}  function")
    for (own_pct, own_name), (total_pct, total_name) in zip(own, total, strict=False):
        print(f"{own_pct:7.1f}  {own_name[:50]:<50} {total_pct:7.1f}  {total_name}")


def _print_modules(side, path, top):
    if not os.path.exists(path):
        return
    busy, rows = summarize_modules(path, top)
    print(f"\n== {side}: {busy} busy samples by module (% of them) ==")
    for pct, module in rows:
        print(f"{pct:7.1f}  {module}")


def _print_pstats(side, path, top):
    if not os.path.exists(path):
        print(f"\n{side}: no profile ({path} missing)")
        return
    stats = pstats.Stats(str(path))
    total = stats.total_tt or 1.0
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    print(f"\n== {side}: {total:.2f} s profiled (own time, % of it) ==")
    print(f"{'own %':>6} {'own s':>7} {'cum s':>7} {'calls':>9}  function")
    for (filename, line, name), (_cc, calls, own, cum, _callers) in rows:
        where = f"{Path(filename).name}:{line}" if line else filename
        print(f"{100 * own / total:6.1f} {own:7.3f} {cum:7.3f} {calls:9d}  {where}:{name}")


if __name__ == "__main__":
    sys.exit(main())
