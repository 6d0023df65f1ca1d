"""Client child: ``python -m bench.client_main TARGET SCENARIO --port P --server-pid PID ...``.

Runs one scenario against the server of TARGET and prints one JSON line:
``{"metrics": {id: [values]}, "notes": [...], "error": str | null}``.
SCENARIO ``B`` is the brine micro-benchmark and needs no server.

SCENARIO ``serve`` keeps the child for many runs: it reads one JSON command
per line on stdin (``{"scenario": "S1", "reps": 1}``) and answers each with
one JSON line as above, until stdin closes. The suite uses it to run the
repetitions of S1, S2, S5 and S6 in rounds across all targets.
"""

import sys


def _early_patch():
    # patch_all() must run before anything else imports socket or threading.
    from bench.targets import TARGETS

    target = TARGETS[sys.argv[1]]
    if target.patched:
        from gevent import monkey

        monkey.patch_all()
    return target


def _parse_args():
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.client_main")
    parser.add_argument("target")
    parser.add_argument("scenario")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=0.5)
    parser.add_argument("--count", type=int, default=0, help="S3 connections, S4 MiB")
    parser.add_argument("--quick", action="store_true")
    return parser.parse_args()


def main():
    target = _early_patch()
    import json
    import os

    from bench.proc import die_with_parent, pin_to_cpu, raise_nofile_limit, start_cprofile

    args = _parse_args()
    die_with_parent()
    pin_to_cpu(args.cpu)
    raise_nofile_limit()
    dump_profile = start_cprofile("client", threads=target.threads)
    if args.scenario == "serve":
        for line in sys.stdin:
            command = json.loads(line)
            args.scenario, args.reps = command["scenario"], command["reps"]
            _answer(_guarded_run(target, args))
    else:
        _answer(_guarded_run(target, args))
    if dump_profile:
        dump_profile()
    # Stuck rpyc threads or greenlets must not keep the child alive.
    os._exit(0)


def _answer(result):
    import json

    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def _guarded_run(target, args):
    import traceback

    result = {"metrics": {}, "notes": [], "error": None}
    try:
        result["metrics"], result["notes"] = _run(target, args)
    except BaseException as exc:  # noqa: BLE001 - reported to the suite, which goes on
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-2000:]
    return result


def _run(target, args):
    if args.scenario == "B":
        from bench.brine_micro import run

        return run(args.duration / 5, min(args.reps, 3)), []
    from bench.runtime import GeventRuntime, ThreadRuntime
    from bench.scenarios import SCENARIOS, Context

    ctx = Context(
        client=target.load().make_client(),
        runtime=ThreadRuntime() if target.threads else GeventRuntime(),
        host="127.0.0.1",
        port=args.port,
        server_pid=args.server_pid,
        reps=args.reps,
        duration=args.duration,
        quick=args.quick,
    )
    scenario = SCENARIOS[args.scenario]
    metrics = scenario(ctx, args.count) if args.scenario in ("S3", "S4") else scenario(ctx)
    return metrics, ctx.notes + uncompiled_note(target)


def uncompiled_note(target):
    """A note when a grpyc target meant to be compiled ran modules from their source.

    `grpyc._accel` runs a module from source when it was edited since the
    build: a figure measured so is the pure-Python one, and says nothing
    about the compiled build.
    """
    if target.module != "grpyc_target" or dict(target.env).get("GRPYC_PURE_PYTHON"):
        return []
    from grpyc import _accel

    compiled = _accel.compiled_modules()
    imported = [name for name in _accel.ACCELERATED if f"grpyc.{name}" in sys.modules]
    from_source = [name for name in imported if name not in compiled]
    if not from_source:
        return []
    return [
        "ran from source, not compiled (edited since the build, or never built): "
        + ", ".join(from_source)
    ]


if __name__ == "__main__":
    main()
