"""Checks of caller-given arguments: counts, timeouts, seconds and ports.

One place for these rules, so every edge (servers, the command line, the
registry) accepts the same values and words its `ValueError` the same way:
the argument's name, the rule, and the value given. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, TypeGuard

__all__ = [
    "ANY_PORT",
    "MAX_PORT",
    "check_count",
    "check_file_mode",
    "check_keepalive",
    "check_port",
    "check_seconds",
    "check_timeout",
    "is_number",
]

# TCP and UDP ports are 16-bit; 0 is not a port but a request for any free one.
MAX_PORT = 65535
ANY_PORT = 0


def is_number(value: Any) -> TypeGuard[int | float]:
    """True for ints and floats, not bools (``True`` is an int to Python, not a duration)."""
    return not isinstance(value, bool) and isinstance(value, int | float)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_count(name: str, value: Any) -> int:
    """`value` if it is an int >= 1, else ValueError naming `name`."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def check_timeout(name: str, value: Any) -> float | None:
    """`value` if it is a number of seconds > 0 or None (no limit), else ValueError."""
    if value is None or (is_number(value) and value > 0):
        return value
    raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")


def check_seconds(name: str, value: Any) -> float:
    """`value` as a float if it is a number of seconds >= 0, else ValueError."""
    if not (is_number(value) and value >= 0):
        raise ValueError(f"{name} must be seconds >= 0, got {value!r}")
    return float(value)


def check_keepalive(value: Any) -> bool | int:
    """TCP keepalive: a bool, or the seconds between probes as an int >= 1."""
    if isinstance(value, bool) or (_is_int(value) and value >= 1):
        return value
    raise ValueError(f"keepalive must be a bool or seconds >= 1, got {value!r}")


def check_file_mode(name: str, value: Any) -> int:
    """`value` if it is file permission bits, an int in 0..0o7777, else ValueError."""
    if not _is_int(value) or not 0 <= value <= 0o7777:
        raise ValueError(f"{name} must be permission bits (an int in 0..0o7777), got {value!r}")
    return int(value)


def check_port(value: Any, *, any_port: bool, name: str = "port") -> int:
    """`value` if it is a port: an int in 1..65535, or 0 where `any_port` allows it.

    Args:
        value: the port given.
        any_port: whether 0 ("any free port", for binding) is allowed.
        name: the argument's name in the message.
    """
    lowest = ANY_PORT if any_port else 1
    if not _is_int(value) or not lowest <= value <= MAX_PORT:
        rule = f"an int in 1..{MAX_PORT}" + (
            f", or {ANY_PORT} for any free port" if any_port else ""
        )
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return int(value)
