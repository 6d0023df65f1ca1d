"""The helpers ``rpyc.lib`` has and `grpyc.lib` does not, for the drop-in.

`grpyc.install_as_rpyc` builds ``rpyc.lib`` from `grpyc.lib` and this
module, so RPyC programs that import ``safe_import``, ``hybridmethod``,
``spawn_waitready`` and the like from ``rpyc.lib`` keep working. grpyc's own
code does not use them. Where RPyC starts a thread, these start a greenlet,
as `grpyc.lib.spawn` does.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.socket as gsocket

__all__ = [
    "SPAWN_THREAD_PREFIX",
    "MissingModule",
    "exp_backoff",
    "hybridmethod",
    "safe_import",
    "socket_backoff_connect",
    "spawn_waitready",
]

# RPyC names its spawned threads with this prefix; grpyc spawns greenlets
# and keeps the constant for programs that read it.
SPAWN_THREAD_PREFIX = "RpycSpawnThread"


class MissingModule:
    """Stands in for a module that could not be imported. RPyC-compatible.

    It is false in a boolean test; any attribute raises `ImportError`
    naming the module (dunder names raise `AttributeError`, so that
    `hasattr`, `copy` and `pickle` probes see a plain missing attribute).
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        message = f"module {self._name!r} not found"
        if attr.startswith("__"):
            raise AttributeError(message)
        raise ImportError(message)

    def __bool__(self) -> bool:
        return False


def safe_import(name: str) -> Any:
    """The module ``name`` (a dotted name gives the leaf module), or a `MissingModule`.

    RPyC-compatible: only `ImportError` is turned into a `MissingModule`;
    any other error the module raises while importing propagates.
    """
    try:
        return __import__(name, None, None, "*")
    except ImportError:
        return MissingModule(name)


class hybridmethod:  # noqa: N801 - RPyC's name
    """A method bound to the instance, or to the class when read from the class.

    RPyC-compatible. The attribute cannot be assigned on an instance.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        return self.func.__get__(cls if obj is None else obj, obj)

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"cannot overwrite hybrid method {self.func.__name__!r}")


def spawn_waitready(
    init: Callable[[], Any], main: Callable[[], Any]
) -> tuple[gevent.Greenlet, Any]:
    """Run ``init`` then ``main`` in a new greenlet; return once ``init`` is done.

    RPyC-compatible, with a greenlet where RPyC starts a thread.

    Returns:
        ``(greenlet, init_result)``.

    Raises:
        Exception: what ``init`` raised (RPyC's caller would wait forever);
            ``main`` does not run then.
    """
    init_done: gevent.event.AsyncResult = gevent.event.AsyncResult()

    def run() -> Any:
        try:
            init_done.set(init())
        except Exception as exc:  # noqa: BLE001 - goes to the caller waiting on init_done
            init_done.set_exception(exc)
            return None
        return main()

    greenlet = gevent.spawn(run)
    return greenlet, init_done.get()


def exp_backoff(collision: int) -> float:
    """Seconds to wait after the ``collision``-th failed connect. RPyC-compatible.

    Binary exponential backoff in slots of 51.2 microseconds: a random
    number of slots below ``2**min(collision, 10)`` (one slot less past the
    third collision). Draws from `random`, as RPyC does.
    """
    exponent = min(collision, 10)
    upper = 2**exponent - (1 if exponent > 3 else 0)
    return random.uniform(0, upper) * 0.0000512  # noqa: S311 - jitter, not a secret


def socket_backoff_connect(
    family: int, socktype: int, proto: int, addr: Any, timeout: float | None, attempts: int
) -> Any:
    """A socket connected to ``addr``, retrying timed-out attempts with `exp_backoff`.

    RPyC-compatible. The socket is a gevent socket (its waits yield to
    other greenlets) with ``timeout`` set. ``attempts`` below 1 means one
    attempt.

    Raises:
        TimeoutError: the last attempt timed out.
        OSError: an attempt failed otherwise (refused, unreachable, ...).
    """
    collision = 0
    while True:
        collision += 1
        sock = gsocket.socket(family, socktype, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(addr)
        except TimeoutError:
            sock.close()
            if collision == attempts or attempts < 1:
                raise
        except BaseException:
            sock.close()
            raise
        else:
            return sock
        gevent.sleep(exp_backoff(collision))
