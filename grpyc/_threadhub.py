"""The runtime of a connection made outside gevent: plain OS threads, RPyC's model.

How it works (DESIGN.md, "Callers outside gevent"): the stream is a plain
blocking one, and there is no reader of its own. Whichever thread waits on
the connection (for a reply, in ``serve``/``poll``, or a `BgServingThread`)
takes the *read baton* when nobody else holds it and reads frames: replies go
to their waiting threads (each waits on its own OS lock, so nothing is
stolen), and a request is run by the thread that read it, after passing the
baton on (so other threads keep reading meanwhile), in a fresh greenlet (so a
callback chain of any depth does not hit the recursion limit). When no thread
waits, nothing reads, as in RPyC: callbacks are served by the next call,
``serve``/``poll``, or a `BgServingThread`.

Timeouts are OS waits on the monotonic clock, so they stay right whatever
the threads do between calls. Writes are whole frames under one send lock;
frames queued by code that must not block (``__del__``, the reading thread)
are written by the next thread that sends. Nothing here creates a gevent
hub, so the program's threads stay plain.

It offers the methods of `grpyc.hub.ConnectionHub` that `protocol` uses.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import greenlet
from gevent.monkey import get_original

from grpyc._runtime import ReplySlot, Runtime
from grpyc.config import Limits
from grpyc.framing import Payload

__all__ = ["ThreadHub"]

_allocate_lock: Callable[[], Any] = get_original("_thread", "allocate_lock")
_start_thread: Callable[..., Any] = get_original("_thread", "start_new_thread")
_Condition: Any = get_original("threading", "Condition")
_thread_local: Any = get_original("_thread", "_local")

# Levels of a callback chain one OS thread runs before the next level moves to
# a thread of its own. A level costs ~12 frames of the recursion limit (1000),
# and a greenlet started deep in a thread is as deep as its starter (greenlet 3
# on Python 3.11): in one thread a chain fails near 80 levels, as stock's does
# near 87. A fresh thread starts from nothing, so the chain goes on.
_LEVELS_PER_THREAD = 32
# At most this many such threads at once per connection (~2,000 levels, as
# deep as the gevent runtime goes): a peer that keeps answering a callback
# with another callback must not make us start threads without end. Past
# it, levels stay in their thread and meet the recursion limit there.
_MAX_CHAIN_THREADS = 64
_levels = _thread_local()  # `depth`: the jobs this thread runs inside each other


class _Sleeper:
    """A thread waiting for the baton or its reply."""

    __slots__ = ("lock", "slot")

    def __init__(self, slot: ReplySlot | None) -> None:
        self.lock = _allocate_lock()
        self.lock.acquire()
        self.slot = slot

    def wake(self) -> None:
        """Wake the sleeping thread; waking it twice (reply and baton at once) is harmless."""
        with contextlib.suppress(RuntimeError):  # already woken
            self.lock.release()


class ThreadHub(Runtime):
    """Read baton, writes and pending slots of a connection used by plain OS threads."""

    reads_by_itself = False  # only while someone waits, as in RPyC (`async_.ResultRuntime`)

    def _set_up(
        self, channel: Any, limits: Limits, take_deferred: Callable[[], list[bytes]] | None
    ) -> None:
        self._limits = limits
        self._take_deferred = take_deferred
        self._state = _Condition(_allocate_lock())
        self._reading = False
        self._sleepers: list[_Sleeper] = []
        self._job: tuple[Callable[..., Any], tuple[Any, ...]] | None = None
        self._running = 0
        self._chain_threads = 0  # threads running a deep level of a chain (`_run_level`)
        self._send_lock = _allocate_lock()
        self._outbox: list[Payload] = []
        self._deferred_bytes = 0
        self._closed_lock = _allocate_lock()
        self._closed_lock.acquire()

    # ------------------------------------------------------------------ state
    @property
    def limits(self) -> Limits:
        return self._limits

    def is_hub_thread(self) -> bool:
        """Always True: every thread may use this connection directly."""
        return True

    def is_busy(self) -> bool:
        return bool(self.pending) or self._running > 0

    def overload_message(self) -> str:
        return f"too many requests: {self._running} running"

    def start(self) -> None:
        """Nothing to start: threads read when they wait (RPyC's model)."""

    @contextlib.contextmanager
    def sparing(self, glet: Any) -> Iterator[None]:
        """Nothing is killed at shutdown here: threads run to their end."""
        yield

    def baton_taken(self) -> bool:
        """Whether a thread is reading now (RPyC's receive lock is held)."""
        return self._reading

    def serve_in_threads(self, count: int) -> None:
        """Serve from `count` more daemon threads until the connection closes."""
        for _ in range(max(0, count - 1)):
            _start_thread(self.serve_until_closed, ())

    # ---------------------------------------------------------------- replies
    def wait_reply(self, slot: Any, timeout: float | None) -> Any:
        """Read (or sleep) until `slot` is delivered; its outcome, or None on timeout."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while slot.outcome is None and not self._closed:
            if self._take_baton_or_sleep(slot, deadline):
                self._serve_one(deadline, lambda: slot.outcome is None)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return slot.outcome

    def _take_baton_or_sleep(self, slot: Any, deadline: float | None) -> bool:
        """Take the baton (True), or sleep until the slot is delivered, the baton is free
        or the deadline passes (False)."""
        with self._state:
            if slot.outcome is not None or self._closed:
                return False
            if not self._reading:
                self._reading = True
                return True
            sleeper = _Sleeper(slot)
            self._sleepers.append(sleeper)
            slot.wake = sleeper.wake
        sleeper.lock.acquire(timeout=_remaining(deadline))
        with self._state:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)
            slot.wake = None
        return False

    # ---------------------------------------------------------------- serving
    def wait_frame(self, timeout: float | None, waiting: Callable[[], bool] = lambda: True) -> bool:
        """RPyC's ``serve``: handle one message arriving within `timeout`.

        If another thread holds the baton, wait until it passes it on (True)
        or `timeout` passes (False), as RPyC does.

        Raises:
            EOFError: the connection is closed.
        """
        self._raise_if_closed()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._state:
            if self._reading:
                sleeper = _Sleeper(None)
                self._sleepers.append(sleeper)
                taken = False
            else:
                self._reading = taken = True
        if not taken:
            released = sleeper.lock.acquire(timeout=_remaining(deadline))
            with self._state:
                if sleeper in self._sleepers:
                    self._sleepers.remove(sleeper)
            self._raise_if_closed()
            return bool(released)
        return self._serve_one(deadline, _always, waiting)

    def serve_until_closed(self) -> None:
        """Serve until the connection closes (RPyC's ``serve_all``)."""
        while not self._closed:
            try:
                self.wait_frame(None)
            except EOFError:
                return

    def wait_closed(self, timeout: float | None = None) -> bool:
        if self._closed:
            return True
        acquired = self._closed_lock.acquire(timeout=-1 if timeout is None else timeout)
        if acquired:
            self._closed_lock.release()
        return bool(acquired)

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._state:
            while self._running and not self._closed:
                left = _remaining(deadline)
                if left == 0:
                    return False
                self._state.wait(None if left < 0 else left)
        return True

    def _serve_one(
        self,
        deadline: float | None,
        still_wanted: Callable[[], bool],
        waiting: Callable[[], bool] = lambda: True,
    ) -> bool:
        """Holding the baton: handle frames until one that was wanted, then pass the baton.

        Returns True if a frame was handled.
        """
        handled = False
        try:
            if not waiting():
                return False
            while still_wanted() and not self._closed:
                payload = self._next_frame(deadline)
                if payload is None:
                    return handled
                self.last_received = time.monotonic()
                self._on_frame(payload)
                del payload
                handled = True
                self._flush_queued()
                if self._job is not None:
                    break
                if still_wanted is _always:
                    break
            return handled
        except (EOFError, OSError) as exc:
            self.shutdown(exc if isinstance(exc, EOFError) else EOFError(f"connection lost: {exc}"))
            raise EOFError(f"connection {self.name} is closed: {exc}") from None
        except Exception as exc:
            self.logger.warning("%s: closing after protocol error: %s", self.name, exc)
            self.shutdown(exc)
            raise EOFError(f"connection {self.name} closed after a protocol error") from exc
        finally:
            job, self._job = self._job, None
            self._pass_baton()
            if job is not None:
                self._run_job(*job)

    def _next_frame(self, deadline: float | None) -> bytes | None:
        """The next frame, waiting for its first bytes until `deadline` (None if none came)."""
        channel = self._channel
        while True:
            payload: bytes | None = channel.next_buffered()
            if payload is not None:
                return payload
            if channel.ack_owed:
                # DELs are answered at once here: what is owed is an answer to
                # ours. Where the kernel cannot ack now, only our next frame will.
                channel.ack_now()
            if not channel.has_pending_input() and not channel.poll(_poll_timeout(deadline)):
                return None
            channel.fill()

    def _pass_baton(self) -> None:
        """Free the baton: wake one thread waiting for a reply to take it, and
        every thread in ``serve`` (RPyC's: they return True)."""
        with self._state:
            self._reading = False
            wake = [sleeper for sleeper in self._sleepers if sleeper.slot is None]
            for sleeper in self._sleepers:
                if sleeper.slot is not None and sleeper.slot.outcome is None:
                    wake.append(sleeper)
                    break
            for sleeper in wake:
                self._sleepers.remove(sleeper)
            self._state.notify_all()
        for sleeper in wake:
            sleeper.wake()

    # --------------------------------------------------------------- requests
    def submit(self, func: Callable[..., Any], *args: Any, cost: int = 0) -> bool:
        """Run ``func(*args)`` in this (reading) thread once it has passed the baton on."""
        self._job = (func, args)
        return True

    def _run_job(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        with self._state:
            self._running += 1
        try:
            self._run_level(func, args)
        finally:
            with self._state:
                self._running -= 1
                self._state.notify_all()

    def _run_level(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run a job, one level of a callback chain: in this thread, or in a new
        one once this thread runs `_LEVELS_PER_THREAD` levels inside each other."""
        depth = getattr(_levels, "depth", 0)
        if depth >= _LEVELS_PER_THREAD and self._reserve_chain_thread():
            try:
                _run_in_new_thread(func, args)
            finally:
                with self._state:
                    self._chain_threads -= 1
            return
        _levels.depth = depth + 1
        try:
            # Each job is a greenlet of its own: its identity tells a handler's
            # nested call apart (`serialize_requests`' turn).
            greenlet.greenlet(func).switch(*args)
        finally:
            _levels.depth = depth

    def _reserve_chain_thread(self) -> bool:
        """Count one more thread running a deep level of a chain, unless
        `_MAX_CHAIN_THREADS` already do (then False)."""
        with self._state:
            if self._chain_threads >= _MAX_CHAIN_THREADS:
                return False
            self._chain_threads += 1
            return True

    def spawn_owned(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` in a new daemon thread; errors go to the log."""

        def run() -> None:
            try:
                func(*args)
            except BaseException:
                self.logger.exception("%s: error in background thread", self.name)

        return _start_thread(run, ())

    def pause(self) -> None:
        """Nothing to do: other threads run while this one decodes (the GIL switches)."""

    # ---------------------------------------------------------------- writing
    def send(self, payload: Payload) -> None:
        """Write one whole frame, waiting for the send lock and the socket.

        Raises:
            EOFError: the connection is closed or broke.
        """
        self._raise_if_closed()
        self._outbox.append(payload)
        self._write_out(block=True)

    def send_nowait(self, payload: Payload) -> None:
        """Queue a frame; written now if no other thread is writing, else by that thread."""
        if self._closed:
            return
        self._outbox.append(payload)
        self._write_out(block=False)

    def send_later(self, payload: Payload) -> None:
        """`send_nowait`: no timer here would bound how long a deferred frame waits."""
        self.send_nowait(payload)

    def schedule_flush(self) -> None:
        """Deferred frames (DELs) go out with the next write: nothing may block here."""

    def note_deferred(self, size: int) -> None:
        self._deferred_bytes += size

    def _flush_queued(self) -> None:
        if self._outbox or self._deferred_bytes:
            self._write_out(block=False)

    def _write_out(self, block: bool) -> None:
        # Whoever holds the send lock writes everything queued, including
        # what other threads queued meanwhile, and checks again after
        # releasing the lock so nothing is left behind.
        while self._outbox or self._deferred_bytes:
            if not self._send_lock.acquire(block):
                return
            try:
                frames, self._outbox = self._outbox, []
                if self._take_deferred is not None and self._deferred_bytes:
                    self._deferred_bytes = 0
                    frames.extend(self._take_deferred())
                if frames and not self._closed:
                    self._channel.send_many(frames)
            except (EOFError, OSError) as exc:
                self.shutdown(EOFError(f"connection lost while writing: {exc}"))
                if block:
                    raise EOFError(f"connection {self.name} is closed: {exc}") from None
                return
            finally:
                self._send_lock.release()
            block = False

    # ----------------------------------------------------------------- misc
    def call_from_thread(
        self, func: Callable[..., Any], args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        return func(*args)

    def start_watchdog(self, interval: float, check: Callable[[], None]) -> None:
        """Call ``check()`` every `interval` seconds from a daemon thread until closed."""

        def watch() -> None:
            while not self.wait_closed(interval):
                try:
                    check()
                except BaseException:
                    self.logger.exception("%s: error in keepalive check", self.name)

        _start_thread(watch, ())

    # --------------------------------------------------------------- shutdown
    def shutdown(self, reason: BaseException) -> None:
        """Close at once (idempotent): pending slots fail with `EOFError`, sleepers wake."""
        with self._state:
            if not self._mark_closed(reason):
                return
            sleepers, self._sleepers = self._sleepers, []
            self._state.notify_all()
        self._fail_pending(reason)
        for sleeper in sleepers:
            sleeper.wake()
        self._outbox = []
        self._channel.close()
        self._closed_lock.release()
        self._run_on_closed(reason)


def _always() -> bool:
    return True


def _remaining(deadline: float | None) -> float:
    """Seconds left for ``lock.acquire(timeout=)``: -1 waits forever."""
    if deadline is None:
        return -1
    return max(0.0, deadline - time.monotonic())


def _run_in_new_thread(func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Run the job ``func(*args)`` in a new OS thread and wait for it here;
    what it raises is raised here, as if it had run in this thread."""
    finished = _allocate_lock()
    finished.acquire()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            greenlet.greenlet(func).switch(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the waiting thread
            failure.append(exc)
        finally:
            finished.release()

    _start_thread(run, ())
    finished.acquire()
    if failure:
        raise failure[0]


def _poll_timeout(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
