"""Admission of the peer's requests on one cooperative connection.

A request runs in a handler greenlet when fewer than
``max_concurrent_requests`` handlers are busy; else it waits in a queue of at
most ``max_queued_requests``; beyond that (or past ``max_request_bytes`` of
requests held at once) it is refused and the protocol answers it with an
error. Handlers waiting for the peer's answer to their own nested call do not
count as busy (else a callback chain deeper than the limit would wait on
itself), but all handlers together stay under the running and queued limits
combined, so what one peer can park here stays bounded.

Requests may also run inline in the greenlet that read them (`run_inline`):
the caller must hand reading over if the request blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gevent import Greenlet, GreenletExit

from grpyc.config import Limits

__all__ = ["Admission"]

# What one parked handler greenlet costs in memory beyond its request's
# bytes (stack slices, frames, the greenlet itself), measured on CPython 3.11
# with gevent 26 (tests/hostile, parked handlers): ~14 KiB; ~16.5 KiB when
# the runtime modules were compiled (compiled frames live on the C stack a
# parked greenlet keeps), which the build does not do (grpyc/_accel.py).
# Counted against max_request_bytes so that many small requests cannot park
# more memory than the budget says.
HANDLER_COST = 16 * 1024

Job = tuple[Callable[..., Any], tuple[Any, ...], int]


class Admission:
    """Handler greenlets, the queue and the byte budget of one connection."""

    __slots__ = (
        "_bytes_in_flight", "_handlers", "_nested_waits", "_on_idle", "_queued",
        "closed", "limits",
    )  # fmt: skip

    def __init__(self, limits: Limits, on_idle: Callable[[], None]) -> None:
        self.limits = limits
        self._on_idle = on_idle
        self._handlers: set[Any] = set()
        self._queued: list[Job] = []
        self._bytes_in_flight = 0
        self._nested_waits = 0
        self.closed = False

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> int:
        return len(self._handlers)

    @property
    def queued(self) -> int:
        return len(self._queued)

    @property
    def nested_waits(self) -> int:
        return self._nested_waits

    @property
    def bytes_in_flight(self) -> int:
        return self._bytes_in_flight

    def is_idle(self) -> bool:
        return not (self._handlers or self._queued)

    def is_handler(self, glet: Any) -> bool:
        return glet in self._handlers

    def overload_message(self) -> str:
        limits = self.limits
        return (
            f"too many requests: {self.running} running, {self._nested_waits} of them "
            f"waiting on nested calls (max_concurrent_requests="
            f"{limits.max_concurrent_requests}), {self.queued} queued "
            f"(max_queued_requests={limits.max_queued_requests}), {self._bytes_in_flight} "
            f"bytes in flight (max_request_bytes={limits.max_request_bytes})"
        )

    # -------------------------------------------------------------- admission
    def admit(self, size: int) -> tuple[bool, int] | None:
        """Decide for a request of `size` bytes.

        Returns:
            ``(run_now, charged)``: run now or queue it, and the cost charged
            to the byte budget (pass it back to `finish` or `release`); None
            when the request is refused.
        """
        charged = size + HANDLER_COST
        if (
            self._bytes_in_flight
            and self._bytes_in_flight + charged > self.limits.max_request_bytes
        ):
            return None
        if self._has_free_handler() and not self._queued:
            self._bytes_in_flight += charged
            return True, charged
        if len(self._queued) < self.limits.max_queued_requests:
            self._bytes_in_flight += charged
            return False, charged
        return None

    def enqueue(self, func: Callable[..., Any], args: tuple[Any, ...], charged: int) -> None:
        self._queued.append((func, args, charged))

    def start(self, func: Callable[..., Any], args: tuple[Any, ...], charged: int) -> None:
        """Run an admitted request in a new handler greenlet."""
        self._start((func, args, charged))

    def _start(self, job: Job) -> None:
        glet = Greenlet(self._run, *job)
        self._handlers.add(glet)
        glet.start()

    def _has_free_handler(self) -> bool:
        running = len(self._handlers)
        limits = self.limits
        return (
            running - self._nested_waits < limits.max_concurrent_requests
            and running < limits.max_concurrent_requests + limits.max_queued_requests
        )

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...], charged: int) -> None:
        try:
            func(*args)
        except GreenletExit:
            pass  # killed at shutdown
        finally:
            self.finish(Greenlet.getcurrent(), charged)

    def adopt(self, glet: Any) -> None:
        """Count `glet` (running a request inline) as a handler until `finish`."""
        self._handlers.add(glet)

    def finish(self, glet: Any, charged: int) -> None:
        """A request finished; start a queued one if there is room now."""
        self._handlers.discard(glet)
        self._bytes_in_flight -= charged
        self._start_queued()
        if not self._handlers and not self._queued:
            self._on_idle()

    # ----------------------------------------------------------- nested waits
    def nested_wait(self, glet: Any) -> bool:
        """Note that `glet` waits for a reply; True if it is a handler (pair with `nested_done`)."""
        if glet in self._handlers:
            self._nested_waits += 1
            return True
        return False

    def nested_done(self) -> None:
        self._nested_waits -= 1
        self._start_queued()

    def _start_queued(self) -> None:
        while self._queued and not self.closed and self._has_free_handler():
            self._start(self._queued.pop(0))

    # --------------------------------------------------------------- shutdown
    def close(self) -> list[Any]:
        """Forget queued requests; return the handler greenlets to kill."""
        self.closed = True
        self._queued.clear()
        self._bytes_in_flight = 0
        handlers = list(self._handlers)
        self._handlers.clear()
        return handlers
