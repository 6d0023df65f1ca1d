"""The suite's brine figures: grpyc.brine vs stock rpyc's brine, marshal as the floor.

Reuses the messages and the interleaved best-of-rounds timer of
bench/brine_bench.py (typical ``(seq, body)`` pairs of RPyC 6 frames), and
turns them into the suite's figures: operations per second, one value per
repetition. Run by the suite in a pinned child (``python -m bench --only B``).
"""

import marshal

from bench.brine_bench import MESSAGES, best_times

LIBS = ("grpyc", "rpyc", "marshal")


def run(duration=0.1, reps=3):
    """``{"B.<message>.<lib>.<dump|load>": [ops/s per rep]}``; ``duration`` bounds a rep."""
    from rpyc.core import brine as rpyc_brine

    from grpyc import brine as grpyc_brine

    out = {}
    for name, message in MESSAGES.items():
        encoded = rpyc_brine.dump(message)
        if grpyc_brine.dump(message) != encoded or grpyc_brine.load(encoded) != message:
            raise AssertionError(f"grpyc brine disagrees with rpyc's on {name!r}")
        ops = {
            "dump": ([grpyc_brine.dump, rpyc_brine.dump, marshal.dumps], [message] * 3),
            "load": (
                [grpyc_brine.load, rpyc_brine.load, marshal.loads],
                [encoded, encoded, marshal.dumps(message)],
            ),
        }
        for op, (funcs, args) in ops.items():
            number = _calls_per_round(funcs[1], args[1], duration)
            for _ in range(reps):
                # Interleaved rounds (best wins) for the two brines, as brine_bench does.
                micros = best_times(funcs[:2], args[0], rounds=5, number=number)
                micros += best_times(funcs[2:], args[2], rounds=5, number=number)
                for lib, us in zip(LIBS, micros, strict=True):
                    out.setdefault(f"B.{name}.{lib}.{op}", []).append(1e6 / us)
    return out


def _calls_per_round(func, arg, duration):
    """Calls per round so that one repetition (5 rounds x 3 codecs) takes about ``duration``."""
    (micros,) = best_times([func], arg, rounds=1, number=20)
    return max(20, int(duration * 1e6 / 15 / max(micros, 0.05)))
