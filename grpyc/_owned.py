"""The helper greenlets one cooperative connection owns, and the ones spared at its close.

A connection's flushes, result callbacks, watchdog checks and calls handed
from other threads run in helper greenlets it owns: they die with it. A
greenlet may be *spared* for a while (a callback that closes its own
connection must live on to return); the hub asks for the doomed ones when
it shuts down and kills them itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
from gevent import Greenlet, GreenletExit

from grpyc._firstuse import NO_ITEMS, added
from grpyc.lib import LeanGreenlet

__all__ = ["OwnedGreenlets"]


class OwnedGreenlets:
    """The live helper greenlets of one connection, and those spared."""

    __slots__ = ("_glets", "_logger", "_name", "_spared")

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self._name = name
        self._logger = logger
        # Made on first use (`grpyc._firstuse`): most connections never own a
        # helper for long, or spare one.
        self._glets: set[Greenlet] | tuple[()] = NO_ITEMS
        self._spared: set[Any] | tuple[()] = NO_ITEMS

    def spawn(self, func: Callable[..., Any], *args: Any) -> Greenlet:
        """Run ``func(*args)`` in a new owned greenlet; an error it raises is logged."""
        glet = LeanGreenlet(self._run, func, args)
        self._glets = added(self._glets, glet)
        glet.start()
        return glet

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            func(*args)
        except GreenletExit:
            pass  # killed at shutdown
        except BaseException:
            self._logger.exception("%s: error in background greenlet", self._name)
        finally:
            glets = self._glets
            if type(glets) is set:  # else `doomed` took them, or another left none
                glets.discard(gevent.getcurrent())
                if not glets:
                    self._glets = NO_ITEMS  # the usual helper is a one-off: no set kept

    @contextlib.contextmanager
    def sparing(self, glet: Any) -> Iterator[None]:
        """Within this block, `glet` is not among the `doomed`."""
        spared = self._spared = added(self._spared, glet)
        try:
            yield
        finally:
            spared.discard(glet)

    def doomed(self, others: Iterable[Any]) -> list[Any]:
        """The greenlets to kill at shutdown: ours and `others`, less the spared.

        Forgets ours: whoever asks kills them.
        """
        doomed = [glet for glet in (*others, *self._glets) if glet not in self._spared]
        self._glets = NO_ITEMS
        return doomed
