"""Smoke test of the benchmark suite (bench/): a tiny real run, the floor, the report."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import gevent
import gevent.socket
import pytest

from bench import floor, report
from bench.targets.floor_target import FloorClient

ROOT = Path(__file__).resolve().parent.parent


def _quick_run(tmp_path, reps, only, targets, timeout):
    """`python -m bench --quick` into `tmp_path`: its results.json, once it exited with 0."""
    cmd = [
        sys.executable, "-m", "bench", "--quick", "--reps", str(reps),
        "--only", only, "--targets", targets, "--out", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / "results.json").read_text())


def test_quick_run_measures_grpyc_rpyc_and_the_floor(tmp_path):
    run = _quick_run(tmp_path, 1, "S1,S5,B", "grpyc,rpyc-threaded,floor", timeout=45)
    assert run["errors"] == []
    assert run["targets"] == ["grpyc", "rpyc-threaded", "floor"]
    for target in run["targets"]:
        figures = run["results"][target]
        assert sorted(figures) == ["S1.bound_echo", "S1.root_echo", "S5.attr", "S5.iter"]
        assert all(len(values) == 1 and values[0] > 0 for values in figures.values())
    assert run["brine"]["B.reply None.grpyc.load"][0] > 0
    assert run["brine"]["B.reply 64 KiB bytes.rpyc.dump"][0] > 0
    assert run["brine"]["B.reply netref.marshal.load"][0] > 0
    markdown = (tmp_path / "results.md").read_text()
    assert "| S1 bound `echo(42)`, sequential | calls/s ↑ |" in markdown
    assert "| S5 list iteration ≥ 1.2x rpyc-threaded |" in markdown
    assert "python -m bench --quick --reps 1 --only S1,S5,B" in markdown


def test_grpyc_in_plain_threads_runs_when_named_beside_stocks_threads(tmp_path):
    """`grpyc-threads` (grpyc's client without gevent, callers in OS threads) is
    not in a default run; named, it runs and is compared with rpyc-threaded."""
    from bench.run import parse_args

    assert "grpyc-threads" not in parse_args(["--quick"]).target_names
    run = _quick_run(tmp_path, 1, "S1,S2", "grpyc-threads,rpyc-threaded", timeout=60)
    assert run["errors"] == []
    figures = run["results"]["grpyc-threads"]
    assert figures["S1.bound_echo"][0] > 0 and figures["S2.calls"][0] > 0, figures
    assert figures["S2.errors"] == [0], figures
    assert "threads / rpyc-threaded" in (tmp_path / "results.md").read_text()


def test_s5_runs_as_many_rounds_as_reps(tmp_path):
    """S5's median is over `--reps` pairs of processes, as S1's (it was at most 3)."""
    figures = _quick_run(tmp_path, 4, "S5", "floor", timeout=60)["results"]["floor"]
    assert len(figures["S5.attr"]) == 4 and len(figures["S5.iter"]) == 4, figures


def test_floor_echoes_calls_back_and_chains():
    server = floor.make_server()
    server.start()
    client = FloorClient()
    conn = client.connect("127.0.0.1", server.server_port)
    try:
        assert bytes(client.bound_echo(conn)()) == b"echo(42)................"
        big = bytes(range(256)) * 1024  # 256 KiB: the large-body read path
        assert bytes(client.echo_bytes(conn)(big)) == big
        assert bytes(client.callback(conn)()) == b""
        assert client.chain(conn, 7) == 7
        assert client.iterate_list(conn, 10, deadline=float("inf")) == 10
    finally:
        conn.close()
        server.stop(timeout=1)
    assert conn.reader.join(timeout=2) is None
    assert conn.reader.ready()


def test_floor_pending_call_fails_with_eoferror_when_the_peer_goes():
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    conn = floor.connect("127.0.0.1", listener.getsockname()[1])
    peer, _ = listener.accept()

    def call():
        try:
            return conn.call(floor.OP_ECHO, b"x")
        except EOFError as exc:
            return exc

    waiter = gevent.spawn(call)
    assert peer.recv(100).endswith(b"x\n")  # the request arrived; no answer comes
    peer.close()
    listener.close()
    assert repr(waiter.get(timeout=2)) == "EOFError('floor connection closed')"
    assert conn.closed
    with pytest.raises(EOFError, match="floor connection closed"):
        conn.call(floor.OP_ECHO, b"x")


def _fake_run(grpyc_bound, floor_bound, patched_bound):
    def figures(bound, p99, held, rss, depth):
        return {
            "S1.bound_echo": [bound * 0.9, bound, bound * 1.1],
            "S2.p99": [p99],
            "S3.10000.held": [held],
            "S3.10000.rss": [rss],
            "S6.max_depth": [depth],
        }

    return {
        "meta": {"date": "today", "command": "python -m bench", "wall_seconds": 1.0,
                 "nproc": 2, "cpu_model": "cpu", "kernel": "k", "python": "3.11",
                 "gevent": "g", "greenlet": "gl", "rpyc": "6.0.2", "pinning": "same CPU",
                 "reps": 3, "duration": 0.5, "s3_counts": [10000], "s3_reps": 1},
        "targets": ["grpyc", "grpyc-patched", "rpyc-threaded", "floor"],
        "results": {
            "grpyc": figures(grpyc_bound, 4.0, 10000, 18.0, 2000),
            "grpyc-patched": figures(patched_bound, 4.0, 10000, 18.0, 2000),
            "rpyc-threaded": figures(500, 30.0, 10000, 40.0, 80),
            "floor": figures(floor_bound, 2.0, 10000, 10.0, 2000),
        },
        "brine": None,
        "notes": [],
        "errors": [],
    }  # fmt: skip


def test_report_checks_targets_against_the_same_runs_floor():
    checks = {what: (figures, met) for what, figures, met in
              report.check_targets(_fake_run(950, 1000, 940))}  # fmt: skip
    assert checks["S1 bound `echo(42)` ≥ 1.0x floor"] == (
        "950 vs 1,000 floor: 0.95\N{MULTIPLICATION SIGN}",
        False,
    )
    assert checks["S1 bound `echo(42)` ≥ 1.3x rpyc-threaded"] == (
        "950 vs 500 rpyc-threaded: 1.90\N{MULTIPLICATION SIGN}",
        True,
    )
    # A time: the floor's 2 ms over grpyc's 4 ms is 0.5x, just met.
    assert checks["S2 p99 ≤ 2x the floor's"] == (
        "4 vs 2 floor: 0.50\N{MULTIPLICATION SIGN}",
        True,
    )
    assert checks["S3 10,000 connections held"] == ("10,000 count", True)
    assert checks["S3 at 2,000 connections"] == ("not run (see --s3)", None)
    assert checks["S6 recursion depth ≥ 1,000 works"] == ("2,000 depth", True)
    assert checks["S1 `conn.root.echo(42)` ≥ 1.5x rpyc-threaded"] == (
        "— vs — rpyc-threaded: —",
        None,
    )
    assert checks["patch_all: no figure worse than 0.9x unpatched grpyc"] == (
        "all 4 figures ≥ 0.9x",
        True,
    )


def test_report_flags_misses_and_slow_patched_figures():
    checks = {what: (figures, met) for what, figures, met in
              report.check_targets(_fake_run(500, 1000, 400))}  # fmt: skip
    assert checks["S1 bound `echo(42)` ≥ 1.0x floor"][1] is False
    figures, met = checks["patch_all: no figure worse than 0.9x unpatched grpyc"]
    assert met is False
    assert figures == "1 of 4 below: S1 bound `echo(42)`, sequential 0.80\N{MULTIPLICATION SIGN}"


def test_report_table_gives_median_range_and_ratios():
    table = report.render_table(_fake_run(950, 1000, 940)).splitlines()
    assert table[0] == (
        "| Figure | Unit | grpyc | grpyc-patched | rpyc-threaded | floor "
        "| grpyc / rpyc-threaded | grpyc / floor | patched / grpyc |"
    )
    expected = (
        "| S1 bound `echo(42)`, sequential | calls/s ↑ | 950 (855-1,045) | 940 (846-1,034) "
        "| 500 (450-550) | 1,000 (900-1,100) | 1.90x | 0.95x | 0.99x |"
    )
    # The table uses an en dash in ranges and a multiplication sign in ratios.
    expected = expected.replace("-", "\N{EN DASH}").replace("x |", "\N{MULTIPLICATION SIGN} |")
    assert table[2] == expected


def test_report_rewrites_only_the_results_block(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{report.DOC_BEGIN}\nold\n{report.DOC_END}\noutro\n")
    report.write(_fake_run(950, 1000, 940), tmp_path / "out", doc=doc)
    text = doc.read_text()
    assert text.startswith(f"intro\n{report.DOC_BEGIN}\nRun of today: `python -m bench`")
    assert text.endswith(f"{report.DOC_END}\noutro\n")
    assert "old" not in text
    assert (tmp_path / "out" / "results.md").read_text().startswith("## Benchmark results")


def test_baseline_targets_import_the_baseline_grpyc(tmp_path, monkeypatch):
    # `python -m` puts the working directory first on sys.path: a baseline
    # child must not pick up this checkout's grpyc from there.
    from bench import run

    (tmp_path / "grpyc").mkdir()
    (tmp_path / "grpyc" / "__init__.py").write_text("MARK = 'baseline'\n")
    monkeypatch.setenv(run._BASELINE_VARIABLE, str(tmp_path))
    probe = "import grpyc; print(getattr(grpyc, 'MARK', 'this checkout'))"
    seen = {}
    for target in ("grpyc-base", "grpyc"):
        done = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=run._child_cwd(target),
            env=run._child_env(target),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        seen[target] = done.stdout.strip()
    assert seen == {"grpyc-base": "baseline", "grpyc": "this checkout"}


def test_profile_counts_busy_samples_by_module(tmp_path):
    from bench.profile import summarize_modules

    raw = tmp_path / "server.txt"
    raw.write_text(
        "process 1;thread 2;run (/x/gevent/hub.py:647);epoll_wait (libc.so.6) 50\n"
        "process 1;thread 2;_lead (/x/grpyc/hub.py:292);send (libc.so.6) 30\n"
        "process 1;thread 2;_lead (/x/grpyc/hub.py:292);decode (/x/grpyc/_brine_decode.py:9) 10\n"
        "process 1;thread 3;acquire (threading.py:1);PyThread_acquire_lock_timed (libc) 40\n"
        "process 1;thread 2;run (/x/gevent/hub.py:647);ev_run (corecext.so) 10\n"
    )
    busy, rows = summarize_modules(raw, 10)
    assert busy == 50  # the epoll wait and the idle thread are left out
    assert rows == [
        (60.0, "grpyc/hub.py"),
        (20.0, "grpyc/_brine_decode.py"),
        (20.0, "gevent/hub.py"),
    ]


def test_instruction_count_program_runs_every_op(tmp_path):
    """What `bench.instructions` runs under valgrind works as plain Python."""
    from bench.instructions import _PROGRAM

    program = tmp_path / "program.py"
    program.write_text(_PROGRAM)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for op in ("bound", "attr", "callback", "root"):
        done = subprocess.run(
            [sys.executable, str(program), op, "5"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, (op, done.stderr[-2000:])


def test_footprint_programs_run_against_both_targets(tmp_path):
    """What `bench.footprint` runs (one side under valgrind) works as plain
    Python, for grpyc and for stock rpyc: the server serves one connection
    and exits when the client is done."""
    from bench.footprint import programs

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = {"cwd": tmp_path, "env": env, "stderr": subprocess.PIPE, "text": True}
    for target, op in (
        ("grpyc", "callback"),
        ("grpyc", "root"),
        ("rpyc", "attr"),
        ("rpyc", "root"),
        ("floor", "bound"),
    ):
        server_program, client_program = programs(target)
        (tmp_path / "server.py").write_text(server_program)
        (tmp_path / "client.py").write_text(client_program)
        port_file = str(tmp_path / f"port.{target}.{op}")
        with subprocess.Popen([sys.executable, "server.py", target, port_file], **run) as server:
            try:
                done = subprocess.run(
                    [sys.executable, "client.py", target, port_file, op, "5"], timeout=60, **run
                )
                assert done.returncode == 0, (target, done.stderr[-2000:])
                assert server.wait(timeout=30) == 0, (target, server.stderr.read()[-2000:])
            finally:
                if server.poll() is None:
                    server.kill()


# Rows of `cg_annotate --auto=no --threshold=0` as valgrind 3.19+ prints them:
# nine counts (a dot for none, most with a percentage), then file:function.
_CG_ROWS = [
    "1,000 (10.00%)  40 ( 1.00%)  .  300 ( 3.00%)  20 ( 2.00%)  .  100 ( 1.00%)  5 ( 0.50%)  .  "
    "/tmp/python-build/Python-3.11.7/Python/ceval.c:_PyEval_EvalFrameDefault",
    "500 ( 5.00%)  30 ( 0.75%)  1  100 ( 1.00%)  10 ( 1.00%)  .  50 ( 0.50%)  .  .  ???:ev_run",
    "200 ( 2.00%)  7 ( 0.20%)  .  80 ( 0.80%)  3 ( 0.30%)  .  10 ( 0.10%)  .  .  "
    "/work/main/build/cython/grpyc/framing.c:__pyx_f_5grpyc_7framing_next_frame",
    "60 ( 0.60%)  2 ( 0.05%)  .  20 ( 0.20%)  1 ( 0.10%)  .  5 ( 0.05%)  .  .  "
    "/tmp/build/greenlet/src/greenlet/TGreenlet.cpp:greenlet::Greenlet::g_switchstack()",
]
_CG_ANNOTATE = "\n".join(
    [
        "Ir  I1mr  ILmr  Dr  D1mr  DLmr  Dw  D1mw  DLmw  file:function",
        "-" * 80,
        *_CG_ROWS,
    ]
)


def test_footprint_parts_sums_cg_annotate_rows_by_part(tmp_path, monkeypatch):
    """`bench.footprint --parts` adds up cg_annotate's per-function rows by where
    the code lives (dots are zeros; percentages and C++ signatures are skipped)."""
    from bench import footprint

    def fake_run(command, **_kwargs):
        assert command[0] == "cg_annotate", command
        return subprocess.CompletedProcess(command, 0, stdout=_CG_ANNOTATE, stderr="")

    monkeypatch.setattr(footprint.subprocess, "run", fake_run)
    parts = footprint._parts(str(tmp_path / "cachegrind.out"))
    assert parts["CPython"]["Ir"] == 1000 and parts["CPython"]["I1mr"] == 40
    assert parts["gevent, libev, other code without debug info"]["ILmr"] == 1
    assert parts["grpyc compiled framing"]["D1mr"] == 3
    assert parts["greenlet"]["Ir"] == 60
    assert sum(part["Ir"] for part in parts.values()) == 1760


def test_footprint_functions_lists_the_busiest_functions_per_call(monkeypatch, capsys):
    """`bench.footprint --functions N` prints the N functions that ran the most
    instructions per call: the difference of the two runs' rows over `_MORE`."""
    from bench import footprint

    few = {"ceval.c:eval": {"Ir": 1000}, "???:ev_run": {"Ir": 500}, "a.c:f": {"Ir": 10}}
    more = {"ceval.c:eval": {"Ir": 1000 + 7 * footprint._MORE},
            "???:ev_run": {"Ir": 500 + 9 * footprint._MORE},
            "a.c:f": {"Ir": 10 + footprint._MORE}}  # fmt: skip
    runs = iter([({"instructions": 0, "I1 misses": 0, "D1 misses": 0}, few),
                 ({"instructions": 0, "I1 misses": 0, "D1 misses": 0}, more)])  # fmt: skip
    monkeypatch.setattr(footprint, "_count", lambda args, calls, scratch: next(runs))
    monkeypatch.setattr(footprint.shutil, "which", lambda name: "/usr/bin/valgrind")
    footprint.main(["--functions", "2"])
    listed = capsys.readouterr().out.splitlines()[2:]
    assert len(listed) == 2
    assert listed[0].split()[0] == "9" and listed[0].endswith("???:ev_run")
    assert listed[1].split()[0] == "7" and listed[1].endswith("ceval.c:eval")


def test_collapse_runs_both_servers_and_reports_each_side():
    """`python -m bench.collapse` runs the server as it is and with each collapsed
    request path, and the client's direct loop (each answers calls: the client
    checks an echo), and reports the time and each side's CPU per call."""
    from bench.collapse import CLIENT_MODES, MODES, run_pair

    runs = [(mode, "layered") for mode in MODES]
    runs += [("layered", client_mode) for client_mode in CLIENT_MODES[1:]]
    for mode, client_mode in runs:
        figures = run_pair(mode, count=300, client_mode=client_mode)
        assert (figures["server"], figures["client"]) == (mode, client_mode), figures
        assert figures["µs per call"] > 0, figures
        assert figures["client user µs"] >= 0 and figures["server user µs"] >= 0, figures


def test_waitcost_measures_each_way_of_waiting():
    """`python -m bench.waitcost` runs a ping-pong with each way of waiting on both
    sides (and grpyc's against a blocking peer) and reports its time, CPU and
    context switches per round trip."""
    from bench.waitcost import STYLES, run_pair

    for server_style, client_style in [(s, s) for s in STYLES] + [("blocking", "hub")]:
        figures = run_pair(server_style, client_style, count=200)
        pair = (server_style, client_style, figures)
        assert figures["µs per round trip"] > 0, pair
        # One message each way wakes the other process at least once per round trip.
        assert figures["context switches"] >= 1.0, pair
        for side in ("client user", "client sys", "server user", "server sys"):
            assert figures[side] >= 0, pair


def test_waitcost_forks_the_server_when_asked():
    """`--fork` runs each pair again with the server forked from the client
    child: the same figures, from a server that shares the client's pages."""
    from bench.waitcost import run_forked

    for server_style, client_style in [("blocking", "blocking"), ("hub", "hub")]:
        figures = run_forked(server_style, client_style, count=200)
        pair = (server_style, client_style, figures)
        assert figures["µs per round trip"] > 0, pair
        # Counted from /proc of both processes, the forked server's included.
        assert figures["context switches"] >= 1.0, pair


def test_cpu_pairs_one_targets_client_with_anothers_server():
    """`python -m bench.cpu --targets CLIENT/SERVER` starts the server of the
    second target and runs the first one's client against it."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.cpu", "--targets", "grpyc/rpyc-threaded", "--seconds", "0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("server rpyc-threaded: "), line
    assert '"target": "grpyc"' in line
    assert '"calls/s"' in line


def test_each_baseline_gets_a_shim_of_its_own(tmp_path):
    """The shim that puts a baseline's grpyc first on the path is made per run
    and per baseline: one named by process id was found again, linking an
    old baseline, by a later run that got the same id."""
    from bench import run

    first, second = tmp_path / "first", tmp_path / "second"
    for checkout in (first, second):
        (checkout / "grpyc").mkdir(parents=True)
    shims = [run._baseline_shim(str(checkout)) for checkout in (first, second, first)]
    assert shims[0] == shims[2] != shims[1]
    linked = [(Path(shim) / "grpyc").resolve() for shim in shims[:2]]
    assert linked == [first / "grpyc", second / "grpyc"]


def test_cpu_runs_a_baseline_targets_client_from_the_baseline(tmp_path):
    """`bench.cpu --targets grpyc-base` times the baseline's client, not this
    checkout's, against the baseline's server (its figures name the client's grpyc)."""
    (tmp_path / "grpyc").symlink_to(ROOT / "grpyc", target_is_directory=True)
    done = subprocess.run(
        [sys.executable, "-m", "bench.cpu", "--baseline", str(tmp_path),
         "--targets", "grpyc-base,grpyc", "--seconds", "0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figures = {}
    for line in done.stdout.strip().splitlines():
        row = json.loads(line)
        figures[row["target"]] = row["client grpyc"]
    assert "grpyc-bench-baseline" in figures["grpyc-base"], figures
    assert figures["grpyc"] == str(ROOT / "grpyc"), figures


def test_cpu_attr_op_reads_an_attribute_for_each_target():
    """`python -m bench.cpu --op attr` measures one remote attribute read per
    call (the floor: one round trip) and reports a figure for each target."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.cpu", "--targets", "grpyc,rpyc-threaded,floor",
         "--op", "attr", "--seconds", "0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if '"op": "attr"' in line]
    assert len(lines) == 3, done.stdout
    for line in lines:
        figures = json.loads(line[line.index("{") :])
        assert figures["calls/s"] > 0, line


@pytest.mark.parametrize(
    ("op", "targets"),
    [("blocking", "grpyc,rpyc-threaded"), ("random8k", "grpyc,rpyc-threaded,floor")],
)
def test_cpu_runs_the_blocking_and_random_payload_ops(op, targets):
    """`--op blocking` calls a handler that yields once (gevent's sleep in
    grpyc's server, time.sleep(0) in stock's threads); `--op random8k` echoes
    8 KiB of random bytes. Each target gives a figure."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.cpu", "--targets", targets, "--op", op, "--seconds", "0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [row["target"] for row in rows] == targets.split(","), done.stdout
    assert all(row["op"] == op and row["calls/s"] > 0 for row in rows), rows


def test_fresh_scenarios_take_turns_across_targets():
    """S3 and S4 run one repetition per target in turn (a slow minute lands on
    every target alike); each target still gets all of its repetitions, in order,
    and the 10,000-connection S3 only on the targets that run it."""
    from bench.run import _interleaved, _repetitions, parse_args

    args = parse_args(["--only", "S3,S4", "--targets", "grpyc,rpyc-threaded,floor"])
    for scenario in ("S3", "S4"):
        steps = _interleaved(scenario, args)
        for target in args.target_names:
            mine = [(count, rep) for count, rep, name in steps if name == target]
            assert mine == _repetitions(scenario, target, args), (scenario, target)
        first_rep = [name for count, rep, name in steps[: len(args.target_names)]]
        assert first_rep == args.target_names, (scenario, steps)
    large = [name for count, _rep, name in _interleaved("S3", args) if count > 2000]
    assert large and "rpyc-threaded" not in large


def test_s3_times_its_calls_with_the_set_ups_objects_collected_and_frozen(monkeypatch):
    """S3's timed calls start with no garbage of the set-up left and its objects
    frozen, for every target: which full collection fell into the timed phase
    depended on the counters a set-up left, and one with ~2,000 threads waiting
    for the GIL stalls for tens of seconds (docs/benchmarks.md)."""
    import gc
    import types

    from bench import scenarios
    from bench.runtime import ThreadRuntime

    seen = {}

    def timed_calls(ctx, calls, duration, join_cap):
        seen["frozen"] = gc.get_freeze_count()
        seen["garbage"] = gc.collect()
        return 1.0, [], 0, 0

    def make_garbage(conn):
        cycle = [conn]
        cycle.append(cycle)  # freed only by a collection
        return lambda: None

    ctx = types.SimpleNamespace(
        runtime=ThreadRuntime(), server_pid=os.getpid(), duration=0.0, note=print,
        connect=object, client=types.SimpleNamespace(bound_echo=make_garbage),
    )  # fmt: skip
    monkeypatch.setattr(scenarios, "run_callers", timed_calls)
    try:
        figures = scenarios.s3_many_connections(ctx, 50)
    finally:
        gc.unfreeze()
    assert figures["S3.50.held"] == [50]
    assert seen["frozen"] > 0
    assert seen["garbage"] == 0


def test_s3_times_until_every_first_call_is_answered(monkeypatch):
    """S3's time runs until each connection's first call is answered, not
    only through the loop of connects (whose share of first calls is the
    scheduler's choice): first calls that each take 50 ms, from threads that
    connect at once, give a time of at least 50 ms."""
    import time
    import types

    from bench import scenarios
    from bench.runtime import ThreadRuntime

    def slow_first_call(conn):
        return lambda: time.sleep(0.05)  # the first call's work, not a wait for anything

    ctx = types.SimpleNamespace(
        runtime=ThreadRuntime(), server_pid=os.getpid(), duration=0.0, note=print,
        connect=object, client=types.SimpleNamespace(bound_echo=slow_first_call),
    )  # fmt: skip
    monkeypatch.setattr(scenarios, "run_callers", lambda *args: (1.0, [], 0, 0))
    monkeypatch.setattr(scenarios, "_settle_collector", lambda: None)
    figures = scenarios.s3_many_connections(ctx, 20)
    assert figures["S3.20.held"] == [20]
    assert figures["S3.20.ready"][0] >= 0.05
    assert "S3.20.connect" not in figures


def test_s4_times_each_repetition_on_a_connection_of_its_own():
    """S4's rate is set per TCP connection on loopback (docs/benchmarks.md):
    each timed repetition opens its own connection, echoes once untimed and
    at least once timed over it, and closes it; the peak memory is measured once."""
    import itertools
    import types

    from bench import scenarios
    from bench.runtime import ThreadRuntime

    events = []
    numbers = itertools.count(1)

    def connect():
        conn = next(numbers)
        events.append(("connect", conn))
        return conn

    def echo_bytes(conn):
        def echo(payload):
            events.append(("echo", conn))
            return payload

        return echo

    client = types.SimpleNamespace(
        echo_bytes=echo_bytes, close=lambda conn: events.append(("close", conn))
    )
    ctx = types.SimpleNamespace(
        client=client, connect=connect, reps=3, duration=0.0, note=print, runtime=ThreadRuntime(),
    )  # fmt: skip
    figures = scenarios.s4_bulk(ctx, 1)
    assert len(figures["S4.1MiB.rate"]) == 3 and len(figures["S4.1MiB.peak"]) == 1
    # One block per connection: connect, an untimed and a timed echo (duration 0), close.
    expected = [
        event
        for conn in (1, 2, 3)
        for event in (("connect", conn), ("echo", conn), ("echo", conn), ("close", conn))
    ]
    assert events == expected


def test_gcstall_reports_calls_and_the_clients_collections():
    """`python -m bench.gcstall` runs both clients against a grpyc server from
    plain threads and logs the collections during the calls (a small run: the
    stall itself needs ~2,000 threads, docs/benchmarks.md)."""
    for client in ("grpyc", "rpyc"):
        cmd = [sys.executable, "-m", "bench.gcstall", "--client", client, "--threads", "8",
               "--seconds", "0.3", "--bump", "2", "--freeze"]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        assert figures["client"] == client and figures["connections"] == 8
        assert figures["calls/s"] > 0 and figures["errors"] == 0
        assert figures["gc counts before"][2] == 2  # frozen (count 0), then two bumps
        assert figures["callers still running"] == 0


def test_gccount_counts_what_each_call_leaves_to_the_collector():
    """`python -m bench.gccount` reports the generation-0 count's rise and the
    cyclic garbage per call; a call that makes a cycle each time shows both."""
    from bench import gccount

    def leaves_a_cycle():
        cycle = []
        cycle.append(cycle)

    rise, garbage = gccount.per_call(leaves_a_cycle, 200)
    assert garbage == 1.0 and rise >= 1.0
    rise, garbage = gccount.per_call(lambda: None, 200)
    assert garbage == 0.0 and rise < 0.1

    cmd = [sys.executable, "-m", "bench.gccount", "--runtime", "threads", "--calls", "50"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["cyclic garbage per call"] < 0.5  # a grpyc call makes no cycle


def test_opcode_counts_are_per_call_and_name_the_functions():
    """`python -m bench.opcodes` counts each side's Python opcodes per call from
    two sessions' difference; grpyc's server runs its request path (more than
    the floor's echo, which has no RPC logic), stock rpyc runs its brine."""
    from bench import opcodes

    def count(target):
        args = argparse.Namespace(op="bound", target=target)
        return opcodes.per_call(args)

    grpyc, floor_counts, stock = count("grpyc"), count("floor"), count("rpyc")
    for figures in (grpyc, floor_counts, stock):
        for side in ("server", "client"):
            total, rows = figures[side]
            assert total > 50, (side, figures)
            assert sum(n for n, _name in rows) <= total * 1.02 + 1, (side, rows)
    grpyc_server = {name: n for n, name in grpyc["server"][1]}
    assert grpyc_server.get("_handlers.py:_handle_call", 0) >= 1, grpyc["server"]
    assert grpyc["server"][0] > floor_counts["server"][0]
    assert any(name.startswith("brine.py:") for _n, name in stock["server"][1]), stock


def test_a_compiled_target_running_modules_from_source_is_noted(monkeypatch):
    import grpyc.boxing  # noqa: F401 - imported, as in every client child
    from bench.client_main import uncompiled_note
    from bench.targets import TARGETS
    from grpyc import _accel

    monkeypatch.setattr(_accel, "compiled_modules", list)  # as if every one were stale
    (note,) = uncompiled_note(TARGETS["grpyc"])
    assert "ran from source" in note and "boxing" in note
    assert uncompiled_note(TARGETS["grpyc-pure"]) == []  # pure Python on purpose
    assert uncompiled_note(TARGETS["floor"]) == []
    everything = list(_accel.ACCELERATED)
    monkeypatch.setattr(_accel, "compiled_modules", lambda: everything)
    assert uncompiled_note(TARGETS["grpyc"]) == []


@pytest.mark.parametrize("server", ["grpyc", "floor", "rpyc"])
def test_gcpause_counts_what_each_server_holds_per_connection(server):
    """`python -m bench.gcpause` holds its connections until both sides have
    counted: a connection costs each server and client tracked objects, and
    the counts are per connection."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gcpause", "--server", server, "--connections", "1000"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert found["server"] == server and found["connections"] == 1000
    assert len(found["seconds per thousand"]) == 1
    assert 10 < found["server tracked objects per connection"] < 200
    assert 10 < found["client tracked objects per connection"] < 200
    for millis, tracked in found["server full collections [ms, tracked objects]"]:
        assert millis >= 0 and tracked > 0
