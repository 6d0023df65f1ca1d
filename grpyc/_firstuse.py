"""Containers made on first use, for the per-connection state most connections never fill.

A list or a set is an object CPython's collector tracks, and a full
collection walks every tracked object of the process: for a server holding
thousands of connections, one empty list or set per connection and purpose
adds up (``python -m bench.gcpause``). Such state starts as the shared empty
tuple (`NO_ITEMS`), which is not tracked; `appended` and `added` make the
container when the first item comes. Reading needs nothing special: an empty
tuple is falsy, has no length and iterates over nothing.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["NO_ITEMS", "added", "appended"]

T = TypeVar("T")

NO_ITEMS: tuple[()] = ()


def appended(items: list[T] | tuple[()], item: T) -> list[T]:
    """`items` with `item` appended: the list itself, or a new one for `NO_ITEMS`."""
    if type(items) is list:
        items.append(item)
        return items
    return [item]


def added(items: set[T] | tuple[()], item: T) -> set[T]:
    """`items` with `item` added: the set itself, or a new one for `NO_ITEMS`."""
    if type(items) is set:
        items.add(item)
        return items
    return {item}
