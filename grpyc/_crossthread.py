"""Calls handed from another OS thread to a connection's gevent hub, and the wait for them.

The call runs in a greenlet of the hub's thread (the only thread that may
touch its greenlets and sockets). The calling thread waits in its own gevent
hub when it has one (its other greenlets go on meanwhile), else on an OS
lock. The wait is bounded: a hub whose thread is blocked outside gevent
never runs the call, and the caller gets `ForeignThreadError` saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gevent.hub import Waiter
from gevent.monkey import get_original

from grpyc.lib import in_gevent

__all__ = ["ForeignThreadError", "ThreadCall"]

_allocate_lock: Callable[[], Any] = get_original("_thread", "allocate_lock")
_TIMEOUT = object()


class ForeignThreadError(RuntimeError):
    """A call from another OS thread could not be run on the connection's hub."""


class ThreadCall:
    """One call handed from another OS thread to a hub, and the wait for its outcome."""

    __slots__ = ("_args", "_done", "_func", "_hub", "_notify", "_outcome", "_spawn")

    def __init__(
        self, hub: Any, spawn: Callable[..., Any], func: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        """`func(*args)` will run through ``spawn`` in the gevent `hub` of the owning thread."""
        self._hub = hub
        self._spawn = spawn
        self._func = func
        self._args = args
        self._done = _allocate_lock()
        self._done.acquire()
        self._notify: Callable[[], None] | None = None
        self._outcome: tuple[bool, Any] | None = None

    def run(self, timeout: float | None) -> Any:
        if in_gevent():
            finished = self._wait_cooperatively(timeout)
        else:
            self._hub.loop.run_callback_threadsafe(self._spawn, self._run_there)
            finished = self._done.acquire(timeout=-1 if timeout is None else timeout)
        if not finished:
            raise ForeignThreadError(
                f"the connection's hub thread did not run the call within "
                f"{timeout} s; its thread may be blocked outside gevent"
            )
        assert self._outcome is not None
        is_exc, value = self._outcome
        if is_exc:
            raise value
        return value

    def _wait_cooperatively(self, timeout: float | None) -> bool:
        # This thread runs gevent too: wait in its own hub, so its other
        # greenlets go on meanwhile.
        waiter = Waiter()
        loop = waiter.hub.loop
        watcher = loop.async_()
        watcher.start(waiter.switch, None)
        self._notify = watcher.send
        timer = None
        if timeout is not None:
            loop.update_now()
            timer = loop.timer(timeout)
            timer.start(waiter.switch, _TIMEOUT)
        self._hub.loop.run_callback_threadsafe(self._spawn, self._run_there)
        try:
            if self._outcome is None:
                waiter.get()
        finally:
            watcher.close()
            if timer is not None:
                timer.close()
        return self._outcome is not None

    def _run_there(self) -> None:
        try:
            self._outcome = (False, self._func(*self._args))
        except BaseException as exc:  # noqa: BLE001 - carried to the calling thread
            self._outcome = (True, exc)
        finally:
            self._done.release()
            if self._notify is not None:
                self._notify()
