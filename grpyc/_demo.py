"""``python -m grpyc demo``: a server and a client session showing what grpyc does.

Starts a grpyc server on 127.0.0.1 (a free port) in this process, connects to
it, and prints each step: plain calls, remote objects, a callback chain 100
levels deep, ten concurrent 0.2 s calls on one connection, a remote
exception, an async call, and a clean close.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import gevent

from grpyc import factory
from grpyc.server import Server
from grpyc.service import Service

__all__ = ["DemoService", "run_demo"]


class DemoService(Service):
    """What the demo server exposes."""

    def exposed_add(self, a: int, b: int) -> int:
        return a + b

    def exposed_slow_square(self, x: int) -> int:
        gevent.sleep(0.2)
        return x * x

    def exposed_inventory(self) -> dict[str, int]:
        return {"apples": 3, "pears": 5}

    def exposed_countdown(self, callback: Callable[[int], int], depth: int) -> int:
        return 0 if depth == 0 else callback(depth - 1) + 1

    def exposed_divide(self, a: float, b: float) -> float:
        return a / b


def run_demo(out: TextIO = sys.stdout) -> int:
    """Run the demo session; returns a process exit status."""
    server = Server(DemoService, hostname="127.0.0.1", port=0)
    server.listen()
    try:
        _session(server.port, out)
    finally:
        server.close()
    return 0


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def _session(port: int, out: TextIO) -> None:
    _say(out, f"server: grpyc DemoService listening on 127.0.0.1:{port}")
    conn = factory.connect("127.0.0.1", port)
    root = conn.root
    _say(out, f"call:      root.add(2, 3) -> {root.add(2, 3)}")

    stock = root.inventory()
    stock["plums"] = 7
    contents = {key: stock[key] for key in stock}
    _say(out, f"netref:    remote dict, proxied, after adding plums -> {contents}")

    def countdown(depth: int) -> Any:
        return root.countdown(countdown, depth)

    _say(out, f"callbacks: client<->server chain 100 deep -> {root.countdown(countdown, 100)}")

    started = time.monotonic()
    jobs = [gevent.spawn(root.slow_square, n) for n in range(10)]
    gevent.joinall(jobs, raise_error=True)
    elapsed = time.monotonic() - started
    squares = [job.value for job in jobs]
    _say(out, f"overlap:   10 x 0.2 s calls on ONE connection -> {squares} in {elapsed:.2f} s")

    try:
        root.divide(1, 0)
    except ZeroDivisionError as exc:
        first_line = str(exc).splitlines()[0]
        _say(out, f"error:     remote ZeroDivisionError raised locally: {first_line!r}")

    _say(out, f"async:     ping round trip ok: {_timed(conn.ping):.1f} ms")
    conn.close()
    _say(out, f"close:     connection closed cleanly: {conn.closed}")


def _timed(func: Callable[[], Any]) -> float:
    started = time.perf_counter()
    func()
    return (time.perf_counter() - started) * 1000
