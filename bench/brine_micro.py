"""Micro-benchmark: grpyc.brine vs stock rpyc's brine on typical messages.

Each message is the brine part of a real RPyC 6 frame payload, the
``(seq, body)`` pair (PROTOCOL.md section 2), with the boxes a call and its
replies carry. Reports dumps/s and loads/s of each library; run by the
suite in a pinned child (``python -m bench --only B``).
"""

import time

# (label, id) of a remote object as boxed on the wire: (3, (name, id(cls), id(obj))).
_ID_PACK = ("bench.targets.service.BenchService", 140_234_567_890_123, 140_234_567_999_456)
_LABEL_VALUE, _LABEL_TUPLE, _LABEL_REMOTE_REF = 0, 1, 3
_HANDLE_GETATTR, _HANDLE_CALL = 4, 7


def messages():
    """``{name: value}`` of typical message bodies, small to large."""
    values = [*range(40), *(f"name{i}" for i in range(30)), *(i / 3 for i in range(30))]
    mixed = tuple((_LABEL_VALUE, value) for value in values)
    remote_self = (_LABEL_REMOTE_REF, _ID_PACK)
    return {
        "getattr request": (
            1234, (_HANDLE_GETATTR, (_LABEL_TUPLE, (remote_self, (_LABEL_VALUE, "echo"))))
        ),
        "call echo(42) request": (
            1235,
            (_HANDLE_CALL, (_LABEL_TUPLE, (
                remote_self, (_LABEL_TUPLE, ((_LABEL_VALUE, 42),)), (_LABEL_TUPLE, ())
            ))),
        ),
        "int reply": (1235, (_LABEL_VALUE, 42)),
        "netref reply": (1236, (_LABEL_REMOTE_REF, ("builtins.list", 94_203_117, 140_234_568))),
        "100-item tuple reply": (1237, (_LABEL_TUPLE, mixed)),
        "1 KiB str reply": (1238, (_LABEL_VALUE, "x" * 1024)),
        "64 KiB bytes reply": (1239, (_LABEL_VALUE, bytes(range(256)) * 256)),
    }  # fmt: skip


def _rate(func, arg, duration):
    count, batch = 0, 64
    began = time.perf_counter()
    while True:
        for _ in range(batch):
            func(arg)
        count += batch
        elapsed = time.perf_counter() - began
        if elapsed >= duration:
            return count / elapsed


def run(duration=0.2, reps=3):
    """``{"B.<message>.<lib>.<dump|load>": [ops/s per rep]}``."""
    from rpyc.core import brine as rpyc_brine

    from grpyc import brine as grpyc_brine

    libs = {"grpyc": grpyc_brine, "rpyc": rpyc_brine}
    out = {}
    for name, message in messages().items():
        for lib_name, lib in libs.items():
            data = lib.dump(message)
            if lib.load(data) != message:
                raise AssertionError(f"{lib_name} brine does not round-trip {name}")
            key = f"B.{name}.{lib_name}"
            out[f"{key}.dump"] = [_rate(lib.dump, message, duration) for _ in range(reps)]
            out[f"{key}.load"] = [_rate(lib.load, data, duration) for _ in range(reps)]
    return out
