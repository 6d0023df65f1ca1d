"""What both connection runtimes share: the pending replies, the close state, a call.

`hub.ConnectionHub` (greenlets) and `_threadhub.ThreadHub` (plain threads)
subclass `Runtime`; they differ in how they read, wait and write, not in
what a call is: register a slot for its ``seq``, send, wait for the slot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from grpyc.config import Limits
from grpyc.framing import Payload

__all__ = ["ChannelLike", "ReplySlot", "Runtime"]


class ChannelLike(Protocol):
    """What the runtime needs of a channel (`grpyc.channel.Channel` has it all)."""

    def send(self, data: Payload) -> None: ...
    def recv(self) -> bytes: ...
    def next_buffered(self) -> bytes | None: ...
    def fill(self) -> None: ...
    def has_pending_input(self) -> int: ...
    def has_buffered_frame(self) -> bool: ...
    def set_progress(self, progress: Callable[[], None] | None) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class ReplySlot:
    """Where the reply to one request lands.

    Whoever reads the reply calls `deliver`; a caller sleeping on the slot
    sets `wake` (how to wake it in its runtime) while it sleeps. The outcome
    is handed over through an attribute, not through the wake, so nothing
    else keeps a (possibly huge) reply alive once the caller drops it.
    """

    # Class defaults, not ``__slots__`` and ``__init__``: a call makes one,
    # and without a Python ``__init__`` making it runs no Python frame.
    outcome: tuple[bool, Any, tuple[Any, ...]] | None = None
    wake: Callable[[], Any] | None = None

    def deliver(self, is_exc: bool, obj: Any, unresolved: tuple[Any, ...] = ()) -> None:
        if self.outcome is not None:
            return
        self.outcome = (is_exc, obj, unresolved)
        wake, self.wake = self.wake, None
        if wake is not None:
            wake()


class Runtime:
    """The part of a connection's runtime that does not depend on how it waits."""

    __slots__ = (
        "_channel",
        "_close_reason",
        "_closed",
        "_closed_callbacks",
        "_on_closed",
        "_on_frame",
        "_read_reply",
        "last_received",
        "logger",
        "name",
        "pending",
    )

    def __init__(
        self,
        channel: Any,
        on_frame: Callable[[bytes], None],
        on_closed: Callable[[BaseException], None],
        *,
        name: str,
        logger: logging.Logger,
        limits: Limits,
        take_deferred: Callable[[], list[bytes]] | None = None,
        read_reply: Callable[[bytes, int], Any] | None = None,
    ) -> None:
        """The runtime of one connection over `channel`.

        Args:
            on_frame: handles one frame's payload (the protocol's dispatch).
            on_closed: runs once when the connection has closed.
            name, logger: for the log lines of this connection.
            limits: the bounds the runtime enforces (`config.Limits`).
            take_deferred: returns the frames that wait to go out last (DELs).
            read_reply: ``read_reply(payload, seq)``: the ``(is_exc, obj, unresolved)``
                outcome if the frame is the reply to `seq` (left in `pending` for
                its caller to take), else None, the frame handled as `on_frame`
                would. A runtime may use it for a caller that reads its own reply.
        """
        self.name = name
        self.logger = logger
        # seq -> the slot (or AsyncResult) that takes the reply.
        self.pending: dict[int, Any] = {}
        self.last_received = time.monotonic()
        self._channel = channel
        self._on_frame = on_frame
        self._read_reply = read_reply
        self._on_closed = on_closed
        self._closed = False
        self._close_reason: BaseException | None = None
        self._closed_callbacks: list[Callable[[], None]] | None = None
        self._set_up(channel, limits, take_deferred)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> BaseException | None:
        return self._close_reason

    def expect_reply(self, seq: int, slot: Any) -> None:
        """Deliver the reply to request `seq` to `slot` (its ``deliver`` method)."""
        self.pending[seq] = slot

    def take_reply(self, seq: int) -> Any:
        """The slot waiting for the reply to `seq`, no longer pending; None if nobody waits."""
        return self.pending.pop(seq, None)

    def call(self, seq: int, payload: Payload, timeout: float | None) -> Any:
        """Send request `payload` and wait for its reply.

        Returns:
            The delivered ``(is_exc, obj, unresolved)``, or None on timeout.

        Raises:
            EOFError: the connection is closed.
        """
        if self._closed:  # `_raise_if_closed` inlined: once a call
            raise EOFError(f"connection {self.name} is closed")
        slot = self.new_slot()
        self.pending[seq] = slot
        try:
            self.send(payload)
            return self.wait_reply(slot, timeout)
        finally:
            self.pending.pop(seq, None)

    def _mark_closed(self, reason: BaseException) -> bool:
        """Record the close; False if the connection was closed already."""
        if self._closed:
            return False
        self._closed = True
        # Kept without its traceback: its frames may hold a whole frame's bytes.
        self._close_reason = reason.with_traceback(None)
        return True

    def _fail_pending(self, reason: BaseException) -> None:
        """Every call still waiting fails at once with `EOFError`."""
        pending, self.pending = self.pending, {}
        for slot in pending.values():
            slot.deliver(True, EOFError(f"connection closed: {reason}"))

    def when_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the connection has closed (now, if it has)."""
        if self._closed:
            callback()
            return
        if self._closed_callbacks is None:
            self._closed_callbacks = []
        self._closed_callbacks.append(callback)

    def _run_on_closed(self, reason: BaseException) -> None:
        try:
            self._on_closed(reason)
        except Exception:  # on_closed runs user code (on_disconnect): log, never raise
            self.logger.exception("%s: error while closing", self.name)
        callbacks, self._closed_callbacks = self._closed_callbacks or [], None
        for callback in callbacks:
            try:
                callback()
            except Exception:
                self.logger.exception("%s: error in a close callback", self.name)

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise EOFError(f"connection {self.name} is closed")

    # What each runtime provides.
    def _set_up(
        self, channel: Any, limits: Limits, take_deferred: Callable[[], list[bytes]] | None
    ) -> None:
        raise NotImplementedError

    @property
    def limits(self) -> Limits:
        raise NotImplementedError

    def new_slot(self) -> ReplySlot:
        return ReplySlot()

    def send(self, payload: Payload) -> None:
        raise NotImplementedError

    def wait_reply(self, slot: Any, timeout: float | None) -> Any:
        raise NotImplementedError
