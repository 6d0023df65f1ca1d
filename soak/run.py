"""Soak test: hours of real traffic in minutes, watching the server's memory.

Starts a grpyc server in a subprocess, then runs reconnecting clients against
it for ``--minutes``: calls with values, netrefs both ways, callbacks, nested
callbacks, async calls, and some connections dropped without a goodbye. It
samples the server's RSS and its count of exported objects as it goes and
prints them at the end; both must be flat (the figures after warm-up match
the last ones within a small margin), or the script exits with status 1.

Run (from the repository root)::

    .venv/bin/python -m soak.run --minutes 10

Only loopback traffic; it stops by itself after ``--minutes``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import subprocess
import sys
import time
from typing import Any

import gevent
from gevent.fileobject import FileObjectThread

import grpyc
from grpyc.server import Server
from grpyc.service import Service

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------- server
class Record:
    """A server-side object the clients hold by reference."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.log: list[int] = []

    def exposed_add(self, amount: int) -> int:
        self.value += amount
        self.log.append(amount)
        return self.value

    def exposed_get(self) -> int:
        return self.value

    def exposed_history(self) -> list[int]:
        return self.log


class SoakService(Service):
    """What the soak clients call."""

    server: Server | None = None

    def on_connect(self, conn: Any) -> None:
        self.conn = conn

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_make_record(self, value: int) -> Record:
        return Record(value)

    def exposed_sum_records(self, records: Any) -> int:
        return sum(record.value for record in records)

    def exposed_call(self, callback: Any, *args: Any) -> Any:
        return callback(*args)

    def exposed_bounce(self, callback: Any, depth: int) -> int:
        """Call the client, which calls back here, `depth` levels deep."""
        if depth <= 0:
            return 0
        return callback(depth - 1) + 1

    def exposed_use_client_object(self, obj: Any) -> int:
        return len(obj) + obj[0]

    def exposed_stats(self) -> tuple[int, int, int, int]:
        """(connections, exported objects, greenlets, RSS KiB), leaving out the caller."""
        clients = list(self.server.clients) if self.server is not None else []
        exported = sum(len(conn._local_objects) for conn in clients if conn is not self.conn)
        greenlets = sum(
            1 for obj in gc.get_objects() if isinstance(obj, gevent.Greenlet) and not obj.dead
        )
        return len(clients), exported, greenlets, _status_kib(os.getpid(), "VmRSS")


def serve() -> None:
    """The server process: print the port, serve until stdin closes."""
    server = Server(SoakService, hostname="127.0.0.1", port=0)
    SoakService.server = server
    server.listen()
    sys.stdout.write(f"{server.port}\n")
    sys.stdout.flush()
    FileObjectThread(sys.stdin.buffer, "rb").read()
    server.close()


# ------------------------------------------------------------------ clients
class ClientSide(Service):
    """The soak client's own service: the server calls back into it."""

    def exposed_square(self, value: int) -> int:
        return value * value

    def exposed_bounce(self, depth: int) -> int:
        return self.root_bounce(self.exposed_bounce, depth)

    def on_connect(self, conn: Any) -> None:
        self.root_bounce = lambda callback, depth: conn.root.bounce(callback, depth)


class Counters:
    def __init__(self) -> None:
        self.calls = 0
        self.connections = 0
        self.dropped = 0
        self.errors: list[str] = []


def _one_session(port: int, rng: random.Random, counters: Counters, calls: int) -> None:
    conn = grpyc.connect("127.0.0.1", port, service=ClientSide, config={"sync_request_timeout": 30})
    counters.connections += 1
    try:
        _calls(conn, rng, counters, calls)
    finally:
        if rng.random() < 0.2:
            # Gone without a CLOSE: the server must clean up on its own.
            conn._channel.close()
            counters.dropped += 1
        else:
            conn.close()


