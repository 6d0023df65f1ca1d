"""A server's life across OS threads: who runs it, when it closes, what it owns.

A server's greenlets (acceptor, connections, registration, reapers) all live
in the gevent hub of one OS thread, its *owner thread*: the thread that
started serving. Another thread must not touch them; it hands work over
with `OwnerThread.call_soon` and waits with `CrossThreadFlag.wait`, which
keeps its own hub running meanwhile, so its own connections are served.
`Lifecycle` puts these together: new, serving, closing, closed.

Owns no sockets; what serving and closing do is `server`'s business.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import gevent
from gevent import Greenlet
from gevent.event import Event
from gevent.hub import Waiter
from gevent.monkey import get_original, is_module_patched

from grpyc.lib import kill_greenlets

# How long `close` from another thread waits for the serving thread to end
# after the server closed (it only destroys its gevent hub then).
THREAD_END_WAIT = 5.0

__all__ = ["CrossThreadFlag", "Lifecycle", "OwnerThread", "start_thread"]

# The real OS primitives, also when the threading modules are monkey-patched.
_get_ident: Callable[[], int] = get_original("_thread", "get_ident")
_allocate_lock: Callable[[], Any] = get_original("_thread", "allocate_lock")


class OwnerThread:
    """The OS thread (and its gevent hub) that runs a server's greenlets.

    Unclaimed until the server starts accepting; `claim` binds it to the
    calling thread. `lock` is an OS lock for the decisions that must not
    race between threads (claiming, starting to close).
    """

    def __init__(self) -> None:
        self.lock = _allocate_lock()
        self._ident: int | None = None
        self._loop: Any = None

    def claim(self) -> None:
        """Make the calling thread the owner (call with `lock` held)."""
        self._ident = _get_ident()
        self._loop = gevent.get_hub().loop

    def is_claimed(self) -> bool:
        return self._ident is not None

    def is_current(self) -> bool:
        """True in the owner thread, and anywhere while no thread owns the server."""
        return self._ident is None or self._ident == _get_ident()

    def call_soon(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` soon in the owner's hub (as a loop callback: it must not block).

        Before any thread owns the server, the calling thread's hub runs it.
        Safe from any thread and from signal handlers: it only schedules.
        """
        if self.is_current():
            gevent.get_hub().loop.run_callback(func, *args)
        else:
            self._loop.run_callback_threadsafe(func, *args)


class CrossThreadFlag:
    """A flag set once, in any OS thread, and awaited in any other.

    Waiting keeps the waiter's own hub running (an active watcher of that
    hub wakes it), so a thread that waits still serves its own connections,
    and a hub with nothing else to do does not end in `LoopExit`.
    """

    def __init__(self) -> None:
        self._lock = _allocate_lock()
        self._set = False
        self._watchers: list[Any] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Set the flag and wake every waiter, whatever its thread."""
        with self._lock:
            self._set = True
            # Sent under the lock: a waiter closes its watcher under it too,
            # so no watcher is sent to after it was closed.
            for watcher in self._watchers:
                watcher.send()
            self._watchers.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set; False if `timeout` seconds passed first."""
        if self._set:
            return True
        hub = gevent.get_hub()
        waiter = Waiter(hub)
        watcher = hub.loop.async_()
        # Started before it is listed: a send to a stopped watcher is lost.
        watcher.start(waiter.switch, None)
        with self._lock:
            if self._set:
                watcher.close()
                return True
            self._watchers.append(watcher)
        timer = gevent.Timeout._start_new_or_dummy(timeout)
        try:
            waiter.get()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            return False
        finally:
            timer.close()
            with self._lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)
                watcher.close()
        return True


def start_thread(
    prepare: Callable[[], None], run: Callable[[], None], name: str
) -> threading.Thread:
    """Call ``prepare()`` then ``run()`` in a new daemon thread; return it once prepared.

    Without monkey patching the thread is an OS thread with a gevent hub of
    its own, destroyed when `run` returns (it holds a loop and descriptors).
    With it, the thread is a greenlet of the calling thread's hub.

    Raises:
        BaseException: whatever ``prepare()`` raised (then `run` never runs).
    """
    prepared = threading.Event()
    failed: list[BaseException] = []

    def body() -> None:
        try:
            try:
                prepare()
            except BaseException as exc:  # noqa: BLE001 - raised again in the starting thread
                failed.append(exc)
            finally:
                prepared.set()
            if not failed:
                run()
        finally:
            if not is_module_patched("threading"):
                gevent.get_hub().destroy(destroy_loop=True)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    prepared.wait()
    if failed:
        raise failed[0]
    return thread


