"""The greenlet runtime of one connection.

How it works (DESIGN.md, "The one idea"):

- One **reader greenlet** per connection is the only code that reads the
  channel. For every frame it calls the protocol's ``on_frame``; the protocol
  resolves reply slots (non-blocking) or hands requests back through
  `submit`, which starts each in its own handler greenlet, in arrival order.
  The reader never waits for a handler, so nested calls at any depth and any
  number of concurrent callers cannot deadlock or steal each other's replies.
- **Pending slots** are keyed by ``seq``; a caller waits only on its own slot.
- **Writes** are whole frames, never interleaved: the greenlet that finds the
  writer idle writes its frame and everything queued meanwhile in one go
  (small frames coalesce into one ``sendall``); others only queue. Code that
  must never block (the reader, hub callbacks, ``__del__``) queues and
  schedules a flusher greenlet.
- **Limits**: ``max_concurrent_requests`` handler greenlets, then up to
  ``max_queued_requests`` waiting requests; beyond that `submit` refuses and
  the protocol answers with an error. Replies never wait behind requests.
- **Shutdown** (EOF, reset, protocol error, close): every pending slot fails
  at once with `EOFError`, handler and helper greenlets are killed, and the
  protocol's ``on_closed`` runs exactly once.
- **Foreign OS threads** hand their call to this hub's thread and wait on an
  OS lock, bounded by a timeout.

The hub knows frames as opaque payloads; what they mean is `protocol`'s job.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import gevent
import greenlet
from gevent import Greenlet, GreenletExit
from gevent.hub import Waiter
from gevent.monkey import get_original

__all__ = ["ConnectionHub", "ForeignThreadError", "ReplySlot"]

_get_ident: Callable[[], int] = get_original("_thread", "get_ident")
_allocate_lock: Callable[[], Any] = get_original("_thread", "allocate_lock")


class ForeignThreadError(RuntimeError):
    """A call from another OS thread could not be run on the connection's hub."""


class ChannelLike(Protocol):
    def send(self, data: bytes) -> None: ...
    def recv(self) -> bytes: ...
    def close(self) -> None: ...


class ReplySlot:
    """Where the reply to one synchronous request lands.

    The reader calls `_deliver`; the waiting greenlet calls `wait`. The
    outcome is handed over through an attribute, not through the switch, so
    nothing else keeps a (possibly huge) reply alive once the caller drops it.
    """

    __slots__ = ("_outcome", "_waiter")

    def __init__(self) -> None:
        self._waiter = Waiter()
        self._outcome: tuple[bool, Any, tuple[Any, ...]] | None = None

    def _deliver(self, is_exc: bool, obj: Any, unresolved: tuple[Any, ...] = ()) -> None:
        if self._outcome is not None:
            return
        self._outcome = (is_exc, obj, unresolved)
        # Waiter.switch must run in the hub greenlet; the reader is not the hub.
        self._waiter.hub.loop.run_callback(self._waiter.switch, None)

    def wait(self, timeout: float | None) -> tuple[bool, Any, tuple[Any, ...]] | None:
        """The delivered ``(is_exc, obj, unresolved)``, or None on timeout."""
        if self._outcome is None:
            if timeout is None:
                self._waiter.get()
            else:
                # A bare loop timer costs a fraction of a gevent.Timeout here.
                timer = self._waiter.hub.loop.timer(max(0.0, timeout))
                timer.start(self._waiter.switch, None)
                try:
                    self._waiter.get()
                finally:
                    timer.close()
        outcome, self._outcome = self._outcome, None
        return outcome


