"""`AsyncResult`: the pending result of an asynchronous request.

RPyC-compatible API (`ready`, `error`, `expired`, `value`, `wait()`,
`add_callback()`, `set_expiry()`), and waitable with gevent: it has
`rawlink`/`unlink`, so `gevent.wait([res1, res2])` and `gevent.joinall`-style
waiting work. The connection's reader greenlet delivers the outcome through
`_deliver()`; nothing here reads a socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gevent.event import Event

if TYPE_CHECKING:
    from grpyc.protocol import Connection

__all__ = ["AsyncResult", "AsyncResultTimeout"]


class AsyncResultTimeout(TimeoutError):  # noqa: N818 - RPyC's name
    """The result did not arrive before its expiry. RPyC-compatible name."""


class AsyncResult:
    """The eventual result (or exception) of an asynchronous request.

    RPyC-compatible. Unlike RPyC, waiting never reads the socket: the reader
    greenlet resolves the result, so any number of greenlets may wait on it.
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_conn",
        "_deadline",
        "_event",
        "_is_exc",
        "_links",
        "_obj",
        "_unresolved",
    )

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._event = Event()
        self._is_exc = False
        self._obj: Any = None
        self._unresolved: tuple[Any, ...] = ()
        self._callbacks: list[Callable[[AsyncResult], Any]] = []
        self._deadline: float | None = None
        self._links: dict[Callable[[Any], Any], Callable[[Event], None]] = {}

    def __repr__(self) -> str:
        if self._event.is_set():
            state = "error" if self._is_exc else "ready"
        elif self.expired:
            state = "expired"
        else:
            state = "pending"
        return f"<AsyncResult object ({state}) at 0x{id(self):08x}>"

    def _deliver(self, is_exc: bool, obj: Any, unresolved: tuple[Any, ...] = ()) -> None:
        """Store the outcome; called by the reader greenlet, never blocks."""
        if self._event.is_set():
            return
        self._is_exc = is_exc
        self._obj = obj
        self._unresolved = unresolved
        self._event.set()
        for callback in self._callbacks:
            self._run_callback(callback)
        self._callbacks = []

    def _run_callback(self, callback: Callable[[AsyncResult], Any]) -> None:
        # Callbacks may call the peer (block), so each runs in its own greenlet;
        # the owner is the connection, which joins its greenlets on close.
        self._conn._hub.spawn_owned(callback, self)

    def wait(self) -> None:
        """Wait until the result arrives or expires.

        Raises:
            AsyncResultTimeout: the expiry passed first.
        """
        timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        hub = self._conn._hub
        if not hub.is_hub_thread():
            # A gevent Event cannot be waited on from another OS thread.
            hub.call_from_thread(self.wait, (), timeout)
            return
        if not self._event.wait(timeout):
            raise AsyncResultTimeout("result expired")

    def add_callback(self, func: Callable[[AsyncResult], Any]) -> None:
        """Call ``func(self)`` once the result arrives (at once if it has)."""
        if self._event.is_set():
            self._run_callback(func)
        else:
            self._callbacks.append(func)

    def set_expiry(self, timeout: float | None) -> None:
        """Make the result expire ``timeout`` seconds from now (None: never)."""
        self._deadline = None if timeout is None else time.monotonic() + timeout

    @property
    def ready(self) -> bool:
        """True once the result (value or exception) has arrived."""
        return self._event.is_set()

    @property
    def error(self) -> bool:
        """True if the result arrived and is an exception."""
        return self._event.is_set() and self._is_exc

    @property
    def expired(self) -> bool:
        """True if the expiry passed before the result arrived."""
        if self._event.is_set() or self._deadline is None:
            return False
        return time.monotonic() > self._deadline

    @property
    def value(self) -> Any:
        """The result: waits for it, raises the remote exception if it failed.

        Raises:
            AsyncResultTimeout: the expiry passed first.
        """
        self.wait()
        if self._unresolved:
            unresolved, self._unresolved = self._unresolved, ()
            self._conn._resolve_netref_classes(unresolved)
        if self._is_exc:
            raise self._obj
        return self._obj

    # gevent waiting protocol: lets gevent.wait() / gevent.iwait() take results.
    def rawlink(self, callback: Callable[[Any], Any]) -> None:
        """Call ``callback(self)`` from the hub once the result arrives."""

        def notify(_event: Event) -> None:
            callback(self)

        self._links[callback] = notify
        self._event.rawlink(notify)

    def unlink(self, callback: Callable[[Any], Any]) -> None:
        """Undo `rawlink`."""
        notify = self._links.pop(callback, None)
        if notify is not None:
            self._event.unlink(notify)
