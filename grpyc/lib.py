"""Small shared helpers: deadlines, threads and greenlets, logging (RPyC's ``rpyc.lib``).

Also the home, for RPyC's names, of the id packs and method lists
(`grpyc._introspect`) and `in_gevent` (`grpyc._streambase`). Nothing here
touches a connection; `protocol`, `netref` and `server` build on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent

from grpyc._introspect import IdPack as IdPack
from grpyc._introspect import get_id_pack as get_id_pack
from grpyc._introspect import get_methods as get_methods
from grpyc._introspect import hasattr_static as hasattr_static
from grpyc._streambase import in_gevent as in_gevent

__all__ = [
    "IdPack",
    "LeanGreenlet",
    "Timeout",
    "get_id_pack",
    "get_methods",
    "hasattr_static",
    "in_gevent",
    "kill_greenlets",
    "setup_logger",
    "spawn",
]


class Timeout:
    """A deadline: ``None`` never expires. RPyC-compatible."""

    __slots__ = ("deadline",)

    def __init__(self, timeout: float | Timeout | None) -> None:
        if isinstance(timeout, Timeout):
            self.deadline: float | None = timeout.deadline
        elif timeout is None:
            self.deadline = None
        else:
            self.deadline = time.monotonic() + max(0.0, float(timeout))

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def timeleft(self) -> float | None:
        """Seconds left (never negative), or None for no deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


class LeanGreenlet(gevent.Greenlet):  # type: ignore[misc]
    """A gevent `Greenlet` that does not record the stack it was spawned from.

    gevent keeps the spawner's last 10 frames on every greenlet for its
    debugging tools: ~0.6 KiB and ~1 µs each. grpyc's runtime makes its own
    greenlets (a reader per connection, handlers, one per accepted socket)
    in known places, so the record says nothing there; thousands of
    connections make it count (S3).
    """

    spawning_stack_limit = 0


def kill_greenlets(
    greenlets: Iterable[Any], *, finish_within: float = 0.0, timeout: float | None = None
) -> None:
    """Kill the live greenlets among `greenlets`, except the calling one.

    The one place grpyc ends the greenlets it owns (a connection's handlers
    and helpers, a server's, a registry's): each gets `GreenletExit` where it
    waits, so a handler may close its own connection or server.

    Args:
        greenlets: the greenlets to end (None entries and the caller are skipped).
        finish_within: seconds they get to end by themselves before the kill.
        timeout: seconds to wait for the killed ones to die; None: do not wait.
    """
    current = gevent.getcurrent()
    doomed = [g for g in greenlets if g is not None and g is not current and not g.dead]
    if not doomed:
        return
    if finish_within > 0:
        gevent.joinall(doomed, timeout=finish_within)
    if timeout is None:
        gevent.killall(doomed, block=False)
    else:
        gevent.killall(doomed, timeout=timeout)


def spawn(func: Callable[..., Any], *args: Any, **kwargs: Any) -> threading.Thread:
    """Start ``func(*args, **kwargs)`` in a new daemon thread and return it. RPyC-compatible.

    Under monkey patching the thread is a greenlet, as every thread is then.
    """
    thread = threading.Thread(target=func, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def setup_logger(
    quiet: bool = False, logfile: str | None = None, namespace: str | None = None
) -> logging.Logger:
    """Configure the root logger as RPyC's command-line tools do; return RPyC's logger.

    RPyC-compatible: `logging.basicConfig` (so nothing changes if the root
    logger already has a handler) at DEBUG, or ERROR when ``quiet``, to
    standard error or appended to ``logfile``; records show time, level,
    logger and thread names (quiet: time and level only).

    Args:
        quiet: log errors only, in the short format.
        logfile: write to this file instead of standard error.
        namespace: a child of the ``rpyc`` logger to return.

    Returns:
        The logger ``rpyc``, or ``rpyc.<namespace>``.
    """
    options: dict[str, Any] = {"datefmt": "%b %d %H:%M:%S"}
    if quiet:
        options.update(level=logging.ERROR, format="%(asctime)s %(levelname)s: %(message)s")
    else:
        options.update(
            level=logging.DEBUG,
            format="%(asctime)s %(levelname)s %(name)s[%(threadName)s]: %(message)s",
        )
    if logfile:
        options["filename"] = logfile
    logging.basicConfig(**options)
    return logging.getLogger("rpyc" if namespace is None else f"rpyc.{namespace}")
