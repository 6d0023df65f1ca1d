"""The greenlet runtime of one connection (code under gevent).

How it works (DESIGN.md, "The one idea" and "Reading: one reader at a time"):

- **One reader at a time.** Whoever holds the connection's *read baton* is
  the only code reading the channel. A greenlet waiting for its own reply
  takes the baton when nobody is reading, reads frames itself (replies for
  others go to their slots, requests to handlers) until its reply is there,
  and then passes the baton to the next waiting caller, or back to the
  connection's **background reader** greenlet, which reads whenever no
  caller does (so the peer's requests are served at any time). A reply
  read by its own caller costs no greenlet switch; the background reader
  keeps serving idle connections.
- **Replies** land in `ReplySlot`s keyed by ``seq``; a caller waits only on
  its own slot, so nothing is stolen and nothing deadlocks, at any depth.
- **Requests** run in handler greenlets within the limits of `_admission`,
  or inline in the background reader: if such a request blocks (any switch
  away from the reader), a new background reader takes over at that moment.
- **Fairness.** A baton holder yields to other greenlets after
  `FAIR_FRAMES` frames handled without waiting, so one busy peer cannot
  starve the other connections of the process.
- **Writes** are whole frames through `_writer.Writer`.
- **Shutdown** (EOF, reset, protocol error, close): every pending slot fails
  at once with `EOFError`, handler and helper greenlets are killed, and the
  protocol's ``on_closed`` runs exactly once.
- **Other OS threads** hand their call to this hub's thread (`call_from_thread`).

The hub knows frames as opaque payloads; what they mean is `protocol`'s job.
A connection made outside gevent uses `grpyc._threadhub.ThreadHub` instead,
which offers the same methods.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Protocol

import gevent
import greenlet
from gevent import Greenlet, GreenletExit
from gevent.hub import Waiter
from gevent.monkey import get_original

from grpyc._admission import Admission
from grpyc._writer import Writer
from grpyc.config import Limits
from grpyc.lib import in_gevent

__all__ = ["ChannelLike", "ConnectionHub", "ForeignThreadError", "ReplySlot", "kill_all"]

_get_ident: Callable[[], int] = get_original("_thread", "get_ident")
_allocate_lock: Callable[[], Any] = get_original("_thread", "allocate_lock")

# A baton holder yields to the other greenlets after this many frames handled
# without waiting. Small frames take ~10-30 us each here, so one busy peer
# holds the CPU for about a millisecond at a time.
FAIR_FRAMES = 64

# Why a waiting greenlet was woken.
_READABLE = 1
_BATON = 2
_TIMEOUT = 3
_CLOSED = 4
_DELIVERED = 5

# RPyC's ``serve()`` returns True for each message it handled. Messages the
# background reader handled while nobody served are reported to later
# ``serve``/``poll`` calls, at most this many.
_MAX_UNREPORTED = 1024


class ForeignThreadError(RuntimeError):
    """A call from another OS thread could not be run on the connection's hub."""


class ChannelLike(Protocol):
    """What the runtime needs of a channel (`grpyc.channel.Channel` has it all)."""

    def send(self, data: bytes) -> None: ...
    def recv(self) -> bytes: ...
    def next_buffered(self) -> bytes | None: ...
    def fill(self) -> None: ...
    def has_pending_input(self) -> bool: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class ReplySlot:
    """Where the reply to one request lands.

    The greenlet that reads the reply calls `deliver`; the caller waits on
    its hub. The outcome is handed over through an attribute, not through the
    switch, so nothing else keeps a (possibly huge) reply alive once the
    caller drops it.
    """

    __slots__ = ("outcome", "waiter")

    def __init__(self) -> None:
        self.outcome: tuple[bool, Any, tuple[Any, ...]] | None = None
        # Set while the caller sleeps on this slot as a follower.
        self.waiter: Waiter | None = None

    def deliver(self, is_exc: bool, obj: Any, unresolved: tuple[Any, ...] = ()) -> None:
        if self.outcome is not None:
            return
        self.outcome = (is_exc, obj, unresolved)
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            # Waiter.switch must run in the hub greenlet, not in the reader.
            waiter.hub.loop.run_callback(waiter.switch, _DELIVERED)


def kill_all(greenlets: list[Any]) -> None:
    """Kill the given greenlets except the current one, without waiting."""
    current = gevent.getcurrent()
    doomed = [glet for glet in greenlets if glet is not None and glet is not current]
    doomed = [glet for glet in doomed if not glet.dead]
    if doomed:
        gevent.killall(doomed, block=False)