def _calls(conn: Any, rng: random.Random, counters: Counters, calls: int) -> None:
    root = conn.root
    records = []
    for _ in range(calls):
        kind = rng.randrange(7)
        if kind == 0:
            value = (rng.random(), "x" * rng.randrange(100), (1, 2, (3,)))
            assert root.echo(value) == value
        elif kind == 1:
            record = root.make_record(rng.randrange(100))
            record.add(1)
            records.append(record)
            if len(records) > 20:
                records.pop(rng.randrange(len(records)))
        elif kind == 2:
            assert root.call(lambda x: x + 1, 41) == 42
        elif kind == 3:
            assert root.bounce(conn._local_root.exposed_bounce, 3) == 3
        elif kind == 4:
            assert root.use_client_object([5, 6, 7]) == 8
        elif kind == 5 and records:
            assert root.sum_records(records) == sum(r.get() for r in records)
        else:
            result = grpyc.async_(root.echo)(kind)
            assert result.value == kind
        counters.calls += 1


def _client_loop(port: int, seed: int, deadline: float, counters: Counters) -> None:
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    while time.monotonic() < deadline:
        try:
            _one_session(port, rng, counters, rng.randrange(20, 200))
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            counters.errors.append(f"{type(exc).__name__}: {exc}")


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _sample(port: int) -> tuple[int, int, int, int]:
    """Server stats, measured when no soak client is connected."""
    with grpyc.connect("127.0.0.1", port) as conn:
        connections, exported, greenlets, rss = conn.root.stats()
    return connections, exported, greenlets, rss


def _wait_quiet(port: int, timeout: float) -> tuple[int, int, int, int]:
    """Stats once only the sampling connection is left (dropped ones take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = _sample(port)
        if stats[0] == 1 or time.monotonic() > deadline:
            return stats
        gevent.sleep(0.2)


def run(minutes: float, clients: int, rounds: int) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-m", "soak.run", "--serve"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    out = sys.stdout.write
    out(f"soak: server pid {proc.pid} port {port}, {clients} clients, {minutes} min\n")
    counters = Counters()
    samples: list[tuple[float, int, int, int, int, int]] = []
    started = time.monotonic()
    round_length = minutes * 60 / rounds
    try:
        for number in range(rounds):
            deadline = time.monotonic() + round_length
            seeds = [number * 1000 + i for i in range(clients)]
            workers = [gevent.spawn(_client_loop, port, seed, deadline, counters) for seed in seeds]
            gevent.joinall(workers)
            gc.collect()
            connections, exported, greenlets, rss = _wait_quiet(port, 10)
            hwm = _status_kib(proc.pid, "VmHWM")
            elapsed = time.monotonic() - started
            samples.append((elapsed, counters.calls, rss, hwm, exported, greenlets))
            out(
                f"{elapsed:7.0f} s  calls {counters.calls:8d}  conns {counters.connections:6d}  "
                f"rss {rss:7d} KiB  hwm {hwm:7d} KiB  exported {exported:3d}  "
                f"greenlets {greenlets:3d}  open {connections}  errors {len(counters.errors)}\n"
            )
            sys.stdout.flush()
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=30)
    return _verdict(samples, counters)


def _verdict(samples: list[tuple[float, int, int, int, int, int]], counters: Counters) -> int:
    out = sys.stdout.write
    warm = samples[min(1, len(samples) - 1)]
    last = samples[-1]
    rss_growth = last[2] - warm[2]
    out(
        f"soak: {last[1]} calls over {counters.connections} connections "
        f"({counters.dropped} dropped without CLOSE) in {last[0]:.0f} s\n"
        f"soak: server RSS after warm-up {warm[2]} KiB, at the end {last[2]} KiB "
        f"(growth {rss_growth} KiB); exported objects at the end {last[4]}; "
        f"greenlets after warm-up {warm[5]}, at the end {last[5]}\n"
    )
    for error in counters.errors[:10]:
        out(f"soak: error: {error}\n")
    flat = rss_growth <= max(2048, warm[2] // 20) and last[4] == 0 and last[5] <= warm[5]
    out(f"soak: {'FLAT' if flat and not counters.errors else 'NOT FLAT or ERRORS'}\n")
    return 0 if flat and not counters.errors else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--rounds", type=int, default=10, help="samples taken (default 10)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    sys.exit(run(args.minutes, args.clients, max(2, args.rounds)))


if __name__ == "__main__":
    main()
