"""A hook that calls back when a watched greenlet switches away (greenlet's trace).

The gevent runtime runs a request inline in its background reader and, the
moment that request blocks (any switch away from the reader other than its
own waits), hands reading to a new reader. This module owns the hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import greenlet
from gevent.monkey import get_original

__all__ = ["SwitchWatch"]

_get_ident: Callable[[], int] = get_original("_thread", "get_ident")


class SwitchWatch:
    """Calls back when a watched greenlet switches away (greenlet's trace hook).

    One per OS thread, installed by the first connection of that thread; it
    chains to any trace function installed before it. Hubs check
    `is_installed` before relying on it, so a later ``greenlet.settrace`` by
    someone else only turns the inline fast path off.
    """

    _by_thread: ClassVar[dict[int, SwitchWatch]] = {}

    def __init__(self) -> None:
        self._watched: dict[Any, Callable[[Any], None]] = {}
        self._trace = self._on_switch
        self._previous = greenlet.settrace(self._trace)

    @classmethod
    def for_this_thread(cls) -> SwitchWatch:
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
