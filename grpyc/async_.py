"""`AsyncResult`: the pending result of an asynchronous request.

RPyC-compatible API (`ready`, `error`, `expired`, `value`, `wait()`,
`add_callback()`, `set_expiry()`), and waitable with gevent: it has
`rawlink`/`unlink`, so `gevent.wait([res1, res2])` works under gevent.

A result lives on its connection's runtime (`hub.ConnectionHub` or
`_threadhub.ThreadHub`), which delivers the outcome through `deliver` and
lends its waiting: `wait()` reads frames itself when nobody else does, in
either runtime, so a result completes whatever the calling code does.
Nothing here imports the protocol: the connection passes in what resolves
the proxy classes of a value (`resolve`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

import gevent
from gevent.monkey import get_original

from grpyc._runtime import ReplySlot

__all__ = ["AsyncResult", "AsyncResultTimeout", "ResultRuntime"]


# The result did not arrive before its expiry. RPyC's name for the builtin
# itself, as in stock rpyc: ``except AsyncResultTimeout`` catches any
# TimeoutError there, and the raised exception's type is TimeoutError.
AsyncResultTimeout = TimeoutError

_start_thread: Callable[..., Any] = get_original("_thread", "start_new_thread")
_get_ident: Callable[[], int] = get_original("_thread", "get_ident")
_allocate_lock: Callable[[], Any] = get_original("_thread", "allocate_lock")

# A connection made outside gevent reads only while someone waits: its results
# that gevent waits on (`rawlink`), per runtime, and one OS thread that reads
# for them until each arrived, expired or was unlinked.
_linked: dict[int, tuple[Any, list[AsyncResult]]] = {}
_linked_lock = _allocate_lock()
_LINKED_POLL = 0.1  # seconds between checks of the linked results (how late an expiry wakes)


class ResultRuntime(Protocol):
    """What a result needs of its connection's runtime."""

    # Whether replies are read with nobody waiting (gevent's runtime: a pool
    # reader comes when bytes do); a connection made outside gevent reads
    # only while someone waits, as in RPyC.
    reads_by_itself: bool

    @property
    def closed(self) -> bool: ...

    def new_slot(self) -> ReplySlot: ...
    def wait_reply(self, slot: Any, timeout: float | None) -> Any: ...
    def wait_frame(self, timeout: float | None) -> bool: ...
    def is_hub_thread(self) -> bool: ...
    def call_from_thread(
        self, func: Callable[..., Any], args: tuple[Any, ...], timeout: float | None
    ) -> Any: ...
    def spawn_owned(self, func: Callable[..., Any], *args: Any) -> Any: ...