class ConnectionHub:
    """Reader, writer, handler greenlets and pending slots of one connection."""

    # Slots: a server holds thousands of these.
    __slots__ = (
        "_bytes_in_flight", "_channel", "_close_reason", "_closed", "_closed_waiters",
        "_flush_scheduled", "_frame_waiters", "_gevent_hub", "_handlers", "_idle_waiters",
        "_nested_waits", "_on_closed",
        "_on_frame", "_outbox", "_outbox_bytes", "_owned", "_queued", "_reader",
        "_reader_began", "_switch_watch", "_take_deferred", "_thread_ident", "_timer",
        "_writing", "last_received", "logger", "max_concurrent_requests",
        "max_queued_requests", "max_request_bytes", "max_send_buffer", "name", "pending",
    )  # fmt: skip

    def __init__(
        self,
        channel: ChannelLike,
        on_frame: Callable[[bytes], None],
        on_closed: Callable[[BaseException], None],
        *,
        name: str,
        logger: logging.Logger,
        max_concurrent_requests: int,
        max_queued_requests: int,
        max_send_buffer: int,
        max_request_bytes: int = 1 << 62,
        take_deferred: Callable[[], list[bytes]] | None = None,
    ) -> None:
        self.name = name
        self.logger = logger
        self.pending: dict[int, Any] = {}
        self.max_concurrent_requests = max_concurrent_requests
        self.max_queued_requests = max_queued_requests
        self.max_send_buffer = max_send_buffer
        self.max_request_bytes = max_request_bytes
        self.last_received = time.monotonic()
        self._channel = channel
        self._on_frame = on_frame
        self._on_closed = on_closed
        self._take_deferred = take_deferred
        self._gevent_hub = gevent.get_hub()
        self._thread_ident = _get_ident()
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._writing = False
        self._flush_scheduled = False
        self._handlers: set[Greenlet] = set()
        self._queued: list[tuple[Callable[..., Any], tuple[Any, ...], int]] = []
        self._bytes_in_flight = 0
        self._nested_waits = 0
        self._owned: set[Greenlet] = set()
        self._closed = False
        self._close_reason: BaseException | None = None
        self._closed_waiters: list[Waiter] = []
        self._frame_waiters: list[Waiter] = []
        self._idle_waiters: list[Waiter] = []
        self._reader: Any = None
        self._reader_began = False
        self._switch_watch = _SwitchWatch.for_this_thread()
        self._timer: Any = None

    # ------------------------------------------------------------------ state
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> BaseException | None:
        return self._close_reason

    def is_hub_thread(self) -> bool:
        """True when called from the OS thread that owns this connection."""
        return _get_ident() == self._thread_ident

    def start(self) -> None:
        """Start the reader greenlet."""
        self._reader = gevent.spawn(self._read_loop)

    def serve_until_closed(self) -> None:
        """Block until the connection closes, reading in this greenlet if possible.

        If the reader greenlet has not begun yet, the caller becomes the
        reader instead (one greenlet per connection, not two: servers call
        this for every connection they hold).
        """
        reader = self._reader
        if reader is not None and not self._reader_began and not self._closed:
            reader.kill(block=False)  # it never ran: nothing to undo
            self._reader = gevent.getcurrent()
            self._read_loop()
        self.wait_closed()

    # ----------------------------------------------------------------- reader
    def _read_loop(self) -> None:
        self._reader_began = True
        recv = self._channel.recv
        on_frame = self._on_frame
        me = gevent.getcurrent()
        reason: BaseException
        try:
            while True:
                payload = recv()
                self.last_received = time.monotonic()
                on_frame(payload)
                del payload  # a big frame must not live on until the next one
                if self._frame_waiters:
                    self._wake(self._frame_waiters)
                if self._reader is not me:
                    return  # a request run inline blocked: a new reader took over
        except EOFError as exc:
            reason = exc
        except GreenletExit:
            reason = EOFError("connection closed")
        except OSError as exc:
            reason = EOFError(f"connection lost: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bad frame ends the connection; logged here
            self.logger.warning("%s: closing after protocol error: %s", self.name, exc)
            reason = exc
        self.shutdown(reason)

    def wait_frame(self, timeout: float | None) -> bool:
        """Wait until the reader handles a frame (True) or `timeout` passes.

        Raises:
            EOFError: the connection is (or becomes) closed.
        """
        self._raise_if_closed()
        woken = self._wait_listed(timeout, self._frame_waiters, self._closed_waiters)
        self._raise_if_closed()
        return woken

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is closed; False if `timeout` passed first."""
        return self._closed or self._wait_listed(timeout, self._closed_waiters)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request of the peer runs or waits here; False on timeout.

        A closed connection is idle.
        """
        if self._closed or not (self._handlers or self._queued):
            return True
        return self._wait_listed(timeout, self._idle_waiters, self._closed_waiters)

    def _wait_listed(self, timeout: float | None, *lists: list[Waiter]) -> bool:
        """Wait until a waiter put on `lists` is woken (True) or `timeout` passes."""
        waiter = Waiter()
        for waiters in lists:
            waiters.append(waiter)
        timer = gevent.Timeout._start_new_or_dummy(timeout)
        try:
            waiter.get()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            return False
        finally:
            timer.close()
            for waiters in lists:
                _discard(waiters, waiter)
        return True

    def _wake(self, waiters: list[Waiter]) -> None:
        for waiter in list(waiters):
            waiters.remove(waiter)
            self._gevent_hub.loop.run_callback(waiter.switch, None)

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise EOFError(f"connection {self.name} is closed")

    # --------------------------------------------------------------- handlers
    def submit(self, func: Callable[..., Any], *args: Any, cost: int = 0) -> bool:
        """Run ``func(*args)`` in a handler greenlet, within the limits.

        `cost` is the request's size in bytes; requests running or queued may
        hold at most ``max_request_bytes`` together (one is always admitted).
        Returns False when a limit is full; the caller answers the request
        with an error then.
        """
        if self._bytes_in_flight and self._bytes_in_flight + cost > self.max_request_bytes:
            return False
        if self._has_free_handler() and not self._queued:
            self._bytes_in_flight += cost
            if self._can_run_inline():
                self._run_inline(func, args, cost)
            else:
                self._start_handler(func, args, cost)
            return True
        if len(self._queued) < self.max_queued_requests:
            self._bytes_in_flight += cost
            self._queued.append((func, args, cost))
            return True
        return False

    def _has_free_handler(self) -> bool:
        """A handler may start: fewer than the limit are busy.

        Handlers waiting for the peer's answer to their own nested call do
        not count (else a callback chain deeper than the limit would wait on
        itself), but all handlers together stay under the running and queued
        limits combined.
        """
        running = len(self._handlers)
        return (
            running - self._nested_waits < self.max_concurrent_requests
            and running < self.max_concurrent_requests + self.max_queued_requests
        )

    def nested_wait(self) -> bool:
        """Note that the current greenlet waits for a reply; True if it is a handler.

        Pair a True result with `nested_wait_done`.
        """
        current = gevent.getcurrent()
        if current in self._handlers or current is self._reader:
            self._nested_waits += 1
            return True
        return False

    def nested_wait_done(self) -> None:
        self._nested_waits -= 1
        if self._queued and not self._closed and self._has_free_handler():
            self._start_handler(*self._queued.pop(0))

    def _start_handler(self, func: Callable[..., Any], args: tuple[Any, ...], cost: int) -> None:
        greenlet = Greenlet(self._run_handler, func, args, cost)
        self._handlers.add(greenlet)
        greenlet.start()

    def _run_handler(self, func: Callable[..., Any], args: tuple[Any, ...], cost: int) -> None:
        try:
            func(*args)
        finally:
            self._finish_handler(gevent.getcurrent(), cost)

    def _can_run_inline(self) -> bool:
        return (
            self._switch_watch is not None
            and self._switch_watch.is_installed()
            and gevent.getcurrent() is self._reader
        )

    def _run_inline(self, func: Callable[..., Any], args: tuple[Any, ...], cost: int) -> None:
        """Run a request in the reader greenlet itself, saving a greenlet start.

        Most requests never block. If this one does (any switch away from
        the reader), `_hand_over_reading` starts a new reader at that moment
        and this greenlet finishes the request as an ordinary handler.
        """
        reader = gevent.getcurrent()
        watch = self._switch_watch
        assert watch is not None
        watch.watch(reader, self._hand_over_reading)
        try:
            func(*args)
        finally:
            if watch.unwatch(reader):
                self._bytes_in_flight -= cost
            else:
                self._finish_handler(reader, cost)

    def _hand_over_reading(self, old_reader: Any) -> None:
        # Called during a greenlet switch: must not switch or raise.
        self._handlers.add(old_reader)
        if self._closed:
            return
        self._reader = Greenlet(self._read_loop)
        self._reader.start()

    def _finish_handler(self, greenlet: Any, cost: int) -> None:
        self._handlers.discard(greenlet)
        self._bytes_in_flight -= cost
        if self._queued and not self._closed and self._has_free_handler():
            self._start_handler(*self._queued.pop(0))
        if self._idle_waiters and not self._handlers and not self._queued:
            self._wake(self._idle_waiters)

    def is_busy(self) -> bool:
        """True while calls are in flight either way (ours pending, or the peer's running)."""
        return bool(self.pending or self._handlers or self._queued)

    @property
    def running_handlers(self) -> int:
        return len(self._handlers)

    @property
    def nested_waits(self) -> int:
        return self._nested_waits

    @property
    def queued_requests(self) -> int:
        return len(self._queued)

    @property
    def bytes_in_flight(self) -> int:
        return self._bytes_in_flight

    def spawn_owned(self, func: Callable[..., Any], *args: Any) -> Greenlet:
        """Spawn a helper greenlet that this hub kills on shutdown."""
        greenlet = Greenlet(self._run_owned, func, args)
        self._owned.add(greenlet)
        greenlet.start()
        return greenlet

    def _run_owned(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            func(*args)
        except GreenletExit:
            raise
        except Exception:  # an owned helper has no caller: its error goes to the log
            self.logger.exception("%s: error in background greenlet", self.name)
        finally:
            self._owned.discard(gevent.getcurrent())

    # ----------------------------------------------------------------- writer
    def send(self, payload: bytes) -> None:
        """Write one whole frame; may block the calling greenlet.

        Raises:
            EOFError: the connection is closed.
        """
        self._raise_if_closed()
        self._enqueue(payload)
        if not self._writing:
            self._flush()

    def send_nowait(self, payload: bytes) -> None:
        """Queue one frame for writing without ever blocking or switching."""
        if self._closed:
            return
        self._enqueue(payload)
        self.schedule_flush()

    def _enqueue(self, payload: bytes) -> None:
        self._outbox.append(payload)
        self._outbox_bytes += len(payload)
        if self._outbox_bytes > self.max_send_buffer and self._writing:
            # The peer is not reading: buffering on would grow without bound.
            self.logger.warning(
                "%s: closing: %d bytes queued for a peer that does not read (max_send_buffer=%d)",
                self.name,
                self._outbox_bytes,
                self.max_send_buffer,
            )
            self.shutdown(EOFError("peer stopped reading; send buffer limit reached"))

    def schedule_flush(self) -> None:
        """Make sure queued and deferred frames get written soon.

        Safe from ``__del__`` and from other OS threads: it only schedules.
        """
        if self._flush_scheduled or self._closed:
            return
        self._flush_scheduled = True
        loop = self._gevent_hub.loop
        if _get_ident() == self._thread_ident:
            loop.run_callback(self._flush_from_hub)
        else:
            loop.run_callback_threadsafe(self._flush_from_hub)

    def _flush_from_hub(self) -> None:
        # Runs in the hub greenlet, which must not block: write from a greenlet.
        self._flush_scheduled = False
        if self._writing or self._closed:
            return
        self.spawn_owned(self._flush)

    def _flush(self) -> None:
        self._writing = True
        try:
            while not self._closed:
                frames = self._collect_frames()
                if not frames:
                    break
                self._write_frames(frames)
        except (EOFError, OSError) as exc:
            self.shutdown(EOFError(f"connection lost while writing: {exc}"))
        except BaseException as exc:
            # Interrupted mid-write (a Timeout or kill of the writing greenlet):
            # a partial frame cannot be taken back, so the stream is unusable.
            if not self._closed:
                self.logger.warning("%s: closing: write interrupted by %r", self.name, exc)
            self.shutdown(EOFError(f"write interrupted by {exc!r}"))
            raise
        finally:
            self._writing = False

    def _collect_frames(self) -> list[bytes]:
        # Queued frames go before deferred ones (DELs): a frame queued earlier
        # may refer to the object a DEL releases.
        frames = self._outbox
        self._outbox = []
        self._outbox_bytes = 0
        if self._take_deferred is not None:
            frames.extend(self._take_deferred())
        return frames

    def _write_frames(self, frames: list[bytes]) -> None:
        send_many = getattr(self._channel, "send_many", None)
        if send_many is not None and len(frames) > 1:
            send_many(frames)
            return
        for frame in frames:
            self._channel.send(frame)

    # --------------------------------------------------------- foreign threads
    def call_from_thread(
        self, func: Callable[..., Any], args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        """Run ``func(*args)`` on this hub's thread and wait for it here.

        Raises:
            ForeignThreadError: the hub did not run the call within `timeout`
                (its thread is blocked outside gevent).
        """
        done = _allocate_lock()
        done.acquire()
        outcome: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                outcome.append((False, func(*args)))
            except BaseException as exc:  # noqa: BLE001 - carried to the calling thread
                outcome.append((True, exc))
            finally:
                done.release()

        self._gevent_hub.loop.run_callback_threadsafe(self.spawn_owned, run)
        if not done.acquire(timeout=-1 if timeout is None else timeout):
            raise ForeignThreadError(
                f"{self.name}: the connection's hub thread did not run the call within "
                f"{timeout} s; its thread may be blocked outside gevent"
            )
        is_exc, value = outcome[0]
        if is_exc:
            raise value
        return value

    # --------------------------------------------------------------- watchdog
    def start_watchdog(self, interval: float, check: Callable[[], None]) -> None:
        """Call ``check()`` in an owned greenlet every `interval` seconds."""
        self._timer = self._gevent_hub.loop.timer(interval, interval)
        self._timer.start(self._on_watchdog, check)

    def _on_watchdog(self, check: Callable[[], None]) -> None:
        if not self._closed:
            self.spawn_owned(check)

    # --------------------------------------------------------------- shutdown
    def shutdown(self, reason: BaseException) -> None:
        """Close the connection at once; idempotent.

        Fails every pending slot with `EOFError`, kills the connection's
        greenlets (not the caller), closes the channel, runs ``on_closed``.
        """
        if self._closed:
            return
        self._closed = True
        # Kept without its traceback: its frames may hold a whole frame's bytes.
        self._close_reason = reason.with_traceback(None)
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
        pending, self.pending = self.pending, {}
        for slot in pending.values():
            slot._deliver(True, EOFError(f"connection closed: {reason}"))
        self._queued.clear()
        self._bytes_in_flight = 0
        self._outbox = []
        self._channel.close()
        self._kill_greenlets()
        self._wake(self._closed_waiters)
        self._frame_waiters.clear()
        try:
            self._on_closed(reason)
        except Exception:  # on_closed runs user code (on_disconnect): log, never raise
            self.logger.exception("%s: error while closing", self.name)

    def _kill_greenlets(self) -> None:
        current = gevent.getcurrent()
        doomed = [
            g
            for g in (*self._handlers, *self._owned, self._reader)
            if g is not None and g is not current and not g.dead
        ]
        self._handlers.clear()
        self._owned.clear()
        if doomed:
            gevent.killall(doomed, block=False)


class _SwitchWatch:
    """Calls back when a watched greenlet switches away (greenlet's trace hook).

    One per OS thread, installed by the first connection of that thread; it
    chains to any trace function installed before it. Hubs check
    `is_installed` before relying on it, so a later ``greenlet.settrace`` by
    someone else only turns the inline fast path off.
    """

    _by_thread: ClassVar[dict[int, _SwitchWatch]] = {}

    def __init__(self) -> None:
        self._watched: dict[Any, Callable[[Any], None]] = {}
        self._trace = self._on_switch
        self._previous = greenlet.settrace(self._trace)

    @classmethod
    def for_this_thread(cls) -> _SwitchWatch | None:
        ident = _get_ident()
        watch = cls._by_thread.get(ident)
        if watch is None:
            watch = cls._by_thread[ident] = cls()
        return watch

    def is_installed(self) -> bool:
        return greenlet.gettrace() is self._trace

    def watch(self, glet: Any, on_leave: Callable[[Any], None]) -> None:
        self._watched[glet] = on_leave

    def unwatch(self, glet: Any) -> bool:
        """Stop watching; False if the greenlet left (and was reported) meanwhile."""
        return self._watched.pop(glet, None) is not None

    def _on_switch(self, event: str, args: tuple[Any, Any]) -> None:
        if self._watched:
            on_leave = self._watched.pop(args[0], None)
            if on_leave is not None:
                on_leave(args[0])
        if self._previous is not None:
            self._previous(event, args)


def _discard(waiters: list[Waiter], waiter: Waiter) -> None:
    with contextlib.suppress(ValueError):
        waiters.remove(waiter)
