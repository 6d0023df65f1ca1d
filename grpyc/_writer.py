"""The writer of one cooperative connection: whole frames, never interleaved.

The greenlet that finds the writer idle writes its frame and everything
queued meanwhile in one go (small frames coalesce into one ``sendall``);
others only queue. Code that must never block (the reader, hub callbacks,
``__del__``) queues and schedules a flush, which a greenlet of the owning
hub runs.

Everything waiting to be written counts against ``max_send_buffer``,
deferred frames (DELs) included: a peer that stops reading cannot make this
side buffer without bound; past the limit the connection closes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from gevent.monkey import get_original
from greenlet import getcurrent

from grpyc._firstuse import NO_ITEMS, appended
from grpyc.framing import Payload

__all__ = ["FrameSink", "Writer"]

_get_ident: Callable[[], int] = get_original("_thread", "get_ident")

# The longest a DEL waits for a frame to ride with. A DEL written on its own
# costs a greenlet, a send and the peer's reply; in a run of calls the next
# request carries it at no cost (root.echo: GETATTR, CALL, then the method
# proxy's DEL). The peer frees the object at most this much later. Not
# shorter than the kernel's 4 ms tick: a sooner timer is the first the CPU
# waits for, and every epoll_wait then reprograms the timer hardware (in a
# VM, an exit each time). Same run against 2 ms: S6 callbacks 1.12x, the
# depth-50 chain 0.94x the time.
DEFERRED_FLUSH_DELAY = 0.02


class FrameSink(Protocol):
    """What the writer writes to: a channel (``send_many`` is optional)."""

    def send(self, data: Payload) -> None: ...


class Writer:
    """Queue and write frames of one connection (see the module docstring)."""

    __slots__ = (
        "_channel", "_cork_owner", "_deferred_bytes", "_dels_noted",
        "_fail", "_flush_scheduled", "_gevent_hub", "_held", "_later", "_logger", "_name",
        "_outbox", "_outbox_bytes", "_release_scheduled", "_spawn", "_take_deferred",
        "_thread_ident", "_timer", "closed", "max_send_buffer", "writing",
    )  # fmt: skip

    def __init__(
        self,
        channel: FrameSink,
        *,
        gevent_hub: Any,
        name: str,
        logger: logging.Logger,
        max_send_buffer: int,
        take_deferred: Callable[[], list[bytes]] | None,
        spawn: Callable[..., Any],
        fail: Callable[[BaseException], None],
    ) -> None:
        self._channel = channel
        self._gevent_hub = gevent_hub
        self._thread_ident = _get_ident()
        self._name = name
        self._logger = logger
        self.max_send_buffer = max_send_buffer
        self._take_deferred = take_deferred
        self._spawn = spawn
        self._fail = fail
        # The queues are made on first use and dropped once written
        # (`grpyc._firstuse`): most connections are idle most of the time.
        self._outbox: list[Payload] | tuple[()] = NO_ITEMS
        self._outbox_bytes = 0
        self._deferred_bytes = 0
        self._later: list[Payload] | tuple[()] = NO_ITEMS  # deferred frames of ours (`defer`)
        self._dels_noted = False  # whether `take_deferred` has frames for us
        self.writing = False
        self._flush_scheduled = False
        self._timer: Any = None
        self._cork_owner: Any = None
        self._held = False
        self._release_scheduled = False
        self.closed = False

    def send(self, payload: Payload) -> None:
        """Write one frame now (with whatever is queued), or queue it if a write is
        under way or the calling greenlet corked the writer.

        May block the calling greenlet while the socket is full.
        """
        owner = self._cork_owner  # usually None: no getcurrent() then
        if self.writing or self._held or (owner is not None and owner is getcurrent()):
            self.enqueue(payload)
        elif self._outbox or self._dels_noted:
            self.enqueue(payload)
            self.flush()
        elif self._deferred_bytes:  # only answers of ours wait (`defer`): they go along
            frames = [payload, *self._later]
            self._later = NO_ITEMS
            self._deferred_bytes = 0
            self._drain(frames)
        else:
            # Nothing waits: write it here, no queue round trip (what `_drain`
            # does for one frame, without its two calls: once per answer).
            self.writing = True
            try:
                self._channel.send(payload)
            except BaseException as exc:  # noqa: BLE001 - `_write_failed` re-raises
                self._write_failed(exc)
            finally:
                self.writing = False
            if self._outbox or self._deferred_bytes:
                self.flush()  # queued while the socket was full

    def cork(self, owner: Any) -> None:
        """Queue `owner`'s frames until `uncork`: a reader answering a batch of
        buffered requests inline writes the answers in one go, not one each."""
        self._cork_owner = owner

    def uncork(self, release_hold: bool = False) -> None:
        """Write what the corked greenlet queued (runs in that greenlet; may block).

        A hold (`hold`) stays until `release_hold`, which `release_hold=True`
        calls after (the baton holder does both before it waits, twice a call).
        """
        self._cork_owner = None
        if self._outbox and not self._held and not self.writing and not self.closed:
            self.flush()
        elif self._later:
            self.schedule_deferred_flush()  # deferred while corked, and nothing took them
        if release_hold and self._held:
            self.release_hold()

    def hold(self) -> None:
        """Queue every greenlet's frames until `release_hold`.

        The holder of the read baton calls this as it wakes another caller
        with its reply, or with the baton to read its own buffered reply:
        in a batch of replies each woken caller sends its next request at
        once, and one write for all of them costs the peer one wake-up
        instead of one each (S2, 64 callers on one connection). The holder
        releases the hold when no buffered frame is left.
        """
        self._held = True

    def release_hold(self) -> None:
        """End a hold from a hub callback queued now, after the callers woken so far.

        Never blocks or switches.
        """
        if self._held and not self._release_scheduled:
            self._release_scheduled = True
            self._gevent_hub.loop.run_callback(self._release_hold)

    def _release_hold(self) -> None:
        # Runs in the hub greenlet after the woken callers: write from a greenlet.
        self._release_scheduled = False
        self._held = False
        if self._outbox and not self.writing and not self.closed:
            self._spawn(self.flush)

    def release_cork(self) -> None:
        """The corked greenlet stopped reading (it blocked): have its frames written
        from a hub callback. Never blocks or switches."""
        if self._cork_owner is not None:
            self._cork_owner = None
            if self._outbox or self._later:
                self.schedule_flush()

    def enqueue(self, payload: Payload) -> None:
        self._outbox = appended(self._outbox, payload)
        self._outbox_bytes += len(payload)
        if self.writing:
            self._check_budget()

    def defer(self, payload: Payload) -> None:
        """Queue a frame nobody waits for (a DEL's answer) as a deferred one: it
        goes with the next frame written, or `DEFERRED_FLUSH_DELAY` from now.

        In a callback's round trips the peer's DEL of the callback comes with
        the answer; its own answer, written alone, cost this side a write and
        the peer a wake-up per call. Never blocks or switches.
        """
        self._later = appended(self._later, payload)
        self._deferred_bytes += len(payload)
        self._check_budget()
        if self._cork_owner is None:
            self.schedule_deferred_flush()
        # Else a reader answers a batch (the DEL came with a request, as from
        # a client calling in a loop): `uncork` writes it with the batch's
        # answers, or schedules the flush if the batch had none.

    def note_deferred(self, size: int) -> None:
        """`size` more bytes wait in deferred frames (DELs); they count against the budget."""
        self._deferred_bytes += size
        self._dels_noted = True
        self._check_budget()

    def _check_budget(self) -> None:
        queued = self._outbox_bytes + self._deferred_bytes
        if queued > self.max_send_buffer and not self.closed:
            # The peer is not reading: buffering on would grow without bound.
            self._logger.warning(
                "%s: closing: %d bytes queued for a peer that does not read (max_send_buffer=%d)",
                self._name,
                queued,
                self.max_send_buffer,
            )
            self._fail(EOFError("peer stopped reading; send buffer limit reached"))

    def schedule_flush(self) -> None:
        """Make sure queued and deferred frames get written soon.

        Safe from ``__del__`` and from other OS threads: it only schedules.
        """
        if self._flush_scheduled or self.closed:
            return
        self._flush_scheduled = True
        loop = self._gevent_hub.loop
        if _get_ident() == self._thread_ident:
            loop.run_callback(self._flush_from_hub)
        else:
            loop.run_callback_threadsafe(self._flush_from_hub)

    def schedule_deferred_flush(self) -> None:
        """Make sure deferred frames (DELs) get written: with the next frame
        written, or `DEFERRED_FLUSH_DELAY` seconds from now at the latest.

        Safe from ``__del__`` and from other OS threads: it only schedules.
        """
        if self._flush_scheduled or self.closed:
            return  # a flush is coming anyway
        if _get_ident() != self._thread_ident:
            self.schedule_flush()
            return
        timer = self._timer
        if timer is not None and timer.active:
            return  # it writes whatever still waits when it fires
        # One timer for every DEL until it fires: in a run of calls the next
        # request carries each DEL, and the timer finds nothing to write. A
        # look at the next turn of the loop first (one loop callback per DEL)
        # cost ~5k instructions of a `root.echo`'s 427k, the timer's making
        # ~5.7k once per DEFERRED_FLUSH_DELAY.
        if timer is not None:
            timer.close()
        # A new watcher on a fresh clock: a libev timer restarted after it
        # fired keeps its old expiry, and the loop's clock is as old as its
        # last turn; either way it would fire at once.
        timer = self._timer = self._gevent_hub.loop.timer(DEFERRED_FLUSH_DELAY)
        timer.start(self._flush_from_hub, update=True)

    def _flush_from_hub(self) -> None:
        # Runs in the hub greenlet, which must not block: write from a greenlet,
        # unless a write since the flush was scheduled took everything.
        self._flush_scheduled = False
        if self.writing or self.closed:
            return
        if self._outbox or self._deferred_bytes:
            self._spawn(self.flush)

    def flush(self) -> None:
        """Write queued frames until none are left; runs in one greenlet at a time."""
        self._drain(None)

    def _drain(self, frames: list[Payload] | None) -> None:
        # Writes `frames` (if any), then whatever was queued meanwhile.
        self.writing = True
        try:
            while not self.closed:
                if frames is None:
                    if not (self._outbox or self._deferred_bytes):
                        break  # the usual case: nothing was queued meanwhile
                    frames = self._collect_frames()
                    if not frames:
                        break
                self._write_frames(frames)
                frames = None
        except BaseException as exc:  # noqa: BLE001 - `_write_failed` re-raises
            self._write_failed(exc)
        finally:
            self.writing = False

    def _write_failed(self, exc: BaseException) -> None:
        """A write raised `exc`: the connection ends; re-raises what is not a lost peer."""
        if isinstance(exc, (EOFError, OSError)):
            self._fail(EOFError(f"connection lost while writing: {exc}"))
            return
        # Interrupted mid-write (a Timeout or kill of the writing greenlet):
        # a partial frame cannot be taken back, so the stream is unusable.
        if not self.closed:
            self._logger.warning("%s: closing: write interrupted by %r", self._name, exc)
        self._fail(EOFError(f"write interrupted by {exc!r}"))
        raise exc

    def _collect_frames(self) -> list[Payload]:
        # Queued frames go before deferred ones (DELs): a frame queued earlier
        # may refer to the object a DEL releases.
        frames = self._outbox if type(self._outbox) is list else []
        self._outbox = NO_ITEMS
        self._outbox_bytes = 0
        if self._deferred_bytes:
            self._deferred_bytes = 0
            if self._dels_noted and self._take_deferred is not None:
                self._dels_noted = False
                frames.extend(self._take_deferred())
            if self._later:
                frames.extend(self._later)
                self._later = NO_ITEMS
        return frames

    def _write_frames(self, frames: list[Payload]) -> None:
        if len(frames) == 1:
            self._channel.send(frames[0])
            return
        send_many = getattr(self._channel, "send_many", None)
        if send_many is not None:
            send_many(frames)
            return
        for frame in frames:
            self._channel.send(frame)

    def close(self) -> None:
        self.closed = True
        self._cork_owner = None
        self._held = False
        if self._timer is not None:
            self._timer.close()
        self._outbox = NO_ITEMS
        self._outbox_bytes = 0
        self._deferred_bytes = 0
        self._later = NO_ITEMS
