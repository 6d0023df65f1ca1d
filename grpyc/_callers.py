"""How a caller waits for its reply on a cooperative connection (`hub.ConnectionHub`'s base).

A call registers a slot for its ``seq``, sends, and waits for the slot. The
general way (`CallerWaits.wait_reply`): take the read baton when nobody
reads (or borrow it, for a handler's nested call), read frames until the
reply is there, handing everything else over, then pass the baton on; or
*follow* the holder, asleep until the reply or the baton comes.

**The lane.** Most calls are made by one caller at a time with nothing else
arriving meanwhile: the reply is the next frame. Such a caller (`call`: the
baton free or its reader idle, nobody following, nothing buffered, and the
caller neither a handler nor the reader) takes the baton, waits for bytes
and asks the protocol whether each frame is its reply (``read_reply``),
taking the outcome straight rather than through the dispatch and its slot:
about 10 % of a bound call's instructions on the client. Other frames it
hands to the protocol on the way: the answer to a DEL it sent, the peer's
callback (a handler runs it while the lane waits on). A borrower, a
follower, the deadline, a close or `_LANE_FRAMES` frames without its reply
send it the general way from where it is.
"""

from __future__ import annotations

import time
from typing import Any

from greenlet import getcurrent

from grpyc._admission import Admission
from grpyc._baton import READABLE, ReadBaton
from grpyc._runtime import ReplySlot, Runtime
from grpyc._waitlists import WaitLists
from grpyc._writer import Writer
from grpyc.framing import Payload

__all__ = ["CallerWaits"]

# How the lane's reading went (`CallerWaits._read_alone`).
_DONE = 0  # our reply is in, nothing left buffered, the writer as the lane found it
_GO_ON = 1  # the general way goes on from here, holding the baton
_LEFT = 2  # the lane returned early (a borrower, a follower, the deadline, a close)

# Frames the lane hands to the protocol at most (then the general way, with
# its fairness): a callback's request and our reply, the answer to a DEL we
# sent right behind it; a peer that floods us meets the general way soon.
_LANE_FRAMES = 8


