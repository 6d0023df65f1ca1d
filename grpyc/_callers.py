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
and asks the protocol whether the first frame is its reply
(``read_reply``), taking the outcome straight rather than through the
dispatch and its slot: about 10 % of a bound call's instructions on the
client. Buffered frames that start nothing (the answer to a DEL it sent)
it handles on the way; anything else goes the general way from where it is.
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

# How the lane's first frame went (`CallerWaits._first_frame_alone`).
_DONE = 0  # our reply came alone: the writer was left as the lane found it
_GO_ON = 1  # the general way goes on from here, holding the baton
_LEFT = 2  # the lane returned early (a borrower, a follower, the deadline, a close)

# Buffered frames the lane handles at most (then the general way, with its
# fairness): the answer to a DEL we sent comes right behind our next reply.
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
        """The lane, holding the baton: wait for bytes, and if our reply is among the
        frames that came, take it straight from the protocol (`read_reply`).

        Anything else goes the general way from where it is: no reply among
        them, a new handler to pace, more than `_LANE_FRAMES` frames
        (`_lead_nested`, holding the baton); a borrower, a follower, the
        deadline or a close (`wait_reply`).
        """
        baton = self._baton
        step = _LEFT
        try:
            step = self._first_frame_alone(slot, seq, me, deadline)
            if step == _GO_ON and baton.holder is me:
                self._lead_nested(slot, deadline)  # it may lend the baton meanwhile
        finally:
            if baton.holder is me:
                if step != _DONE:  # as `_lead` leaves the writer (`_DONE` did not touch it)
                    self._writer.uncork(release_hold=not self._channel.has_buffered_frame())
                baton.put_down(self._closed)

    def _first_frame_alone(self, slot: ReplySlot, seq: int, me: Any, deadline: float | None) -> int:
        """Wait for the first frame and read what is buffered until our reply and
        after it: `_DONE` (our reply is in, nothing left, the writer as the lane
        found it), `_GO_ON` (the general way goes on from here) or `_LEFT`
        (returned early).

        Buffered frames that start nothing (the answer to a DEL we sent comes
        right behind our reply) are handled here, up to `_LANE_FRAMES`; a frame
        that starts a handler, or running out of buffered frames before our
        reply, hands over to the general way.
        """
        baton = self._baton
        channel = self._channel
        try:
            self._writer.uncork(release_hold=True)  # as `_handle_frames` does before it waits
            payload = None
            while payload is None:
                if baton.holder is not me or baton.followers or self._closed:
                    return _LEFT
                if baton.wait_readable(me, False, deadline, slot) != READABLE:
                    return _LEFT
                channel.fill()
                payload = channel.next_buffered()
            self.last_received = time.monotonic()
            more: bool = channel.has_buffered_frame()
            corked = more
            if more:
                self._writer.cork(me)  # as `_handle_frames` does
            budget = _LANE_FRAMES
            while True:
                outcome = self._read_reply(payload, seq)  # type: ignore[misc]  # not None: `call`
                del payload
                if outcome is not None:
                    slot.outcome = outcome
                if self._waits.frame:
                    self._waits.wake(self._waits.frame)
                if self._pace:
                    if slot.outcome is None:
                        self._let_handler_start(me)
                        return _GO_ON
                    self._pace = False  # the new handler starts before whoever reads next
                    more = False  # and what is buffered is the next reader's
                if self._closed:
                    return _LEFT
                budget -= 1
                if not more or not budget:
                    break
                payload = channel.next_buffered()
                more = channel.has_buffered_frame()
            if slot.outcome is None or more:
                return _GO_ON
            if corked:
                self._writer.uncork(release_hold=not channel.has_buffered_frame())
            return _DONE
        except Exception as exc:  # noqa: BLE001 - a bad frame ends the connection
            self._fail_reading(exc)
            return _LEFT

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
