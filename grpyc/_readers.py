"""Reader greenlets shared by the connections of one gevent hub.

A connection keeps no greenlet of its own for reading (DESIGN.md, "Reading:
one reader at a time"): its readable watcher asks this pool for one when
bytes arrive. When the connection has nothing more to read, the reader
*lingers* on it (waits there for its next bytes, as a connection's own
reader did: a busy connection is woken with one switch) unless
`MAX_LINGERING` readers linger already; then the one that lingered longest
is asked back, and comes back here parked. A parked greenlet costs ~8 KiB
(its saved C stack, a page of Python frame stack, the greenlet objects), so
a server holding thousands of idle connections holds at most
`MAX_LINGERING + MAX_IDLE` of them (S3: 17.5 -> 10.7 KiB per connection).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent

from grpyc._baton import RETIRE, ReadBaton
from grpyc.lib import LeanGreenlet

__all__ = ["MAX_IDLE", "MAX_LINGERING", "PoolReader", "ReaderPool", "keeps_state"]

# Parked readers kept per hub. More would only hold memory: a burst of
# connections becoming readable at once starts new ones and the extra ones
# end when they are done.
MAX_IDLE = 32

# Pool readers kept lingering per hub: each waits on the connection it
# last read (as a connection's own reader did), so a busy connection is
# woken with one switch and no hand-over; the one that lingered longest is
# asked back when more would.
MAX_LINGERING = 32

# Lingering stops paying when readers are asked back before their
# connection's next bytes (2,000 connections calling in turn: each request
# paid an ask-back, two switches and a loop callback, for nothing). A
# reader woken by its connection saves less than that (a dormant
# connection's watcher gets a parked reader with one switch too), so an
# ask-back counts `WASTE_WEIGHT` against each wake-up; past `WASTED_LIMIT`
# a reader lingers only when fewer than `MAX_LINGERING` do, or as the
# `PROBE_EVERY`-th of those refused (which tells when that changes).
WASTE_WEIGHT = 3
WASTED_LIMIT = 16
PROBE_EVERY = 16

# What a reader greenlet's ``__dict__`` holds by itself (gevent keeps the
# greenlet's function there); `gevent.local` adds a key per local it serves.
_OWN_ATTRIBUTES = 1


# What `wait_lingering` finds in place of a reader's entry once `_may_linger`
# asked it back (and removed the entry).
_ASKED_BACK = object()


def keeps_state(glet: Any) -> bool:
    """Whether a request left greenlet-local state on `glet`.

    That is a `gevent.local` value (also `threading.local` under monkey
    patching) or a `contextvars` value. A reader holding such state keeps
    serving only the connection it belongs to (docs/semantics.md).
    """
    context = glet.gr_context
    return len(glet.__dict__) > _OWN_ATTRIBUTES or (context is not None and len(context) > 0)


class PoolReader(LeanGreenlet):
    """A reader greenlet that serves one connection's turn after another."""