class ConnectionHub:
    """Reading baton, writer, handler greenlets and pending slots of one connection."""

    # Slots: a server holds thousands of these.
    __slots__ = (
        "_admission",
        "_channel",
        "_close_reason",
        "_closed",
        "_closed_waiters",
        "_followers",
        "_frame_waiters",
        "_frames_unreported",
        "_gevent_hub",
        "_holder",
        "_holder_waiter",
        "_holder_waiting",
        "_idle_waiters",
        "_nested_leads",
        "_on_closed",
        "_on_frame",
        "_owned",
        "_pace",
        "_reader",
        "_reader_began",
        "_reader_idle",
        "_reader_waiter",
        "_spared",
        "_switch_watch",
        "_thread_ident",
        "_timer",
        "_watcher",
        "_writer",
        "last_received",
        "logger",
        "name",
        "pending",
    )  # fmt: skip

    def __init__(
        self,
        channel: ChannelLike,
        on_frame: Callable[[bytes], None],
        on_closed: Callable[[BaseException], None],
        *,
        name: str,
        logger: logging.Logger,
        limits: Limits,
        take_deferred: Callable[[], list[bytes]] | None = None,
    ) -> None:
        self.name = name
        self.logger = logger
        self.pending: dict[int, Any] = {}
        self.last_received = time.monotonic()
        self._channel = channel
        self._on_frame = on_frame
        self._on_closed = on_closed
        self._gevent_hub = gevent.get_hub()
        self._thread_ident = _get_ident()
        self._admission = Admission(limits, self._on_idle)
        self._writer = Writer(
            channel,
            gevent_hub=self._gevent_hub,
            name=name,
            logger=logger,
            max_send_buffer=limits.max_send_buffer,
            take_deferred=take_deferred,
            spawn=self.spawn_owned,
            fail=self.shutdown,
        )
        self._owned: set[Greenlet] = set()
        self._spared: set[Any] = set()
        self._closed = False
        self._close_reason: BaseException | None = None
        self._closed_waiters: list[Waiter] = []
        self._frame_waiters: list[Waiter] = []
        self._idle_waiters: list[Waiter] = []
        self._frames_unreported = 0
        self._reader: Any = None
        self._reader_began = False
        # Set while the background reader sleeps: idle (holding the baton,
        # nothing buffered, waiting for bytes; a caller may take the baton),
        # or parked without the baton until it comes back.
        self._reader_waiter: Waiter | None = None
        self._reader_idle = False
        self._holder: Any = None
        self._holder_waiter: Waiter | None = None
        self._holder_waiting = False
        self._followers: list[tuple[Any, Waiter]] = []
        self._nested_leads = 0
        # Set when a request read here went to a new handler greenlet: the
        # holder lets it run to its first wait before reading on, so the
        # limits see it waiting (nested) or busy before the next request.
        self._pace = False
        self._watcher: Any = None
        self._switch_watch = _SwitchWatch.for_this_thread()
        self._timer: Any = None

    # ------------------------------------------------------------------ state
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> BaseException | None:
        return self._close_reason

    @property
    def limits(self) -> Limits:
        return self._admission.limits

    def is_hub_thread(self) -> bool:
        """True when called from the OS thread that owns this connection."""
        return _get_ident() == self._thread_ident

    def is_busy(self) -> bool:
        """True while calls are in flight either way (ours pending, or the peer's running)."""
        return bool(self.pending) or not self._admission.is_idle()

    def overload_message(self) -> str:
        return self._admission.overload_message()

    @property
    def running_handlers(self) -> int:
        """Requests of the peer running here now (waiting on nested calls included)."""
        return self._admission.running

    def start(self) -> None:
        """Start the background reader greenlet."""
        self._reader = Greenlet(self._read_loop)
        self._holder = self._reader
        self._reader.start()

    def serve_until_closed(self) -> None:
        """Block until the connection closes, reading in this greenlet if possible.

        If the background reader has not begun yet, the caller becomes the
        reader instead (one greenlet per connection, not two: servers call
        this for every connection they hold).
        """
        reader = self._reader
        if reader is not None and not self._reader_began and not self._closed:
            reader.kill(block=False)  # it never ran: nothing to undo
            self._reader = self._holder = gevent.getcurrent()
            self._read_loop()
        self.wait_closed()

    @contextlib.contextmanager
    def sparing(self, glet: Any) -> Iterator[None]:
        """Within this block, `shutdown` does not kill `glet` (e.g. a callback calling close())."""
        self._spared.add(glet)
        try:
            yield
        finally:
            self._spared.discard(glet)

    def new_slot(self) -> ReplySlot:
        return ReplySlot()

    # ----------------------------------------------------------------- replies
    def expect_reply(self, seq: int, slot: Any) -> None:
        """Deliver the reply to request `seq` to `slot` (its ``deliver`` method)."""
        self.pending[seq] = slot

    def take_reply(self, seq: int) -> Any:
        """The slot waiting for the reply to `seq`, no longer pending; None if nobody waits."""
        return self.pending.pop(seq, None)

    def call(self, seq: int, payload: bytes, timeout: float | None) -> Any:
        """Send request `payload` and wait for its reply.

        Returns:
            The delivered ``(is_exc, obj, unresolved)``, or None on timeout.

        Raises:
            EOFError: the connection is closed.
        """
        self._raise_if_closed()
        slot = ReplySlot()
        self.pending[seq] = slot
        try:
            self._writer.send(payload)
            return self.wait_reply(slot, timeout)
        finally:
            self.pending.pop(seq, None)

    def wait_reply(self, slot: ReplySlot, timeout: float | None) -> Any:
        """Wait until `slot` is delivered, reading frames meanwhile if nobody else does.

        Returns:
            The delivered ``(is_exc, obj, unresolved)``, or None on timeout.
        """
        if slot.outcome is None:
            deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
            me = gevent.getcurrent()
            nested = self._admission.nested_wait(me)
            try:
                self._wait_for(slot, me, deadline)
            finally:
                if nested:
                    self._admission.nested_done()
        return slot.outcome

    def _wait_for(self, slot: ReplySlot, me: Any, deadline: float | None) -> None:
        while slot.outcome is None and not self._closed:
            if self._holder is me or self._may_take_baton():
                self._take_baton(me)
                try:
                    self._lead_nested(slot, deadline)
                finally:
                    if self._holder is me and me is not self._reader:
                        self._pass_baton()
            elif not self._follow(slot, me, deadline):
                return
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _may_take_baton(self) -> bool:
        holder = self._holder
        return holder is None or (holder is self._reader and self._reader_idle)

    def _take_baton(self, me: Any) -> None:
        # An idle background reader stays asleep: the readable watcher now
        # wakes `me` instead, until the baton goes back (`_pass_baton`).
        self._holder = me
        self._holder_waiting = False
        self._reader_idle = False

    def _pass_baton(self) -> None:
        """Give the baton to the first waiting caller, or back to the background reader."""
        if self._closed:
            self._holder = None
            return
        if self._followers:
            follower, waiter = self._followers.pop(0)
            self._holder = follower
            self._holder_waiting = False
            self._gevent_hub.loop.run_callback(waiter.switch, _BATON)
            return
        self._holder = self._reader
        reader_waiter = self._reader_waiter
        if reader_waiter is None:
            return  # the reader is running; it reads when it gets back to its loop
        if self._channel_has_buffered():
            self._reader_waiter = None
            self._gevent_hub.loop.run_callback(reader_waiter.switch, _BATON)
            return
        self._holder_waiter = reader_waiter
        self._holder_waiting = True
        self._reader_idle = True
        self._start_watcher()

    def _channel_has_buffered(self) -> bool:
        has_frame = getattr(self._channel, "has_buffered_frame", None)
        return bool(has_frame()) if has_frame is not None else False

    def _follow(self, slot: ReplySlot, me: Any, deadline: float | None) -> bool:
        """Sleep until our reply, the baton or the deadline comes; False on timeout."""
        waiter = Waiter(self._gevent_hub)
        entry = (me, waiter)
        slot.waiter = waiter
        self._followers.append(entry)
        try:
            reason = self._sleep(waiter, deadline)
        finally:
            slot.waiter = None
            if entry in self._followers:
                self._followers.remove(entry)
            if self._holder is me and slot.outcome is not None:
                self._pass_baton()  # offered the baton just as our reply came
        if reason == _TIMEOUT and self._holder is me:
            self._pass_baton()  # offered the baton just as the deadline passed
        return reason != _TIMEOUT

    def _sleep(self, waiter: Waiter, deadline: float | None) -> Any:
        """Wait on `waiter` until it is switched or `deadline` passes (_TIMEOUT)."""
        if deadline is None:
            return waiter.get()
        loop = self._gevent_hub.loop
        loop.update_now()  # the loop's clock is stale after a blocking call outside gevent
        timer = loop.timer(max(0.0, deadline - time.monotonic()))
        timer.start(waiter.switch, _TIMEOUT)
        try:
            return waiter.get()
        finally:
            timer.close()

    # ----------------------------------------------------------------- reading
    def _read_loop(self) -> None:
        """The background reader: reads whenever no caller holds the baton."""
        self._reader_began = True
        me = gevent.getcurrent()
        reason: BaseException
        try:
            while not self._closed and self._reader is me:
                if self._holder is me:
                    self._lead(None, None, me)
                else:
                    self._park(me)
            return
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

    def _park(self, me: Any) -> None:
        """Sleep without the baton until it comes back to the reader."""
        waiter = Waiter(self._gevent_hub)
        self._reader_waiter = waiter
        try:
            self._sleep(waiter, None)
        finally:
            if self._reader_waiter is waiter:
                self._reader_waiter = None
            self._reader_idle = False

    def _lead_nested(self, slot: ReplySlot, deadline: float | None) -> None:
        """Read as a caller holding the baton, until `slot` is delivered or `deadline`."""
        me = gevent.getcurrent()
        watch = self._switch_watch
        # A request run inline in the reader may wait for a reply: the waits
        # while reading are ours, not the request blocking.
        suspended = watch.suspend(me)
        self._nested_leads += 1
        try:
            self._lead(slot, deadline, me)
        except (EOFError, OSError) as exc:
            self.shutdown(exc if isinstance(exc, EOFError) else EOFError(f"connection lost: {exc}"))
        except GreenletExit:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad frame ends the connection; logged here
            self.logger.warning("%s: closing after protocol error: %s", self.name, exc)
            self.shutdown(exc)
        finally:
            self._nested_leads -= 1
            watch.resume(me, suspended)

    def _lead(self, slot: ReplySlot | None, deadline: float | None, me: Any) -> None:
        """Handle frames while holding the baton.

        Returns when `slot` is delivered, `deadline` passes, the connection
        closes, or the baton went to another greenlet (the background reader,
        `slot` None, hands it to a waiting caller rather than wait itself).
        """
        channel = self._channel
        on_frame = self._on_frame
        is_reader = slot is None
        budget = FAIR_FRAMES
        while self._holder is me and not self._closed:
            payload = channel.next_buffered()
            if payload is None:
                if not is_reader:
                    if slot.outcome is not None:  # type: ignore[union-attr]
                        return
                elif self._followers:
                    self._pass_baton()  # a waiting caller reads its own reply
                    return
                reason = self._wait_readable(me, is_reader, deadline)
                if reason == _READABLE:
                    channel.fill()
                elif reason != _BATON:
                    return
                budget = FAIR_FRAMES
                continue
            self.last_received = time.monotonic()
            on_frame(payload)
            del payload  # a big frame must not live on until the next one
            if self._pace:
                self._pace = False
                self._yield(me)
                budget = FAIR_FRAMES
            if is_reader and not self._followers:
                self._frames_unreported = min(self._frames_unreported + 1, _MAX_UNREPORTED)
            if self._frame_waiters:
                self._wake(self._frame_waiters)
            if not is_reader and slot.outcome is not None:  # type: ignore[union-attr]
                return
            budget -= 1
            if budget <= 0:
                self._yield(me)
                budget = FAIR_FRAMES

    def _wait_readable(self, me: Any, idle: bool, deadline: float | None) -> Any:
        """Wait until the channel is readable; an idle reader may also get _BATON back."""
        if self._channel.has_pending_input():
            return _READABLE
        waiter = Waiter(self._gevent_hub)
        self._holder_waiter = waiter
        self._holder_waiting = True
        if idle:
            self._reader_waiter = waiter
            self._reader_idle = True
        self._start_watcher()
        try:
            return self._sleep(waiter, deadline)
        finally:
            if idle:
                if self._reader_waiter is waiter:
                    self._reader_waiter = None
                self._reader_idle = False
            if self._holder is me:
                self._holder_waiting = False

    def _start_watcher(self) -> None:
        watcher = self._watcher
        if watcher is None:
            watcher = self._watcher = self._gevent_hub.loop.io(self._channel.fileno(), 1)
        if not watcher.active:
            watcher.start(self._on_readable)

    def _on_readable(self) -> None:
        # Runs in the hub greenlet. Level-triggered: stop until someone waits again.
        self._watcher.stop()
        if self._holder_waiting and self._holder_waiter is not None:
            self._holder_waiting = False
            self._holder_waiter.switch(_READABLE)

    def pause(self) -> None:
        """Let the other greenlets run for a moment (a long decode calls this as it goes).

        The baton stays with the caller; the pause is not the request blocking.
        """
        self._yield(gevent.getcurrent())

    def _yield(self, me: Any) -> None:
        waiter = Waiter(self._gevent_hub)
        self._gevent_hub.loop.run_callback(waiter.switch, None)
        suspended = self._switch_watch.suspend(me)
        try:
            waiter.get()
        finally:
            self._switch_watch.resume(me, suspended)

    # ----------------------------------------------------------------- serving
    def wait_frame(self, timeout: float | None) -> bool:
        """Wait until a frame is handled (True), or `timeout` passes.

        A frame handled since the last call counts at once (RPyC's ``serve``
        returns True for each message it handled).

        Raises:
            EOFError: the connection is (or becomes) closed.
        """
        self._raise_if_closed()
        if self._frames_unreported:
            self._frames_unreported -= 1
            return True
        woken = self._wait_listed(timeout, self._frame_waiters, self._closed_waiters)
        self._raise_if_closed()
        if woken and self._frames_unreported:
            self._frames_unreported -= 1
        return woken

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is closed; False if `timeout` passed first."""
        return self._closed or self._wait_listed(timeout, self._closed_waiters)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request of the peer runs or waits here; False on timeout.

        A closed connection is idle.
        """
        if self._closed or self._admission.is_idle():
            return True
        return self._wait_listed(timeout, self._idle_waiters, self._closed_waiters)

    def _on_idle(self) -> None:
        if self._idle_waiters:
            self._wake(self._idle_waiters)

    def _wait_listed(self, timeout: float | None, *lists: list[Waiter]) -> bool:
        """Wait until a waiter put on `lists` is woken (True) or `timeout` passes."""
        waiter = Waiter(self._gevent_hub)
        for waiters in lists:
            waiters.append(waiter)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        try:
            return self._sleep(waiter, deadline) != _TIMEOUT
        finally:
            for waiters in lists:
                if waiter in waiters:
                    waiters.remove(waiter)

    def _wake(self, waiters: list[Waiter]) -> None:
        for waiter in list(waiters):
            waiters.remove(waiter)
            self._gevent_hub.loop.run_callback(waiter.switch, None)

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise EOFError(f"connection {self.name} is closed")

    # ---------------------------------------------------------------- handlers
    def submit(self, func: Callable[..., Any], *args: Any, cost: int = 0) -> bool:
        """Run ``func(*args)`` for a request of `cost` bytes, within the limits.

        Returns False when a limit is full; the caller answers the request
        with an error then.
        """
        decision = self._admission.admit(cost)
        if decision is None:
            return False
        run_now, charged = decision
        if not run_now:
            self._admission.enqueue(func, args, charged)
        elif self._can_run_inline():
            self._run_inline(func, args, charged)
        else:
            self._admission.start(func, args, charged)
            self._pace = self._holder is gevent.getcurrent()
        return True

    def _can_run_inline(self) -> bool:
        watch = self._switch_watch
        return (
            self._nested_leads == 0 and watch.is_installed() and gevent.getcurrent() is self._reader
        )

    def _run_inline(self, func: Callable[..., Any], args: tuple[Any, ...], charged: int) -> None:
        """Run a request in the background reader itself, saving a greenlet start.

        Most requests never block. If this one does (any switch away from
        the reader other than its own waits for a reply),
        `_hand_over_reading` starts a new reader at that moment and this
        greenlet finishes the request as an ordinary handler.
        """
        reader = gevent.getcurrent()
        watch = self._switch_watch
        self._admission.adopt(reader)
        watch.watch(reader, self._hand_over_reading)
        try:
            func(*args)
        finally:
            watch.unwatch(reader)
            self._admission.finish(reader, charged)

    def _hand_over_reading(self, old_reader: Any) -> None:
        # Called during a greenlet switch: must not switch or raise.
        if self._closed:
            return
        self._reader = Greenlet(self._read_loop)
        if self._holder is old_reader:
            self._holder = self._reader
        self._reader.start()

    def spawn_owned(self, func: Callable[..., Any], *args: Any) -> Greenlet:
        """Spawn a helper greenlet that this hub kills on shutdown."""
        glet = Greenlet(self._run_owned, func, args)
        self._owned.add(glet)
        glet.start()
        return glet

    def _run_owned(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            func(*args)
        except GreenletExit:
            pass  # killed at shutdown
        except BaseException:
            self.logger.exception("%s: error in background greenlet", self.name)
        finally:
            self._owned.discard(gevent.getcurrent())

    # ------------------------------------------------------------------ writer
    def send(self, payload: bytes) -> None:
        """Write one whole frame; may block the calling greenlet.

        Raises:
            EOFError: the connection is closed.
        """
        self._raise_if_closed()
        self._writer.send(payload)

    def send_nowait(self, payload: bytes) -> None:
        """Queue one frame for writing without ever blocking or switching."""
        if self._closed:
            return
        self._writer.enqueue(payload)
        self._writer.schedule_flush()

    def schedule_flush(self) -> None:
        """Make sure queued and deferred frames get written soon (safe from ``__del__``)."""
        self._writer.schedule_flush()

    def note_deferred(self, size: int) -> None:
        """`size` more bytes wait in deferred frames; they count against the send budget."""
        self._writer.note_deferred(size)

    # ---------------------------------------------------------- foreign threads
    def call_from_thread(
        self, func: Callable[..., Any], args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        """Run ``func(*args)`` on this hub's thread and wait for it here.

        Raises:
            ForeignThreadError: the hub did not start the call within `timeout`
                (its thread is blocked outside gevent).
        """
        return _ThreadCall(self, func, args).run(timeout)

    # ----------------------------------------------------------------- watchdog
    def start_watchdog(self, interval: float, check: Callable[[], None]) -> None:
        """Call ``check()`` in an owned greenlet every `interval` seconds."""
        self._timer = self._gevent_hub.loop.timer(interval, interval)
        self._timer.start(self._on_watchdog, check)

    def _on_watchdog(self, check: Callable[[], None]) -> None:
        if not self._closed:
            self.spawn_owned(check)

    # ----------------------------------------------------------------- shutdown
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
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
        pending, self.pending = self.pending, {}
        for slot in pending.values():
            slot.deliver(True, EOFError(f"connection closed: {reason}"))
        self._wake_baton_holder()
        self._writer.close()
        self._channel.close()
        handlers = self._admission.close()
        kill_all([g for g in (*handlers, *self._owned, self._reader) if g not in self._spared])
        self._owned.clear()
        self._wake(self._closed_waiters)
        self._wake(self._idle_waiters)
        self._frame_waiters.clear()
        try:
            self._on_closed(reason)
        except Exception:  # on_closed runs user code (on_disconnect): log, never raise
            self.logger.exception("%s: error while closing", self.name)

    def _wake_baton_holder(self) -> None:
        if self._holder_waiting and self._holder_waiter is not None:
            self._holder_waiting = False
            self._gevent_hub.loop.run_callback(self._holder_waiter.switch, _CLOSED)
        for _follower, waiter in self._followers:
            self._gevent_hub.loop.run_callback(waiter.switch, _CLOSED)
        self._followers.clear()


class _ThreadCall:
    """One call handed from another OS thread to a hub, and the wait for its outcome."""

    __slots__ = ("_args", "_done", "_func", "_hub", "_notify", "_outcome")

    def __init__(self, hub: ConnectionHub, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._hub = hub
        self._func = func
        self._args = args
        self._done = _allocate_lock()
        self._done.acquire()
        self._notify: Callable[[], None] | None = None
        self._outcome: tuple[bool, Any] | None = None

    def run(self, timeout: float | None) -> Any:
        hub = self._hub
        if in_gevent():
            finished = self._wait_cooperatively(timeout)
        else:
            hub._gevent_hub.loop.run_callback_threadsafe(hub.spawn_owned, self._run_there)
            finished = self._done.acquire(timeout=-1 if timeout is None else timeout)
        if not finished:
            raise ForeignThreadError(
                f"{hub.name}: the connection's hub thread did not run the call within "
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
        hub = self._hub
        hub._gevent_hub.loop.run_callback_threadsafe(hub.spawn_owned, self._run_there)
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
    def for_this_thread(cls) -> _SwitchWatch:
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

    def suspend(self, glet: Any) -> Callable[[Any], None] | None:
        """Stop watching `glet` for a while; pass the result to `resume`."""
        return self._watched.pop(glet, None)

    def resume(self, glet: Any, on_leave: Callable[[Any], None] | None) -> None:
        if on_leave is not None:
            self._watched[glet] = on_leave

    def _on_switch(self, event: str, args: tuple[Any, Any]) -> None:
        if self._watched:
            on_leave = self._watched.pop(args[0], None)
            if on_leave is not None:
                on_leave(args[0])
        if self._previous is not None:
            self._previous(event, args)