class AsyncResult:
    """The eventual result (or exception) of an asynchronous request. RPyC-compatible.

    Callbacks added with `add_callback` run once the result arrives: before
    `wait()` (or `value`) returns in the code waiting for it, else on their
    own (a greenlet under gevent, the thread that read the reply otherwise).
    A reply that arrives after the expiry is dropped; the result stays
    expired, as in RPyC.
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_deadline",
        "_expiry_timer",
        "_links",
        "_resolve",
        "_runtime",
        "_slot",
        "_waiting",
    )

    def __init__(
        self,
        runtime: ResultRuntime,
        resolve: Callable[[tuple[Any, ...]], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._resolve = resolve
        self._slot = runtime.new_slot()
        self._callbacks: list[Callable[[AsyncResult], Any]] = []
        self._deadline: float | None = None
        # gevent's waiters, each with the loop and thread id of the thread that linked it.
        self._links: dict[Callable[[Any], Any], tuple[Any, int]] = {}
        # The timer that wakes the links at the expiry (`rawlink`), and its thread.
        self._expiry_timer: tuple[Any, int] | None = None
        self._waiting = 0

    def __repr__(self) -> str:
        if self._slot.outcome is not None:
            state = "error" if self._slot.outcome[0] else "ready"
        elif self.expired:
            state = "expired"
        else:
            state = "pending"
        return f"<AsyncResult object ({state}) at 0x{id(self):08x}>"

    # ----------------------------------------------------------- delivering
    @property
    def outcome(self) -> tuple[bool, Any, tuple[Any, ...]] | None:
        """The delivered ``(is_exc, obj, unresolved)``, or None."""
        return self._slot.outcome

    def deliver(self, is_exc: bool, obj: Any, unresolved: tuple[Any, ...] = ()) -> None:
        """Store the outcome (called by whoever read the reply; never blocks)."""
        if self._slot.outcome is not None or self.expired:
            return
        self._slot.deliver(is_exc, obj, unresolved)
        if self._callbacks and not self._waiting:
            self._runtime.spawn_owned(self._run_callbacks)
        if self._links:
            self._notify_links()
        if self._expiry_timer is not None:
            self._stop_expiry_timer()

    def _notify_links(self) -> None:
        # gevent's waiters are switched from their own hub, whichever thread read the reply
        # (a callback from another thread also wakes that hub's loop: a write to it).
        here = _get_ident()
        for callback, (loop, thread) in list(self._links.items()):
            if thread == here:
                loop.run_callback(self._call_link, callback)
            else:
                loop.run_callback_threadsafe(self._call_link, callback)

    def _call_link(self, callback: Callable[[Any], Any]) -> None:
        # As gevent's own objects do: a waiter that unlinked meanwhile (its wait
        # timed out) must not be switched to, wherever it waits now.
        if callback in self._links:
            callback(self)

    def _run_callbacks(self) -> None:
        # Each callback runs once, whoever gets here first.
        while self._callbacks:
            self._callbacks.pop(0)(self)

    # -------------------------------------------------------------- waiting
    def wait(self) -> None:
        """Wait until the result arrives or expires; RPyC-compatible.

        Raises:
            AsyncResultTimeout: the expiry passed first.
        """
        if self._slot.outcome is None and not self.expired:
            timeout = self._time_left()
            runtime = self._runtime
            self._waiting += 1
            try:
                if runtime.is_hub_thread():
                    runtime.wait_reply(self._slot, timeout)
                else:
                    runtime.call_from_thread(runtime.wait_reply, (self._slot, timeout), timeout)
            finally:
                self._waiting -= 1
        if self._slot.outcome is None:
            raise AsyncResultTimeout("result expired")
        self._run_callbacks()

    def _time_left(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def add_callback(self, func: Callable[[AsyncResult], Any]) -> None:
        """Call ``func(self)`` once the result arrives (at once, here, if it has)."""
        if self._slot.outcome is not None:
            func(self)
        else:
            self._callbacks.append(func)

    def set_expiry(self, timeout: float | None) -> None:
        """Make the result expire ``timeout`` seconds from now (None: never)."""
        self._deadline = None if timeout is None else time.monotonic() + timeout

    # ----------------------------------------------------------- properties
    @property
    def ready(self) -> bool:
        """True once the result (value or exception) has arrived.

        Like RPyC, asking serves the connection once without waiting, so a
        loop polling ``ready`` makes progress in any runtime.
        """
        if self._slot.outcome is not None:
            return True
        if self.expired:
            return False
        self._poll()
        return self._slot.outcome is not None

    def _poll(self) -> None:
        runtime = self._runtime
        try:
            if runtime.is_hub_thread():
                runtime.wait_frame(0)
        except EOFError:
            pass  # a closed connection delivered EOFError to this result already

    @property
    def error(self) -> bool:
        """True if the result arrived and is an exception."""
        outcome = self._slot.outcome if self.ready else None
        return outcome is not None and bool(outcome[0])

    @property
    def expired(self) -> bool:
        """True if the expiry passed before the result arrived."""
        if self._slot.outcome is not None or self._deadline is None:
            return False
        return time.monotonic() > self._deadline

    @property
    def value(self) -> Any:
        """The result: waits for it, raises the remote exception if it failed.

        Raises:
            AsyncResultTimeout: the expiry passed first.
        """
        self.wait()
        outcome = self._slot.outcome
        assert outcome is not None  # wait() returned: the result arrived
        is_exc, obj, unresolved = outcome
        if unresolved and self._resolve is not None:
            self._resolve(unresolved)
        if is_exc:
            raise obj
        return obj

    # gevent waiting protocol: lets gevent.wait() / gevent.iwait() take results.
    def rawlink(self, callback: Callable[[Any], Any]) -> None:
        """Call ``callback(self)`` once the result arrives or expires, in the
        gevent hub of the thread that links it (where `gevent.wait` waits)."""
        loop = gevent.get_hub().loop
        # The loop's clock is stale after the thread blocked outside gevent (the
        # plain-thread runtime's calls do): the timers armed next (ours, and the
        # timeout gevent.wait arms after linking) would fire that much early.
        loop.update_now()
        self._links[callback] = (loop, _get_ident())
        if self._slot.outcome is not None:
            loop.run_callback(self._call_link, callback)
        elif not self._runtime.reads_by_itself:
            _read_while_linked(self)  # else nobody may read it before it expires
        elif self._deadline is not None and self._expiry_timer is None:
            # The reader wakes the links when the reply comes; the expiry does too.
            timer = loop.timer(self._time_left())
            self._expiry_timer = (timer, _get_ident())
            timer.start(self._on_expiry)

    def _on_expiry(self) -> None:
        self._stop_expiry_timer()
        if self._slot.outcome is None and self._links:
            self._notify_links()

    def _stop_expiry_timer(self) -> None:
        # Only in the timer's own thread; one in another's fires, and finds the outcome.
        armed = self._expiry_timer
        if armed is not None and armed[1] == _get_ident():
            armed[0].close()  # so the result (and its value) is not kept until the expiry
            self._expiry_timer = None

    def unlink(self, callback: Callable[[Any], Any]) -> None:
        """Undo `rawlink`."""
        self._links.pop(callback, None)


def _read_while_linked(result: AsyncResult) -> None:
    key = id(result._runtime)
    with _linked_lock:
        entry = _linked.get(key)
        if entry is not None:
            entry[1].append(result)
            return
        _linked[key] = (result._runtime, [result])
    _start_thread(_read_for_links, (key,))


def _read_for_links(key: int) -> None:
    """The reading thread of one runtime's linked results (`_read_while_linked`).

    It waits for the first of them as `wait` does, so it reads frames (a
    delivery notifies its result's links: `deliver`), and at least every
    `_LINKED_POLL` seconds drops the results that arrived or were unlinked
    and wakes the waiters of those that expired; it ends when none is left.
    """
    runtime = _linked[key][0]
    while (first := _first_linked(key)) is not None:
        with contextlib.suppress(EOFError):  # closed: `_first_linked` sees it next
            runtime.wait_reply(first._slot, _LINKED_POLL)


def _first_linked(key: int) -> AsyncResult | None:
    """The first linked result still to wait for, or None (then `key` is dropped).

    Results that expired (or are left undelivered by a close) wake their waiters here.
    """
    with _linked_lock:
        runtime, results = _linked[key]
        if runtime.closed:  # the pending ones got EOFError (`deliver`)
            woken = [r for r in results if r.outcome is None]
            results.clear()
        else:
            woken = [r for r in results if r.outcome is None and r.expired]
            results[:] = [r for r in results if r.outcome is None and not r.expired and r._links]
        if not results:
            del _linked[key]
    for result in woken:
        result._notify_links()
    return results[0] if results else None