class ReaderPool:
    """Parked reader greenlets of one gevent hub."""

    def __init__(self, gevent_hub: Any) -> None:
        self._gevent_hub = gevent_hub
        self._idle: list[PoolReader] = []
        # Readers that must not serve another turn: killed (the kill lands at
        # a later loop turn, which must not find them reading another
        # connection) or now running a request as a handler.
        self._retired: set[PoolReader] = set()
        # The batons of connections whose reader lingers, longest first.
        self._lingering: dict[Any, None] = {}
        # Readers asked back lately times WASTE_WEIGHT, less those woken by
        # their connection (0 .. 2 * WASTED_LIMIT); and lingers refused since
        # the last probe.
        self._wasted = 0
        self._refused = 0

    @classmethod
    def for_hub(cls, gevent_hub: Any) -> ReaderPool:
        """The pool of `gevent_hub`, kept on the hub (it goes with the hub)."""
        pool: ReaderPool | None = getattr(gevent_hub, "_grpyc_reader_pool", None)
        if pool is None:
            pool = gevent_hub._grpyc_reader_pool = cls(gevent_hub)
        return pool

    @property
    def idle(self) -> int:
        """Readers parked here now."""
        return len(self._idle)

    def wait_lingering(self, baton: ReadBaton, me: Any) -> Any:
        """`baton.wait_readable` of `me`, a reader with nothing left to read: it
        *lingers* there if `_may_linger` lets it, else it leaves at once (`RETIRE`).

        A reader that woke for bytes or the baton lingered usefully, which
        takes one off `_wasted`; one asked back waited in vain, which
        `_may_linger` counts as it asks; one killed counts as asked back.
        """
        lingering = self._lingering
        if len(lingering) >= MAX_LINGERING and not self._may_linger():
            return RETIRE
        lingering[baton] = None
        reason = RETIRE  # killed while lingering: as if asked back
        try:
            reason = baton.wait_readable(me, True, None, None)
            return reason
        finally:
            asked_back = lingering.pop(baton, _ASKED_BACK) is _ASKED_BACK
            if reason != RETIRE:
                if self._wasted:
                    self._wasted -= 1
            elif not asked_back:
                self._count_waste()

    def _may_linger(self) -> bool:
        """With `MAX_LINGERING` readers lingering, whether one more may.

        If so, the one that lingered longest is asked back (``ask_back``: it
        comes back with `RETIRE`), so idle connections hold no greenlet;
        unless most readers asked back lately had waited in vain (more busy
        connections than lingering readers, each asked back before its
        connection's next bytes): then the new one does not linger, but for
        one in `PROBE_EVERY`, which tells when that changes.
        """
        if self._wasted >= WASTED_LIMIT:
            self._refused += 1
            if self._refused < PROBE_EVERY:
                return False
            self._refused = 0
        lingering = self._lingering
        oldest = next(iter(lingering))
        del lingering[oldest]
        oldest.ask_back()
        # Counted now, not when the reader gets back: when many connections
        # become readable at once, those asked back get back only after the
        # hub has started a reader for each of the others, which all linger
        # meanwhile (2,000 connecting: up to 1,054 readers of ~8 KiB alive at
        # once, where counting now keeps it under 180).
        self._count_waste()
        return True

    def _count_waste(self) -> None:
        self._wasted = min(self._wasted + WASTE_WEIGHT, 2 * WASTED_LIMIT)

    @property
    def lingering(self) -> int:
        """Readers lingering now."""
        return len(self._lingering)

    def retire(self, *glets: Any) -> None:
        """Those of `glets` that are ours end after their turn instead of coming back."""
        self._retired.update(glet for glet in glets if isinstance(glet, PoolReader))

    def dispatch(self, turn: Callable[[], bool]) -> None:
        """Run ``turn()`` in a reader greenlet: a parked one at once, else a new one.

        Must be called in the hub greenlet (a watcher or loop callback).
        `turn` must not raise: it is a connection's reading, which ends its
        connection on errors. It returns True when it checked `keeps_state`
        as the reader left.
        """
        if self._idle:
            self._idle.pop().switch(turn)
        else:
            PoolReader(self._serve, turn).start()

    def hand_over(self, turn: Callable[[], bool]) -> PoolReader:
        """A reader that runs ``turn()`` from the next turn of the loop: a
        parked one, else a new one. Unlike `dispatch`, it never switches: a
        reader blocking in a request hands its reading over so (in gevent's
        ``switch_out``), and saves a greenlet's start and end each time.
        """
        if self._idle:
            reader = self._idle.pop()
            self._gevent_hub.loop.run_callback(reader.switch, turn)
        else:
            reader = PoolReader(self._serve, turn)
            reader.start()
        return reader

    def _serve(self, turn: Callable[[], bool]) -> None:
        me: Any = gevent.getcurrent()
        hub_switch = self._gevent_hub.switch
        idle = self._idle
        retired = self._retired
        try:
            while True:
                checked = turn()
                if me in retired or len(idle) >= MAX_IDLE or (not checked and keeps_state(me)):
                    return
                idle.append(me)
                turn = hub_switch()
        finally:
            retired.discard(me)
            # Killed while parked (a fork, the hub's end): not parked any more.
            if me in idle:
                idle.remove(me)
