"""Where the time goes: one scenario of one target under py-spy, client and server.

    python -m bench.profile S1 [--target grpyc] [--duration 2] [--top 25] [--out DIR]

Starts the target's server child and client child exactly as the suite
does (pinned, same CPU unless ``--split-cpus``), attaches ``py-spy record``
to both for the client's whole run, and prints for each side the functions
with the most samples: *self* (the sampled frame itself) and *total* (the
frame anywhere on the stack), as percentages of that process's samples.
The raw collapsed stacks are kept in ``--out`` for flame graphs. Needs
py-spy (``pip install py-spy``) and the right to ptrace the children.
"""

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run import ROOT, _child_env, _start_server, _stop, choose_cpus


def _spy(pid, path, rate):
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    cmd += ["--nonblocking", "--output", str(path)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


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
    args = parser.parse_args(argv)
    count = args.count or {"S3": 2000, "S4": 16}.get(args.scenario, 0)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    server_cpu, client_cpu = choose_cpus(args.split_cpus)
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
            client = subprocess.Popen(cmd, cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE)
            spies = [
                _spy(server.pid, out / "server.txt", args.rate),
                _spy(client.pid, out / "client.txt", args.rate),
            ]
            result, _ = client.communicate(timeout=600)
        finally:
            for spy, interrupt in zip(spies, (True, False), strict=False):
                _stop_spy(spy, interrupt)
            _stop(client)
            _stop(server)
    print(f"{args.target} {args.scenario}: {result.decode().strip()[:600]}")
    for side in ("client", "server"):
        _print_side(side, out / f"{side}.txt", args.top)
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


if __name__ == "__main__":
    sys.exit(main())
