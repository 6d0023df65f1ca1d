"""The read baton of one cooperative connection: who reads the channel now.

Exactly one greenlet holds the baton at a time (DESIGN.md, "Reading: one
reader at a time"). The connection's background reader holds it when no
caller does; while it sleeps *idle* (holding the baton, nothing buffered,
waiting for bytes) a caller waiting for its reply may take the baton and
read itself. A caller that cannot take it *follows*: it sleeps until its
reply is delivered or the baton is offered to it. A handler's nested call
may *borrow* the baton from a caller that waits for bytes: the lender sleeps
on as a follower and gets the baton back (without being woken, if nothing is
buffered) when the borrower is done. Otherwise, when the holder is done, the
baton goes to the first follower, else back to the background reader.

The background reader is usually a greenlet of the hub's `ReaderPool`: when
nobody holds the baton and nothing is buffered it *retires* (leaves the
connection; the connection is *dormant*, with no reader greenlet at all),
and the readable watcher asks for a reader again when bytes arrive. A
greenlet that serves the connection until it closes (``serve_all``) is
*pinned*: it stays the reader, sleeping idle, or *parked* without the baton
(it gave it to a follower) until the baton comes back. Both sleeps use
`reader_waiter`, so handing the baton back is the same either way.

The channel's readable watcher wakes whoever holds the baton and waits;
nothing here reads or handles frames (`hub` does).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from gevent.hub import Waiter

from grpyc._firstuse import NO_ITEMS, appended

__all__ = ["BATON", "CLOSED", "DELIVERED", "READABLE", "RETIRE", "TIMEOUT", "ReadBaton"]

# Why a sleeping greenlet was woken.
READABLE = 1
BATON = 2
TIMEOUT = 3
CLOSED = 4
DELIVERED = 5
RETIRE = 6  # the hub's reader pool wants an idle reader back (see `_readers`)


def _nothing() -> None:
    pass


class ReadBaton:
    """Holder, followers and the readable watcher of one connection."""

    __slots__ = (
        "_channel",
        "_closed",
        "_deadline_timer",
        "_gevent_hub",
        "_timed_deadline",
        "_timed_waiter",
        "_timer_at",
        "_watcher",
        "followers",
        "holder",
        "holder_slot",
        "holder_waiter",
        "holder_waiting",
        "lenders",
        "on_batch_wake",
        "on_dormant_readable",
        "reader",
        "reader_idle",
        "reader_waiter",
    )  # fmt: skip

    def __init__(self, channel: Any, gevent_hub: Any) -> None:
        self._channel = channel
        self._closed = False
        self._gevent_hub = gevent_hub
        self._watcher: Any = None
        # The timer of `_sleep_until`, armed for `_timer_at`, and who sleeps on it.
        self._deadline_timer: Any = None
        self._timer_at = 0.0
        self._timed_waiter: Waiter | None = None
        self._timed_deadline = 0.0
        self.holder: Any = None
        # The reply slot of a caller holding the baton (None for the reader).
        self.holder_slot: Any = None
        self.holder_waiter: Waiter | None = None
        self.holder_waiting = False
        # Waiting callers in arrival order, by their waiter: a dict, so that a
        # caller leaving (its reply came) is O(1) with many waiting (S2: 64).
        self.followers: dict[Waiter, Any] = {}
        # Callers the baton was borrowed from (see `may_borrow`), innermost
        # last, by their waiter; each is also a follower while it sleeps.
        # Made on first use (`grpyc._firstuse`): most never lend the baton.
        self.lenders: list[tuple[Waiter, Any]] | tuple[()] = NO_ITEMS  # (waiter, reply slot)
        self.reader: Any = None
        self.reader_waiter: Waiter | None = None
        self.reader_idle = False
        # Called as a follower is woken with its reply or the baton while more
        # frames are buffered (the hub holds its writer: see Writer.hold). A
        # lone reply is not held: its caller writes at once.
        self.on_batch_wake: Callable[[], None] | None = None
        # Called in the hub greenlet when a dormant connection (no reader,
        # nobody holding the baton) may have something to read: start a
        # reader unless one came meanwhile.
        self.on_dormant_readable: Callable[[], None] = _nothing

    def may_take(self) -> bool:
        """Whether a caller may take the baton now (free, or the reader sleeps idle)."""
        holder = self.holder
        return holder is None or (holder is self.reader and self.reader_idle)

    def take_alone(self, me: Any, slot: Any) -> bool:
        """Take the baton for caller `me` (waiting for `slot`) if it is alone: the
        baton is free or its reader idle, nobody follows, nothing is buffered, and
        `me` is not the reader (whose waits the hub looks after). Else False."""
        holder = self.holder  # `may_take` inlined: once a call
        if (
            (holder is not None and (holder is not self.reader or not self.reader_idle))
            or me is self.reader
            or self.followers
            or self._channel.has_buffered_frame()
        ):
            return False
        self.holder = me
        self.holder_slot = slot
        self.holder_waiting = False
        self.reader_idle = False
        return True

    def may_borrow(self) -> bool:
        """Whether a caller may borrow the baton from a caller waiting for bytes.

        Only a handler borrows (the hub decides): its call is most likely
        the innermost of a callback chain, so the next reply is its own.
        Reading that reply itself saves the holder a wake-up and a hand-over
        per level; the lender gets the baton back when the borrower is done.
        """
        return self._caller_waits_for_bytes()

    def _caller_waits_for_bytes(self) -> bool:
        # The holder is a caller (it has a reply slot) asleep in `wait_readable`.
        holder_is_caller = self.holder_slot is not None and self.holder is not self.reader
        return self.holder_waiting and holder_is_caller

    def take(self, me: Any, slot: Any = None) -> None:
        # An idle background reader stays asleep: the readable watcher now
        # wakes `me` instead, until the baton goes back (`pass_on`).
        if self._caller_waits_for_bytes():
            self._lend(self.holder, self.holder_waiter, self.holder_slot)
        self.holder = me
        self.holder_slot = slot
        self.holder_waiting = False
        self.reader_idle = False

    def _lend(self, lender: Any, waiter: Any, slot: Any) -> None:
        # The lender sleeps on in `wait_readable`, now as a follower: woken
        # with its reply (DELIVERED), the baton back (BATON) or its deadline.
        self.followers[waiter] = lender
        self.lenders = appended(self.lenders, (waiter, slot))
        slot.wake = functools.partial(self._wake_delivered, waiter)

    def pass_on(self, closed: bool) -> None:
        """Give the baton to the first waiting caller, or back to the background reader."""
        if closed:
            self.holder = None
            return
        loop = self._gevent_hub.loop
        if self.followers:
            waiter, slot = self._next_follower()
            self.holder = self.followers.pop(waiter)
            self.holder_slot = slot
            if slot is not None and not self._channel.has_buffered_frame():
                # A lender sleeps on in `wait_readable`: it is again the
                # holder waiting for bytes, without being woken to wait.
                slot.wake = None
                self.holder_waiter = waiter
                self.holder_waiting = True
                self._start_watcher()
                return
            self.holder_waiting = False
            loop.run_callback(waiter.switch, BATON)
            self._note_batch_wake()  # it reads its reply from the buffer and sends again
            return
        self.holder = self.reader
        self.holder_slot = None
        if self.reader is None:
            self.holder_waiting = False
            self.sleep_dormant()
            return
        reader_waiter = self.reader_waiter
        if reader_waiter is None:
            return  # the reader is running; it reads when it gets back to its loop
        if self._channel.has_buffered_frame():
            self.reader_waiter = None
            loop.run_callback(reader_waiter.switch, BATON)
            return
        self.holder_waiter = reader_waiter
        self.holder_waiting = True
        self.reader_idle = True
        self._start_watcher()

    def put_down(self, closed: bool) -> None:
        """`pass_on` for a caller that took the baton alone (`take_alone`): shorter
        when the connection goes dormant again with its watcher still on."""
        watcher = self._watcher
        if (
            closed
            or self.followers
            or self.reader is not None
            or watcher is None
            or not watcher.active
            or self._channel.has_buffered_frame()
            or self._channel.has_pending_input()
        ):
            self.pass_on(closed)
            return
        self.holder = None
        self.holder_slot = None
        self.holder_waiting = False

    def ask_back(self) -> None:
        """The hub's reader pool wants our reader, idle here, back: wake it with `RETIRE`."""
        waiter = self.reader_waiter
        if waiter is not None:
            self._gevent_hub.loop.run_callback(waiter.switch, RETIRE)

    def retire(self, reader: Any) -> None:
        """`reader` leaves the connection, which has nothing to read: it goes dormant."""
        if self.reader is reader:
            self.reader = None
        if self.holder is reader:
            self.holder = None
            self.holder_slot = None
            self.holder_waiting = False
            self.sleep_dormant()

    def sleep_dormant(self) -> None:
        """With no reader and nobody holding the baton: ask for a reader when readable."""
        if self._channel.has_buffered_frame() or self._channel.has_pending_input():
            self._gevent_hub.loop.run_callback(self.on_dormant_readable)
        else:
            self._start_watcher()

    def _next_follower(self) -> tuple[Waiter, Any]:
        """The follower to get the baton next, and its reply slot if it is a lender.

        The baton goes back to whom it was borrowed from (the innermost
        lender still waiting), else to the longest-waiting follower (which
        takes it again with its slot).
        """
        lenders = self.lenders
        while lenders:
            waiter, slot = lenders.pop()
            if waiter in self.followers:
                return waiter, slot
        return next(iter(self.followers)), None

    def follow(self, slot: Any, me: Any, deadline: float | None, closed: Any) -> bool:
        """Sleep until our reply, the baton or the deadline comes; False on timeout.

        `closed` tells whether the connection closed meanwhile (a callable).
        """
        waiter = Waiter(self._gevent_hub)
        slot.wake = functools.partial(self._wake_delivered, waiter)
        self.followers[waiter] = me
        try:
            reason = self.sleep(waiter, deadline)
        except BaseException:
            # Killed (or timed out by a gevent.Timeout) just as the baton was
            # offered: a dead holder would leave the connection unread.
            reason = None
            raise
        finally:
            slot.wake = None
            self.followers.pop(waiter, None)
            if self.holder is me and (reason is None or slot.outcome is not None):
                self.pass_on(closed())  # offered the baton as our reply came, or as we left
        if reason == TIMEOUT and self.holder is me:
            self.pass_on(closed())  # offered the baton just as the deadline passed
        return bool(reason != TIMEOUT)

    def _wake_delivered(self, waiter: Waiter) -> None:
        # Waiter.switch must run in the hub greenlet, not in the reader.
        self._gevent_hub.loop.run_callback(waiter.switch, DELIVERED)
        self._note_batch_wake()

    def _note_batch_wake(self) -> None:
        # A caller woken while more frames wait is one of a batch: the callers
        # of the batch send their next requests together.
        if self.on_batch_wake is not None and self._channel.has_buffered_frame():
            self.on_batch_wake()

    def sleep(self, waiter: Waiter, deadline: float | None) -> Any:
        """Wait on `waiter` until it is switched or `deadline` passes (`TIMEOUT`)."""
        if deadline is None:
            return waiter.get()
        timer = self._timer_until(deadline)
        timer.start(waiter.switch, TIMEOUT)
        try:
            return waiter.get()
        finally:
            timer.close()

    def park(self) -> None:
        """The reader sleeps without the baton until it comes back."""
        waiter = Waiter(self._gevent_hub)
        self.reader_waiter = waiter
        try:
            self.sleep(waiter, None)
        finally:
            if self.reader_waiter is waiter:
                self.reader_waiter = None
            self.reader_idle = False

    def wait_readable(self, me: Any, idle: bool, deadline: float | None, slot: Any = None) -> Any:
        """The holder waits until the channel is readable (`READABLE`).

        An idle reader may also get `BATON` back after a caller used it; a
        caller gets `TIMEOUT` at its deadline, and if it lent the baton
        meanwhile, `DELIVERED` (its reply came) or `BATON` (it is back);
        anyone gets `CLOSED`.
        """
        if self._channel.has_pending_input():
            return READABLE
        waiter = Waiter(self._gevent_hub)
        self.holder_waiter = waiter
        self.holder_waiting = True
        if idle:
            self.reader_waiter = waiter
            self.reader_idle = True
        if self._watcher is None or not self._watcher.active:  # a dormant watch may be on
            self._start_watcher()
        try:
            return waiter.get() if deadline is None else self._sleep_until(waiter, deadline)
        finally:
            if idle:
                if self.reader_waiter is waiter:
                    self.reader_waiter = None
                self.reader_idle = False
            if self.holder is me:
                self.holder_waiting = False
            elif self.followers.pop(waiter, None) is not None:
                slot.wake = None  # it lent the baton and left before getting it back
                lenders = self.lenders
                if lenders and lenders[-1][0] is waiter:
                    lenders.pop()

    def _timer_until(self, deadline: float) -> Any:
        """A libev timer (not started) that fires at `deadline` (`time.monotonic`)."""
        loop = self._gevent_hub.loop
        loop.update_now()  # the loop's clock is stale after a blocking call outside gevent
        remaining = deadline - time.monotonic()
        return loop.timer(remaining if remaining > 0 else 0.0)

    def _sleep_until(self, waiter: Waiter, deadline: float) -> Any:
        """`sleep` for `wait_readable`, on a timer that outlives the wait.

        Calls one after another arm it once per timeout period, not once
        each (a timer made, started and closed costs ~5,700 instructions,
        2.7 % of a round trip): a timer armed for an earlier deadline fires
        first and re-arms for the deadline of whoever waits then. One waiter
        at a time uses it; another (a borrower while its lender sleeps) gets
        a timer of its own.
        """
        if self._timed_waiter is not None:
            return self.sleep(waiter, deadline)
        self._timed_waiter = waiter
        self._timed_deadline = deadline
        if self._deadline_timer is None or self._timer_at > deadline:
            self._arm_deadline_timer(deadline)
        try:
            return waiter.get()
        finally:
            self._timed_waiter = None

    def _arm_deadline_timer(self, deadline: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.close()
        timer = self._deadline_timer = self._timer_until(deadline)
        timer.ref = False  # armed with nobody waiting, it must not keep the loop running
        self._timer_at = deadline
        timer.start(self._on_deadline_timer)

    def _on_deadline_timer(self) -> None:
        # Runs in the hub greenlet.
        self._deadline_timer.close()
        self._deadline_timer = None
        waiter = self._timed_waiter
        if waiter is None or self._closed:
            return
        if time.monotonic() < self._timed_deadline:
            self._arm_deadline_timer(self._timed_deadline)
        else:
            self._timed_waiter = None
            waiter.switch(TIMEOUT)

    def _start_watcher(self) -> None:
        if self._closed:
            return  # a reader retiring after a write that switched, meanwhile closed
        watcher = self._watcher
        if watcher is None:
            watcher = self._watcher = self._gevent_hub.loop.io(self._channel.fileno(), 1)
        if not watcher.active:
            watcher.start(self._on_readable)

    def _on_readable(self) -> None:
        # Runs in the hub greenlet. The watcher stays on when it wakes the
        # holder, who reads everything and usually waits again at once
        # (starting and stopping it cost every request ~40 L1 instruction
        # misses); level-triggered, it stops when it finds nobody waiting,
        # until someone does.
        if self.holder_waiting and self.holder_waiter is not None:
            self.holder_waiting = False
            self.holder_waiter.switch(READABLE)
            return
        self._watcher.stop()
        if self.holder is None:
            self.on_dormant_readable()

    def close(self) -> None:
        """Wake the holder and every follower with `CLOSED`; stop the watcher."""
        loop = self._gevent_hub.loop
        self._closed = True
        if self._deadline_timer is not None:
            self._deadline_timer.close()
            self._deadline_timer = None
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
        if self.holder_waiting and self.holder_waiter is not None:
            self.holder_waiting = False
            loop.run_callback(self.holder_waiter.switch, CLOSED)
        for waiter in self.followers:
            loop.run_callback(waiter.switch, CLOSED)
        self.followers.clear()
        self.lenders = NO_ITEMS