class CallerWaits(Runtime):
    """`call` and `wait_reply` over a baton, a writer and a channel.

    `hub.ConnectionHub` sets these slots up and does the reading (`_lead_nested`).
    """

    __slots__ = ("_admission", "_baton", "_pace", "_waits", "_writer")

    _admission: Admission
    _baton: ReadBaton
    _pace: bool  # a request read here went to a new handler greenlet
    _waits: WaitLists
    _writer: Writer

    def _lead_nested(self, slot: ReplySlot, deadline: float | None) -> None:
        raise NotImplementedError

    def _let_handler_start(self, me: Any) -> None:
        raise NotImplementedError

    def _fail_reading(self, exc: Exception) -> None:
        raise NotImplementedError

    def call(self, seq: int, payload: Payload, timeout: float | None) -> Any:
        """`Runtime.call`; a caller alone on the connection reads its reply itself
        with less on the way (`_read_alone`)."""
        if self._closed:  # `_raise_if_closed` inlined: once a call
            raise EOFError(f"connection {self.name} is closed")
        slot = ReplySlot()
        pending = self.pending
        pending[seq] = slot
        try:
            self._writer.send(payload)
            me = getcurrent()
            if (
                slot.outcome is None
                and self._read_reply is not None
                and not self._admission.is_handler(me)  # its nested wait counts (`wait_reply`)
                and self._baton.take_alone(me, slot)
            ):
                deadline = None if timeout is None else time.monotonic() + timeout
                self._read_alone(slot, seq, me, deadline)
                if slot.outcome is not None:
                    return slot.outcome
                if deadline is not None:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        return None
            return self.wait_reply(slot, timeout)
        finally:
            pending.pop(seq, None)

    def _read_alone(self, slot: ReplySlot, seq: int, me: Any, deadline: float | None) -> None:
        """The lane, holding the baton: read frames until our reply, taking it
        straight from the protocol (`read_reply`).

        A request that starts a handler (a callback) gets its start as in the
        general way, and the lane waits on for our reply; the answer to a DEL
        we sent, behind our reply, is handled on the way. The general way goes
        on from where it is after `_LANE_FRAMES` frames (with its fairness),
        or with frames left behind our reply (`_lead_nested`, holding the
        baton); after a borrower, a follower, the deadline or a close, from
        `wait_reply`. One function, not three: this runs once a call.
        """
        baton = self._baton
        channel = self._channel
        writer = self._writer
        step = _LEFT
        try:
            writer.uncork(release_hold=True)  # as `_handle_frames` does before it waits
            corked = False
            payload = None
            budget = _LANE_FRAMES
            while True:
                if payload is None:
                    if corked:  # answers of the batch go out before we wait
                        writer.uncork(release_hold=True)
                        corked = False
                    while payload is None:
                        if baton.holder is not me or baton.followers or self._closed:
                            return  # a borrower, a follower or a close
                        if channel.ack_owed:
                            self._settle_ack()
                        if baton.wait_readable(me, False, deadline, slot) != READABLE:
                            return
                        channel.fill()
                        payload = channel.next_buffered()
                    self.last_received = time.monotonic()
                more: bool = channel.has_buffered_frame()
                if more and not corked:
                    writer.cork(me)  # as `_handle_frames` does
                    corked = True
                outcome = self._read_reply(payload, seq)  # type: ignore[misc]  # not None: `call`
                del payload
                if outcome is not None:
                    slot.outcome = outcome
                if self._waits.frame:
                    self._waits.wake(self._waits.frame)
                if self._pace:
                    if slot.outcome is None:
                        self._let_handler_start(me)  # it runs before we read on
                        more = channel.has_buffered_frame()
                    else:
                        self._pace = False  # the new handler starts before whoever reads next
                        more = False  # and what is buffered is the next reader's
                if self._closed or baton.holder is not me:  # as `_handle_frames` checks
                    return
                budget -= 1
                if not budget or (not more and slot.outcome is not None):
                    break
                payload = channel.next_buffered() if more else None
            if slot.outcome is None or more:
                step = _GO_ON
            else:
                if corked:
                    writer.uncork(release_hold=not channel.has_buffered_frame())
                step = _DONE
        except Exception as exc:  # noqa: BLE001 - a bad frame ends the connection
            self._fail_reading(exc)
        else:
            if step == _GO_ON and baton.holder is me:
                self._lead_nested(slot, deadline)  # it may lend the baton meanwhile
        finally:
            if baton.holder is me:
                if step != _DONE:  # as `_lead` leaves the writer (`_DONE` did not touch it)
                    writer.uncork(release_hold=not channel.has_buffered_frame())
                baton.put_down(self._closed)

    def _settle_ack(self) -> None:
        """Before a reader waits, what it owes the peer is acknowledged
        (`Channel.owe_ack`): now where the stream can, else with a frame soon."""
        if not self._channel.ack_now():
            self._writer.schedule_flush()

    def wait_reply(self, slot: ReplySlot, timeout: float | None) -> Any:
        """Wait until `slot` is delivered, reading frames meanwhile if nobody else does.

        Returns:
            The delivered ``(is_exc, obj, unresolved)``, or None on timeout.
        """
        if slot.outcome is None:
            deadline = None
            if timeout is not None:  # not max(): it parses its arguments the slow way
                deadline = time.monotonic() + (timeout if timeout > 0 else 0.0)
            me = getcurrent()
            nested = self._admission.nested_wait(me)
            try:
                self._wait_for(slot, me, deadline, nested)
            finally:
                if nested:
                    self._admission.nested_done()
        return slot.outcome

    def _wait_for(self, slot: ReplySlot, me: Any, deadline: float | None, is_handler: bool) -> None:
        while slot.outcome is None and not self._closed:
            baton = self._baton
            if baton.holder is me or baton.may_take() or (is_handler and baton.may_borrow()):
                baton.take(me, slot)
                try:
                    self._lead_nested(slot, deadline)
                finally:
                    if baton.holder is me and me is not baton.reader:
                        baton.pass_on(self._closed)
            elif not baton.follow(slot, me, deadline, lambda: self._closed):
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
