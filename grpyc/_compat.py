"""The names of ``rpyc.lib.compat``, served as that module by the drop-in.

RPyC 6 keeps a Python 2/3 compatibility module whose names some RPyC
programs still import (``maxint``, ``BYTES_LITERAL``, ``poll``, the
``is_py_*`` flags, ...). grpyc itself runs on Python 3.11+ and uses none of
them: this module exists only so that ``import rpyc.lib.compat`` keeps
working under `grpyc.install_as_rpyc`, with the values RPyC 6 gives them on
this interpreter. Nothing else in grpyc imports it.
"""

from __future__ import annotations

import pickle
import select as select_module
import sys
from io import BytesIO
from select import select
from struct import Struct
from typing import Any, Protocol

__all__ = [
    "BYTES_LITERAL",
    "BytesIO",
    "PollingPoll",
    "Struct",
    "TimeoutError",
    "acquire_lock",
    "callable",
    "execute",
    "get_exc_errno",
    "is_py_3k",
    "is_py_gte37",
    "is_py_gte38",
    "is_py_gte310",
    "is_py_gte311",
    "maxint",
    "next",
    "pickle",
    "poll",
    "select",
    "select_error",
    "select_module",
    "with_metaclass",
]

is_py_3k = True
is_py_gte311 = sys.version_info >= (3, 11)
is_py_gte310 = sys.version_info >= (3, 10)
is_py_gte38 = sys.version_info >= (3, 8)
is_py_gte37 = sys.version_info >= (3, 7)

maxint = sys.maxsize
execute = exec
select_error = select_module.error
# RPyC binds these builtins to module names of the same spelling.
next = next
callable = callable
TimeoutError = TimeoutError


def BYTES_LITERAL(text: str) -> bytes:  # noqa: N802 - RPyC's name
    """``text`` encoded as UTF-8. RPyC-compatible."""
    return bytes(text, "utf8")


def get_exc_errno(exc: BaseException) -> Any:
    """The ``errno`` of an `OSError` (else ``exc[0]``, as RPyC does). RPyC-compatible."""
    if hasattr(exc, "errno"):
        return exc.errno
    return exc[0]  # type: ignore[index]


class _Deadline(Protocol):
    def timeleft(self) -> float | None: ...


def acquire_lock(lock: Any, blocking: bool, timeout: _Deadline) -> bool:
    """Acquire ``lock``, waiting at most until ``timeout`` (a `grpyc.lib.Timeout`) ends.

    RPyC-compatible; ``timeout`` is grpyc's `Timeout`, which is what
    ``rpyc.lib.Timeout`` names under the drop-in.
    """
    seconds = timeout.timeleft()
    if blocking and seconds is not None:
        return bool(lock.acquire(blocking, seconds))
    return bool(lock.acquire(blocking))


def with_metaclass(meta: type[type], *bases: type) -> type:
    """A base class whose subclasses are made by ``meta`` with ``bases``. RPyC-compatible."""

    class _Deferred(type):
        # The temporary base replaces itself: the class statement that
        # subclasses it gets ``meta(name, bases, namespace)`` instead.
        def __new__(
            cls, name: str, this_bases: tuple[type, ...], namespace: dict[str, Any]
        ) -> type:
            return meta(name, bases, namespace)

    return type.__new__(_Deferred, "temporary_class", (), {})


# RPyC's mode letters and the poll() event bits behind each.
_POLLRDHUP = 0x2000  # Linux-only; the select module does not name it
_REGISTER_BITS = {
    "r": select_module.POLLIN | select_module.POLLPRI,
    "w": select_module.POLLOUT,
    "e": select_module.POLLERR,
    "h": select_module.POLLHUP | select_module.POLLNVAL | _POLLRDHUP,
}
_EVENT_LETTERS = (
    (select_module.POLLIN | select_module.POLLPRI, "r"),
    (select_module.POLLOUT, "w"),
    (select_module.POLLERR, "e"),
    (select_module.POLLHUP, "h"),
    (select_module.POLLNVAL, "n"),
)


class PollingPoll:
    """RPyC's poll object: `select.poll` with mode letters and timeouts in seconds.

    RPyC-compatible. Modes combine ``"r"`` (readable), ``"w"`` (writable),
    ``"e"`` (error) and ``"h"`` (hang-up); `poll` answers ``(fd, letters)``
    pairs, where ``"n"`` marks an invalid descriptor. It blocks the calling
    thread, as RPyC's does, unless gevent's monkey patching replaced
    `select.poll`.
    """

    def __init__(self) -> None:
        self._poll = select_module.poll()

    def register(self, fd: Any, mode: str) -> None:
        flags = 0
        for letter, bits in _REGISTER_BITS.items():
            if letter in mode:
                flags |= bits
        self._poll.register(fd, flags)

    modify = register

    def unregister(self, fd: Any) -> None:
        self._poll.unregister(fd)

    def poll(self, timeout: float | None = None) -> list[tuple[int, str]]:
        """Ready descriptors within ``timeout`` seconds (``None`` or 0: as `select.poll`)."""
        # RPyC passes 0 through unchanged, like None; only a positive timeout is scaled.
        milliseconds = 1000 * timeout if timeout else timeout
        return [
            (fd, "".join(letter for bits, letter in _EVENT_LETTERS if event & bits))
            for fd, event in self._poll.poll(milliseconds)
        ]


poll = PollingPoll
