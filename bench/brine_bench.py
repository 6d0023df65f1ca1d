"""grpyc.brine next to stock rpyc's brine on typical RPC messages.

Run from the repository root:
    PYTHONPATH=. .venv/bin/python bench/brine_bench.py [--rounds N] [--number N]

For each message prints the µs per dump, per load and per dump+load of stock
rpyc and grpyc, the ratio grpyc/rpyc (below 1 means grpyc is faster) and, as
the floor, marshal (CPython's C codec, which checks nothing). Every figure is
the best of N interleaved rounds, which keeps out the noise of other
processes on the machine.
"""

import argparse
import marshal
import time

from rpyc.core import brine as stock_brine

from grpyc import brine

ID = 140234567
MESSAGES = {
    "call (seq, CALLATTR, 2 args)": (
        17,
        (8, (2, ((4, ("mod.Cls", 140234, 140567)), (1, "echo"), (2, ((1, 42),)), (2, ())))),
    ),
    "call, 4 args + kwargs": (
        3000,
        (
            8,
            (
                2,
                (
                    (4, ("mod.Cls", 140234, 140567)),
                    (1, "method_name"),
                    (2, ((1, 42), (1, "some string argument"), (1, 3.5), (1, None))),
                    (2, ((2, ((1, "key"), (1, True))),)),
                ),
            ),
        ),
    ),
    "reply None": (17, (1, None)),
    "reply netref": (123456, (4, ("builtins.dict", ID, ID + 1))),
    "reply boxed 100-tuple": (99, (2, tuple((1, n * 1000) for n in range(100)))),
    "reply 1 KiB str": (5, (1, "é" * 512)),
    "reply 64 KiB bytes": (5, (1, bytes(range(256)) * 256)),
}


def best_times(funcs, arg, rounds, number):
    """Best µs per call of each function, rounds interleaved."""
    best = [float("inf")] * len(funcs)
    for _ in range(rounds):
        for index, func in enumerate(funcs):
            start = time.perf_counter()
            for _ in range(number):
                func(arg)
            best[index] = min(best[index], (time.perf_counter() - start) / number)
    return [seconds * 1e6 for seconds in best]


def round_trip(dump, load):
    return lambda value: load(dump(value))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (best wins)")
    parser.add_argument("--number", type=int, default=500, help="calls per round")
    args = parser.parse_args()

    header = f"{'message':30} {'op':10} {'rpyc µs':>9} {'grpyc µs':>9} {'ratio':>6} {'marshal':>8}"
    print(header)
    print("-" * len(header))
    for name, message in MESSAGES.items():
        encoded = stock_brine.dump(message)
        assert brine.dump(message) == encoded, name
        assert brine.load(encoded) == message, name
        floor_encoded = marshal.dumps(message)
        rows = [
            ("dump", message, stock_brine.dump, brine.dump, marshal.dumps, message),
            ("load", encoded, stock_brine.load, brine.load, marshal.loads, floor_encoded),
            (
                "dump+load",
                message,
                round_trip(stock_brine.dump, stock_brine.load),
                round_trip(brine.dump, brine.load),
                round_trip(marshal.dumps, marshal.loads),
                message,
            ),
        ]
        for op, arg, stock, ours, floor, floor_arg in rows:
            stock_us, ours_us = best_times([stock, ours], arg, args.rounds, args.number)
            (floor_us,) = best_times([floor], floor_arg, args.rounds, args.number)
            print(
                f"{name:30} {op:10} {stock_us:9.2f} {ours_us:9.2f} "
                f"{ours_us / stock_us:6.2f} {floor_us:8.2f}"
            )


if __name__ == "__main__":
    main()
