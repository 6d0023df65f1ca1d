"""The greenlet runtime of one connection (code under gevent).

How it works (DESIGN.md, "The one idea" and "Reading: one reader at a time"):

- **One reader at a time.** Whoever holds the connection's *read baton* is
  the only code reading the channel. A greenlet waiting for its own reply
  takes the baton when nobody is reading, reads frames itself (replies for
  others go to their slots, requests to handlers) until its reply is there,
  and then passes the baton on to the next waiting caller, or to the
  **background reader** (a greenlet of the hub's `ReaderPool`, which an
  idle connection does not hold), so the peer's requests are served at any
  time. A reply read by its own caller costs no greenlet switch. How a
  caller waits, and the *lane* of a caller alone, is `_callers`'s.
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
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent import Greenlet, GreenletExit
from gevent.hub import Waiter
from gevent.monkey import get_original

from grpyc._admission import Admission
from grpyc._baton import BATON, READABLE, RETIRE, ReadBaton
from grpyc._blockhook import HOOK, can_carry_hook, resume_hook, suspend_hook
from grpyc._callers import CallerWaits
from grpyc._crossthread import ForeignThreadError, ThreadCall
from grpyc._owned import OwnedGreenlets
from grpyc._readers import PoolReader, ReaderPool, keeps_state
from grpyc._runtime import ChannelLike, ReplySlot
from grpyc._waitlists import WaitLists
from grpyc._writer import Writer
from grpyc.config import Limits
from grpyc.framing import Payload
from grpyc.lib import kill_greenlets

__all__ = ["ChannelLike", "ConnectionHub", "ForeignThreadError", "ReplySlot"]

_get_ident: Callable[[], int] = get_original("_thread", "get_ident")

# A baton holder yields to the other greenlets after this many frames handled
# without waiting. Small frames take ~10-30 us each here, so one busy peer
# holds the CPU for about a millisecond at a time.
FAIR_FRAMES = 64

# RPyC's ``serve()`` returns True for each message it handled. Messages the
# background reader handled while nobody served are reported to later
# ``serve``/``poll`` calls, at most this many.
_MAX_UNREPORTED = 1024


class ConnectionHub(CallerWaits):
    """Reading baton, writer, handler greenlets and pending slots of one connection."""

    reads_by_itself = True  # a pool reader comes when bytes do (`async_.ResultRuntime`)

    # Slots: a server holds thousands of these.
    __slots__ = (
        "_frames_unreported",
        "_gevent_hub",
        "_nested_leads",
        "_on_inline_block",
        "_owned",
        "_pinned",
        "_readers",
        "_thread_ident",
        "_timer",
        "_turn",
    )  # fmt: skip

    def _set_up(
        self, channel: Any, limits: Limits, take_deferred: Callable[[], list[bytes]] | None
    ) -> None:
        self._gevent_hub = gevent.get_hub()
        self._thread_ident = _get_ident()
        self._writer = Writer(
            channel,
            gevent_hub=self._gevent_hub,
            name=self.name,
            logger=self.logger,
            max_send_buffer=limits.max_send_buffer,
            take_deferred=take_deferred,
            spawn=self.spawn_owned,
            fail=self.shutdown,
        )
        self._owned = OwnedGreenlets(self.name, self.logger)
        self._frames_unreported = 0
        self._baton = ReadBaton(channel, self._gevent_hub)
        self._baton.on_batch_wake = self._writer.hold
        self._baton.on_dormant_readable = self._dispatch_reader
        self._readers = ReaderPool.for_hub(self._gevent_hub)
        self._turn = self._read_turn
        # The reader that stays rather than go back to the pool (see `_stays`).
        self._pinned: Any = None
        # Inflating a big compressed frame yields between steps, as decoding does.
        channel.set_progress(self.pause)
        self._waits = WaitLists(self._gevent_hub, self._baton)
        self._admission = Admission(limits, self._on_idle, self._gevent_hub, self._waits)
        self._nested_leads = 0
        # Set when a request read here went to a new handler greenlet: the
        # holder lets it run to its first wait before reading on, so the
        # limits see it waiting (nested) or busy before the next request.
        self._pace = False
        self._on_inline_block = self._hand_over_reading  # bound once: set per request
        self._timer: Any = None

    # ------------------------------------------------------------------ state
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
        """Start reading at the next turn of the loop (a pool reader comes when bytes do)."""
        self._gevent_hub.loop.run_callback(self._start_reading)

    def _start_reading(self) -> None:
        baton = self._baton
        if not self._closed and baton.reader is None and baton.holder is None:
            baton.sleep_dormant()  # else whoever reads passes the baton on to a reader

    def _dispatch_reader(self) -> None:
        # In the hub greenlet: the dormant connection may have something to read.
        baton = self._baton
        if not self._closed and baton.reader is None and baton.holder is None:
            self._readers.dispatch(self._turn)

    def _read_turn(self) -> bool:
        """A pool reader's turn; True unless the reader must check `keeps_state` as it leaves."""
        baton = self._baton
        if self._closed or baton.reader is not None or baton.holder is not None:
            return True  # another reads: this one ran nothing
        baton.reader = baton.holder = gevent.getcurrent()
        return self._read_loop(fill_first=True)

    def serve_until_closed(self) -> None:
        """Block until the connection closes; if no one reads now, read here meanwhile."""
        baton = self._baton
        if not self._closed and baton.reader is None:
            me = gevent.getcurrent()
            self._pinned = baton.reader = me
            if baton.holder is None:
                baton.holder = me
            try:
                self._read_loop()
            finally:
                if self._pinned is me:
                    self._pinned = None
        self.wait_closed()

    def sparing(self, glet: Any) -> contextlib.AbstractContextManager[None]:
        """Within this block, `shutdown` does not kill `glet` (e.g. a callback calling close())."""
        return self._owned.sparing(glet)

    # ----------------------------------------------------------------- reading
    def _read_loop(self, fill_first: bool = False) -> bool:
        """The background reader: reads whenever no caller holds the baton.

        A pool reader retires when nothing is left or a caller took the baton;
        one that `_stays` sleeps. `fill_first`: the channel is readable, read it.
        Returns True if it retired so (`_stays` checked `keeps_state`); False
        if it left otherwise: closed, or reading handed over while it ran a request.
        """
        me = gevent.getcurrent()
        baton = self._baton
        reason: BaseException
        try:
            if fill_first and not self._channel.has_buffered_frame():
                self._channel.fill()
            while not self._closed and baton.reader is me:
                if baton.holder is me:
                    self._lead(None, None, me)
                elif self._stays(me):
                    baton.park()
                else:
                    baton.retire(me)
                    return True
            return False
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
        return False

    def _stays(self, reader: Any) -> bool:
        """Whether `reader` stays with nothing to read: `serve_until_closed`'s, or one a
        request left greenlet-local state on (this connection's: RPyC's thread's)."""
        if reader is self._pinned:
            return True
        if keeps_state(reader):
            self._pinned = reader
            return True
        return False

    def _lead_nested(self, slot: ReplySlot, deadline: float | None) -> None:
        """Read as a caller holding the baton, until `slot` is delivered or `deadline`."""
        me = gevent.getcurrent()
        # A request run inline in the reader may wait for a reply: the waits
        # while reading are ours, not the request blocking. (Only the reader
        # carries the hook: other callers need no look.)
        suspended = suspend_hook(me) if me is self._baton.reader else None
        self._nested_leads += 1
        try:
            self._lead(slot, deadline, me)
        except Exception as exc:  # noqa: BLE001 - a bad frame ends the connection
            self._fail_reading(exc)
        finally:
            self._nested_leads -= 1
            if suspended is not None:
                resume_hook(me, suspended)

    def _fail_reading(self, exc: Exception) -> None:
        """Reading as a caller raised `exc`: the connection ends (a protocol error logged)."""
        if isinstance(exc, EOFError):
            self.shutdown(exc)
        elif isinstance(exc, OSError):
            self.shutdown(EOFError(f"connection lost: {exc}"))
        else:
            self.logger.warning("%s: closing after protocol error: %s", self.name, exc)
            self.shutdown(exc)

    def _lead(self, slot: ReplySlot | None, deadline: float | None, me: Any) -> None:
        """Handle frames while holding the baton.

        Returns when `slot` is delivered, `deadline` passes, the connection
        closes, or the baton went to another greenlet (the background reader,
        `slot` None, hands it to a waiting caller rather than wait itself).
        """
        try:
            self._handle_frames(slot, deadline, me)
        finally:
            # With no frame buffered, whoever reads next would release the hold too.
            self._writer.uncork(release_hold=not self._channel.has_buffered_frame())

    def _handle_frames(self, slot: ReplySlot | None, deadline: float | None, me: Any) -> None:
        channel = self._channel
        on_frame = self._on_frame
        writer = self._writer
        is_reader = slot is None
        baton = self._baton
        budget = FAIR_FRAMES
        while baton.holder is me and not self._closed:
            payload = channel.next_buffered()
            if payload is None:
                writer.uncork(release_hold=True)  # answers of the batch go out before we wait
                if not is_reader:
                    if slot.outcome is not None:  # type: ignore[union-attr]
                        return
                elif baton.followers:
                    baton.pass_on(self._closed)  # a waiting caller reads its own reply
                    return
                if channel.ack_owed:
                    self._settle_ack()
                if is_reader and me is not self._pinned:
                    reason = self._readers.wait_lingering(baton, me)
                else:
                    reason = baton.wait_readable(me, is_reader, deadline, slot)
                if reason == READABLE:
                    channel.fill()
                elif reason == RETIRE:
                    if not self._stays(me):
                        baton.retire(me)  # back to the pool; the watcher calls for a reader
                        return
                elif reason != BATON:
                    return
                budget = FAIR_FRAMES
                continue
            self.last_received = time.monotonic()
            if channel.has_buffered_frame():
                writer.cork(me)  # more requests wait: answer them in one write
            on_frame(payload)
            del payload  # a big frame must not live on until the next one
            our_reply_in = not is_reader and slot.outcome is not None  # type: ignore[union-attr]
            if self._pace:
                if our_reply_in:
                    # We do not wait on the new handler (it may run long);
                    # it starts before whoever reads next.
                    self._pace = False
                    return
                self._let_handler_start(me)
                budget = FAIR_FRAMES
            if is_reader and not baton.followers and self._frames_unreported < _MAX_UNREPORTED:
                self._frames_unreported += 1
            if self._waits.frame:
                self._waits.wake(self._waits.frame)
            # Once our reply is in, we also handle what is already buffered
            # (within the budget): the followers' replies, or frames such as
            # the DEL a peer sends after its reply. Each is quick here (no
            # request runs inline in a caller, and we stop at one that
            # starts a handler); passing the baton on for them costs the
            # reader a wake-up and us a follow to get it back.
            if our_reply_in and not channel.has_buffered_frame():
                return
            budget -= 1
            if budget <= 0:
                if our_reply_in:
                    return  # a flood behind our reply is the next reader's, not our delay
                # A peer that keeps the buffer full must not keep our writes
                # held for longer than one batch either.
                writer.uncork(release_hold=True)
                self._yield(me)
                budget = FAIR_FRAMES

    def _let_handler_start(self, me: Any) -> None:
        # A request read here went to a new handler greenlet. With nothing more
        # to read yet, waiting for bytes lets it run first anyway (callbacks
        # before I/O); else it runs to its first wait before we read on.
        self._pace = False
        if self._channel.has_buffered_frame() or self._channel.has_pending_input():
            self._yield(me)

    def pause(self) -> None:
        """Let other greenlets run a moment (long decodes do); the baton stays, no block."""
        self._yield(gevent.getcurrent())

    def _yield(self, me: Any) -> None:
        waiter = Waiter(self._gevent_hub)
        self._gevent_hub.loop.run_callback(waiter.switch, None)
        suspended = suspend_hook(me)
        try:
            waiter.get()
        finally:
            resume_hook(me, suspended)

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
        waits = self._waits
        woken = waits.wait(timeout, "frame", "closed")
        self._raise_if_closed()
        if woken and self._frames_unreported:
            self._frames_unreported -= 1
        return woken

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is closed; False if `timeout` passed first."""
        return self._closed or self._waits.wait(timeout, "closed")

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request of the peer runs or waits here (or closed); False on timeout."""
        if self._closed or self._admission.is_idle():
            return True
        return self._waits.wait(timeout, "idle", "closed")

    def _on_idle(self) -> None:
        if self._waits.idle:
            self._waits.wake(self._waits.idle)

    # ---------------------------------------------------------------- handlers
    def submit(self, func: Callable[..., Any], *args: Any, cost: int = 0) -> bool:
        """Run ``func(*args)`` for a request of `cost` bytes, within the limits.

        Returns False when a limit is full; the caller answers the request
        with an error then.
        """
        reader = self._baton.reader
        if (  # in the background reader, unless it leads a nested call
            self._nested_leads == 0
            and gevent.getcurrent() is reader
            and (type(reader) is PoolReader or can_carry_hook(reader))  # PoolReader: always
        ):
            admission = self._admission
            charged = admission.enter_inline(reader, cost)
            if charged is not None:
                # In the reader itself, saving a greenlet start. If the request
                # blocks (the reader switches to the hub other than in its own
                # waits for a reply), gevent calls the reader's ``switch_out``
                # (`_blockhook`): `_hand_over_reading` hands reading to another
                # pool reader, and this greenlet finishes the request as an
                # ordinary handler (then parks in the pool).
                own = reader.__dict__
                own[HOOK] = self._on_inline_block
                try:
                    func(*args)
                finally:
                    own.pop(HOOK, None)  # gone already if the request blocked
                    admission.finish(reader, charged)
                return True
        decision = self._admission.admit(cost)
        if decision is None:
            return False
        run_now, charged = decision
        if not run_now:
            self._admission.enqueue(func, args, charged)
        else:
            self._admission.start(func, args, charged)
            self._pace = self._baton.holder is gevent.getcurrent()
        return True

    def _hand_over_reading(self) -> None:
        # gevent's ``switch_out``: the reader blocks in a request it runs
        # inline, about to switch to the hub. Must not switch or raise.
        old_reader = gevent.getcurrent()
        old_reader.__dict__.pop(HOOK, None)  # once: it is a handler from now on
        if self._closed or self._baton.reader is not old_reader:
            return  # nothing to hand over (never two readers)
        self._writer.release_cork()
        # The old reader finishes the request as a handler, then goes back to
        # the pool (its turn returns False: `keeps_state` is checked there);
        # shutdown retires it before killing it with its request.
        if self._pinned is old_reader:
            self._pinned = None  # the state it holds stays with the request it runs
        baton = self._baton
        baton.reader = self._readers.hand_over(self._read_loop)
        if baton.holder is old_reader:
            baton.holder = baton.reader

    def spawn_owned(self, func: Callable[..., Any], *args: Any) -> Greenlet:
        """Spawn a helper greenlet that this hub kills on shutdown."""
        return self._owned.spawn(func, *args)

    # ------------------------------------------------------------------ writer
    def send(self, payload: Payload) -> None:
        """Write one whole frame; may block the calling greenlet. Raises EOFError if closed."""
        if self._closed:  # `_raise_if_closed` inlined: once a frame
            raise EOFError(f"connection {self.name} is closed")
        self._writer.send(payload)

    def send_nowait(self, payload: Payload) -> None:
        """Queue one frame for writing without ever blocking or switching."""
        if self._closed:
            return
        self._writer.enqueue(payload)
        baton = self._baton
        me = gevent.getcurrent()
        if me is not baton.reader or baton.holder is not me:
            # Else the background reader, reading: it writes what is queued
            # before it waits (`_handle_frames`), and a flush scheduled now
            # would cost a loop turn to find nothing (a stock client's ping
            # answered inline: 0.92x stock's server without it, 0.97x with).
            self._writer.schedule_flush()

    def send_later(self, payload: Payload) -> None:
        """Queue a frame nobody waits for (a DEL's answer) to go with the next
        frame, or within `DEFERRED_FLUSH_DELAY` seconds; never blocks or switches."""
        if not self._closed:
            self._writer.defer(payload)
            self._channel.owe_ack()

    def schedule_flush(self) -> None:
        """Make sure deferred frames (DELs) get written soon (safe from ``__del__``):
        with the next frame, or within `DEFERRED_FLUSH_DELAY` seconds."""
        self._writer.schedule_deferred_flush()

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
        return ThreadCall(self._gevent_hub, self.spawn_owned, func, args).run(timeout)

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
        if not self._mark_closed(reason):
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
        self._fail_pending(reason)
        self._baton.close()
        self._writer.close()
        self._channel.close()
        handlers = self._admission.close()
        doomed = self._owned.doomed((*handlers, self._baton.reader))
        # The kills land later: a pool reader must not be reading elsewhere by then.
        self._readers.retire(*(glet for glet in doomed if glet is not gevent.getcurrent()))
        kill_greenlets(doomed)
        self._waits.close()
        self._run_on_closed(reason)
