"""What both connection runtimes share: the pending replies, the close state, a call.

`hub.ConnectionHub` (greenlets) and `_threadhub.ThreadHub` (plain threads)
subclass `Runtime`; they differ in how they read, wait and write, not in
what a call is: register a slot for its ``seq``, send, wait for the slot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from grpyc.config import Limits

__all__ = ["Runtime"]


class Runtime:
    """The part of a connection's runtime that does not depend on how it waits."""

    __slots__ = (
        "_channel",
        "_close_reason",
        "_closed",
        "_on_closed",
        "_on_frame",
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
    ) -> None:
        self.name = name
        self.logger = logger
        # seq -> the slot (or AsyncResult) that takes the reply.
        self.pending: dict[int, Any] = {}
        self.last_received = time.monotonic()
        self._channel = channel
        self._on_frame = on_frame
        self._on_closed = on_closed
        self._closed = False
        self._close_reason: BaseException | None = None

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

    def call(self, seq: int, payload: bytes, timeout: float | None) -> Any:
        """Send request `payload` and wait for its reply.

        Returns:
            The delivered ``(is_exc, obj, unresolved)``, or None on timeout.

        Raises:
            EOFError: the connection is closed.
        """
        self._raise_if_closed()
        slot = self.new_slot()
        self.pending[seq] = slot
        try:
            self.send(payload)
            return self.wait_reply(slot, timeout)
        finally:
            self.pending.pop(seq, None)

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise EOFError(f"connection {self.name} is closed")

    # What each runtime provides.
    @property
    def limits(self) -> Limits:
        raise NotImplementedError

    def new_slot(self) -> Any:
        raise NotImplementedError

    def send(self, payload: bytes) -> None:
        raise NotImplementedError

    def wait_reply(self, slot: Any, timeout: float | None) -> Any:
        raise NotImplementedError
