"""Admission of the peer's requests on one cooperative connection.

A request runs in a handler greenlet when fewer than
``max_concurrent_requests`` handlers are busy; else it waits in a queue of at
most ``max_queued_requests``; beyond that (or past ``max_request_bytes`` of
requests held at once) it is refused and the protocol answers it with an
error. Handlers waiting for the peer's answer to their own nested call do not
count as busy (else a callback chain deeper than the limit would wait on
itself), but all handlers together stay under the running and queued limits
combined, so what one peer can park here stays bounded.

Requests may also run inline in the greenlet that read them (`enter_inline`):
the caller must hand reading over if the request blocks.

A handler greenlet that finishes waits, idle, for the next request of the
same connection instead of ending: starting a greenlet (and ending it) costs
~9 µs, handing an idle one its next request ~1 µs, and each level of a
callback chain starts one on each side. At most `IDLE_MAX` wait per
connection, and each retires after `IDLE_SECONDS` unused (an idle one keeps
~7 KiB of stack).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import Any, Protocol

from gevent import Greenlet, GreenletExit
from gevent.hub import Waiter

from grpyc._firstuse import NO_ITEMS, appended
from grpyc.config import Limits
from grpyc.lib import LeanGreenlet

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


class HasIdleWaiters(Protocol):
    """Who waits for the connection to go idle (`grpyc._waitlists.WaitLists`)."""

    @property
    def idle(self) -> Sized: ...


# Idle handler greenlets kept per connection, and how long one stays unused.
IDLE_MAX = 64
IDLE_SECONDS = 5.0


@dataclass(slots=True, eq=False)
class _IdleHandler:
    """A handler greenlet waiting for its next job (`job` is set as it is handed one)."""

    glet: Any
    waiter: Waiter
    since: float
    job: Job | None = None


class Admission:
    """Handler greenlets, the queue and the byte budget of one connection."""

    __slots__ = (
        "_bytes_in_flight", "_gevent_hub", "_handlers", "_idle", "_idle_timer",
        "_nested_waits", "_on_idle", "_queued", "_waits", "closed", "limits",
    )  # fmt: skip

    def __init__(
        self,
        limits: Limits,
        on_idle: Callable[[], None],
        gevent_hub: Any,
        waits: HasIdleWaiters,
    ) -> None:
        """`on_idle` is called when the last request ends, if ``waits.idle`` is not empty."""
        self.limits = limits
        self._on_idle = on_idle
        self._waits = waits
        self._gevent_hub = gevent_hub
        self._handlers: set[Any] = set()
        # Most recently idle last. This and `_queued` are made on first use
        # (`grpyc._firstuse`): most connections never queue a request or keep
        # an idle handler.
        self._idle: list[_IdleHandler] | tuple[()] = NO_ITEMS
        self._idle_timer: Any = None
        self._queued: list[Job] | tuple[()] = NO_ITEMS
        self._bytes_in_flight = 0
        self._nested_waits = 0
        self.closed = False

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> int:
        return len(self._handlers)

    @property
    def idle(self) -> int:
        """Handler greenlets waiting for a next request."""
        return len(self._idle)

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

    def enter_inline(self, glet: Any, size: int) -> int | None:
        """Count `glet`, about to run a request of `size` bytes itself, as a handler.

        `admit` and the count of a new handler in one call, for a request
        that may run at once (the path of most requests). Returns the cost
        charged (pass it to `finish`), or None when the request may not
        start at once: `admit` decides then.
        """
        charged = size + HANDLER_COST
        in_flight = self._bytes_in_flight
        handlers = self._handlers
        if in_flight or handlers:  # else nothing runs or is queued: every limit has room
            limits = self.limits
            running = len(handlers)
            if (
                self._queued
                or in_flight + charged > limits.max_request_bytes
                or running - self._nested_waits >= limits.max_concurrent_requests
                or running >= limits.max_concurrent_requests + limits.max_queued_requests
            ):
                return None
        self._bytes_in_flight = in_flight + charged
        handlers.add(glet)
        return charged

    def enqueue(self, func: Callable[..., Any], args: tuple[Any, ...], charged: int) -> None:
        self._queued = appended(self._queued, (func, args, charged))

    def start(self, func: Callable[..., Any], args: tuple[Any, ...], charged: int) -> None:
        """Run an admitted request in a new handler greenlet."""
        self._start((func, args, charged))

    def _start(self, job: Job) -> None:
        if self._idle:
            idle = self._idle.pop()
            idle.job = job
            self._handlers.add(idle.glet)
            self._gevent_hub.loop.run_callback(idle.waiter.switch, None)
            return
        # The job goes in a list it takes out of: a Greenlet keeps its args.
        glet = LeanGreenlet(self._work, [job])
        self._handlers.add(glet)
        glet.start()

    def _has_free_handler(self) -> bool:
        running = len(self._handlers)
        limits = self.limits
        return (
            running - self._nested_waits < limits.max_concurrent_requests
            and running < limits.max_concurrent_requests + limits.max_queued_requests
        )

    def _work(self, first: list[Job]) -> None:
        """A handler greenlet: run its first job, then those it is handed while idle."""
        me = Greenlet.getcurrent()
        job: Job | None = first.pop()
        while job is not None:
            func, args, charged = job
            job = None
            try:
                func(*args)
            except GreenletExit:
                return  # killed at shutdown
            finally:
                self.finish(me, charged)
            del func, args  # an idle handler must not keep the last request alive
            job = self._wait_idle(me)

    def _wait_idle(self, me: Any) -> Job | None:
        """Wait for the next job; None to end (closed, enough idle, or retired)."""
        if self.closed or len(self._idle) >= IDLE_MAX:
            return None
        idle = _IdleHandler(me, Waiter(self._gevent_hub), time.monotonic())
        self._idle = appended(self._idle, idle)
        if self._idle_timer is None:
            self._arm_retirement(IDLE_SECONDS)
        try:
            idle.waiter.get()
        except BaseException:
            self._killed_while_idle(idle)
            raise
        return idle.job

    def _killed_while_idle(self, idle: _IdleHandler) -> None:
        # Only shutdown kills handlers, but a job handed over just before a
        # kill from elsewhere must not be lost with this greenlet.
        if self._idle and idle in self._idle:
            self._idle.remove(idle)
        elif idle.job is not None:
            self._handlers.discard(idle.glet)
            if not self.closed:
                self._start(idle.job)

    def _arm_retirement(self, after: float) -> None:
        timer = self._idle_timer = self._gevent_hub.loop.timer(after)
        timer.start(self._retire_idle)

    def _retire_idle(self) -> None:
        # Runs in the hub: end the handlers idle for IDLE_SECONDS (oldest first).
        self._idle_timer.close()
        self._idle_timer = None
        idle = self._idle
        expired = time.monotonic() - IDLE_SECONDS
        while idle and idle[0].since <= expired:
            idle.pop(0).waiter.switch(None)
        if idle:
            self._arm_retirement(idle[0].since - expired)

    def finish(self, glet: Any, charged: int) -> None:
        """A request finished; start a queued one if there is room now."""
        self._handlers.discard(glet)
        self._bytes_in_flight -= charged
        if self._queued:
            self._start_queued()
        if self._waits.idle and not self._handlers and not self._queued:
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
        self._queued = NO_ITEMS
        self._bytes_in_flight = 0
        handlers = list(self._handlers)
        self._handlers.clear()
        handlers.extend(idle.glet for idle in self._idle)
        self._idle = NO_ITEMS
        if self._idle_timer is not None:
            self._idle_timer.close()
            self._idle_timer = None
        return handlers