class Lifecycle:
    """A server's state (new, serving, closing, closed) and the greenlets it owns.

    Attributes:
        owner: the thread that runs the server once it serves.
        closing: True from the moment close begins (in this process).
        closing_event: set then too, for the owner's greenlets to wait on.
        hurry: set to cut the rest of the grace period short.
        stopped: set once closed; any thread may wait on it.
    """

    def __init__(self) -> None:
        self.owner = OwnerThread()
        # The thread `start_thread` made to serve in, if any (`close` waits for it).
        self.thread: threading.Thread | None = None
        self._owned: set[Greenlet] = set()
        self._start_afresh()

    def _start_afresh(self) -> None:
        self.closing = False
        self.closing_event = Event()
        self.hurry = Event()
        self.stopped = CrossThreadFlag()
        self._close_signalled = False

    def claim(self, where: str) -> bool:
        """Make the calling thread the owner; False if a thread already is.

        Raises:
            ValueError: the server is closing or closed.
        """
        with self.owner.lock:
            if self.closing:
                raise ValueError(f"server on {where} is closed")
            if self.owner.is_claimed():
                return False
            self.owner.claim()
            return True

    def check_open(self, where: str) -> None:
        """Raise ValueError unless the server is open (not closing or closed)."""
        with self.owner.lock:
            if self.closing:
                raise ValueError(f"server on {where} is closed")

    def spawn(self, func: Callable[..., Any], *args: Any) -> Greenlet:
        """Start ``func(*args)`` in a greenlet the server owns (killed on close)."""
        greenlet = Greenlet(func, *args)
        self._owned.add(greenlet)
        greenlet.link(self._owned.discard)
        greenlet.start()
        return greenlet

    def kill_owned(self) -> None:
        kill_greenlets(self._owned)

    def in_child(self) -> None:
        """Start afresh in a forked child: none of the parent's duties carry over."""
        self.kill_owned()
        self._owned = set()
        # The parent's waiters keep the old flag and events; nothing sets them here.
        self._start_afresh()

    def on_signal(self, close: Callable[[int], None]) -> Callable[[int, Any], None]:
        """A signal handler: the first signal calls ``close(signum)``, later ones `hurry`."""

        def handle(signum: int, frame: Any) -> None:
            # Runs between two bytecodes of whatever greenlet was running:
            # only schedule work, in the owner's hub.
            if self.closing or self._close_signalled:
                self.owner.call_soon(self.hurry.set)
            else:
                self._close_signalled = True
                self.owner.call_soon(self.spawn, close, signum)

        return handle

    def close(self, close_here: Callable[[], None], timeout: float, where: str) -> None:
        """Run ``close_here()`` once, in the owner thread; return once closed.

        In the owner thread (or before any thread owns the server) a second
        call returns at once. From another thread the close is handed to the
        owner, and this waits up to `timeout` for it to finish.

        Raises:
            TimeoutError: the owner thread did not finish closing in time.
        """
        with self.owner.lock:
            here = self.owner.is_current()
            if here:
                if self.closing:
                    return
                self.closing = True
        if here:
            self.closing_event.set()
            try:
                close_here()
            finally:
                # Under the lock: once `stopped` is set the owner's hub may be
                # destroyed, so nothing may be handed to it any more.
                with self.owner.lock:
                    self.stopped.set()
            return
        with self.owner.lock:
            if self.stopped.is_set():
                return
            self.owner.call_soon(self.spawn, self.close, close_here, timeout, where)
        if not self.stopped.wait(timeout):
            raise TimeoutError(
                f"server on {where} did not close within {timeout:.1f} s: "
                "its thread does not run its gevent hub"
            )
        self._wait_thread_end()

    def _wait_thread_end(self) -> None:
        # Closed, the serving thread still destroys its gevent hub. A program
        # that exits right after close() (a test fixture, a script) must not
        # finalize the interpreter meanwhile: that could crash it at exit.
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(THREAD_END_WAIT)
