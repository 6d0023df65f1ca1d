"""Small shared helpers: id packs, method introspection, deadlines, spawning.

Nothing here touches a connection; `protocol`, `netref` and `server` build on it.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.monkey
from gevent._hub_local import get_hub_if_exists

__all__ = [
    "Timeout",
    "get_id_pack",
    "get_methods",
    "hasattr_static",
    "in_gevent",
    "kill_greenlets",
    "setup_logger",
    "spawn",
]

IdPack = tuple[str, int, int]


def _module_name_pack(module: Any) -> str:
    name = getattr(module, "__name__", None)
    if name in sys.modules:
        return str(name)
    return f"{type(module).__module__}.{name}"


def get_id_pack(obj: Any) -> IdPack:
    """The id pack ``(name_pack, class_id, instance_id)`` of a local object.

    PROTOCOL.md section 4: a class gets its own name and instance id 0; a
    module is named by its module name; a proxy keeps the id pack it was
    given, so an object received from a third party goes on by that name.
    """
    proxied = getattr(type(obj), "____id_pack__", None)
    if proxied is not None:
        return object.__getattribute__(obj, "____id_pack__")
    if inspect.ismodule(obj):
        return (_module_name_pack(obj), id(type(obj)), id(obj))
    if isinstance(obj, type):
        return (f"{obj.__module__}.{obj.__name__}", id(obj), 0)
    cls = type(obj)
    return (f"{cls.__module__}.{cls.__name__}", id(cls), id(obj))


def get_methods(local_names: Iterable[str], obj: Any) -> tuple[tuple[str, str | None], ...]:
    """Every routine along ``obj``'s MRO as ``(name, docstring)`` pairs.

    For a class, the metaclass MRO is included first, so a proxy of a class
    also answers the metaclass's methods. ``local_names`` (the attributes a
    proxy keeps local) are left out. This is the INSPECT answer (section 5).
    """
    skip = frozenset(local_names)
    classes: list[type] = list(reversed(type(obj).__mro__))
    if isinstance(obj, type):
        classes += list(reversed(obj.__mro__))
    # Later classes override earlier ones, also with non-routines
    # (``list.__hash__ = None`` hides ``object.__hash__``).
    attrs: dict[str, Any] = {}
    for cls in classes:
        attrs.update(vars(cls))
    return tuple(
        (name, inspect.getdoc(attr))
        for name, attr in attrs.items()
        if name not in skip and inspect.isroutine(attr)
    )


def hasattr_static(obj: Any, name: str) -> bool:
    """``hasattr`` that runs no descriptor or ``__getattr__`` code."""
    try:
        inspect.getattr_static(obj, name)
    except AttributeError:
        return False
    return True


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


def in_gevent() -> bool:
    """Whether code in this thread runs under gevent: monkey patched, or its hub exists.

    A connection made where this is False belongs to plain OS threads: it
    uses blocking sockets and is read by whichever thread waits on it, as in
    RPyC (DESIGN.md, "Callers outside gevent"). grpyc never creates a hub in
    such a thread itself, so the answer stays the same for the thread's life
    unless the program starts using gevent there.
    """
    return gevent.monkey.is_module_patched("socket") or get_hub_if_exists() is not None


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
