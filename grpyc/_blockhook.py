"""Noticing that a request run inline in the reader blocks: gevent's ``switch_out``.

The gevent runtime runs a request inline in its background reader and, the
moment that request blocks, hands reading to another reader of the pool.
gevent calls ``switch_out()`` on the current greenlet, when it has one, each
time that greenlet switches to the hub: every wait of gevent (a sleep, a
lock, an event, a socket, a queue) goes through there. So while the reader
runs a request inline, it carries a ``switch_out`` in its instance dict, and
it carries none the rest of the time.

This replaced a greenlet trace function (``greenlet.settrace``), which saw
every switch of the thread: setting it, calling it and taking it off cost
~8,000 of the server's ~90,000 instructions per call. What the trace saw
and this does not: a request that switches straight to another greenlet
(``greenlet.switch``, not through gevent's hub) which then blocks. That
request keeps the connection's reading until it returns, as every request
does in RPyC's threaded server (docs/semantics.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["HOOK", "can_carry_hook", "resume_hook", "suspend_hook"]

HOOK = "switch_out"

# Greenlet classes by whether they may carry the hook: a class (or base)
# that defines ``switch_out`` itself needs it for its own purpose.
_carriers: dict[type, bool] = {}


def can_carry_hook(glet: Any) -> bool:
    """Whether `glet` may carry our ``switch_out`` (nothing else defines one)."""
    kind = type(glet)
    free = _carriers.get(kind)
    if free is None:
        # The class namespaces, not getattr: a failed class attribute lookup
        # formats an AttributeError message (~2,300 instructions).
        free = _carriers[kind] = all(HOOK not in vars(base) for base in kind.__mro__)
    return free and HOOK not in glet.__dict__


def suspend_hook(glet: Any) -> Callable[[], None] | None:
    """Take `glet`'s hook off for a wait of its own; pass the result to `resume_hook`."""
    hook: Callable[[], None] | None = glet.__dict__.pop(HOOK, None)
    return hook


def resume_hook(glet: Any, hook: Callable[[], None] | None) -> None:
    if hook is not None:
        glet.__dict__[HOOK] = hook
