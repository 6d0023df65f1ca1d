"""The collections of ``rpyc.lib.colls``, served as that module by the drop-in.

grpyc's own object tables live in `grpyc.protocol`; these two classes exist
so that RPyC programs importing ``rpyc.lib.colls`` keep working under
`grpyc.install_as_rpyc`. Each is safe to share between OS threads.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Any

__all__ = ["RefCountingColl", "WeakValueDict"]


class WeakValueDict:
    """A dictionary whose values are weak references. RPyC-compatible.

    An entry disappears when its value is collected. Where RPyC's iteration
    methods fail (its ``__iter__`` returns a keys view, not an iterator, so
    ``iter()``, ``values()`` and ``items()`` raise `TypeError`), these work.
    """

    __slots__ = ("_refs",)

    def __init__(self) -> None:
        self._refs: dict[Hashable, weakref.ref[Any]] = {}

    def __repr__(self) -> str:
        return repr(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._refs))

    def __contains__(self, key: Hashable) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __getitem__(self, key: Hashable) -> Any:
        value = self._refs[key]()
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self._refs[key] = weakref.ref(value, self._remover(key))

    def __delitem__(self, key: Hashable) -> None:
        del self._refs[key]

    def _remover(self, key: Hashable) -> Callable[[weakref.ref[Any]], None]:
        # Holds the dict, not self: a collected value must not keep the
        # mapping alive, and the callback may run after the mapping is gone.
        refs = self._refs

        def remove(ref: weakref.ref[Any]) -> None:
            if refs.get(key) is ref:
                del refs[key]

        return remove

    def get(self, key: Hashable, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> Any:
        return self._refs.keys()

    iterkeys = keys

    def itervalues(self) -> Iterator[Any]:
        for key in self:
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                yield value

    def values(self) -> list[Any]:
        return list(self.itervalues())

    def iteritems(self) -> Iterator[tuple[Hashable, Any]]:
        for key in self:
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                yield key, value

    def items(self) -> list[tuple[Hashable, Any]]:
        return list(self.iteritems())

    def clear(self) -> None:
        self._refs.clear()


_MISSING = object()


class RefCountingColl:
    """Objects by key, each with a count of extra additions. RPyC-compatible.

    `add` of a new key stores it with count 0 and each further `add` counts
    one up; `decref` counts down and removes the entry once the count would
    go below zero, exactly as RPyC's collection does.
    """

    __slots__ = ("_lock", "_slots")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key -> [object, count]; a list, so that repr() reads as RPyC's.
        self._slots: dict[Hashable, list[Any]] = {}

    def __repr__(self) -> str:
        return repr(self._slots)

    def add(self, key: Hashable, obj: Any) -> None:
        """Store ``obj`` under ``key``, or count one more addition of it."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                self._slots[key] = [obj, 0]
            else:
                slot[1] += 1

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()

    def decref(self, key: Hashable, count: int = 1) -> None:
        """Count ``count`` additions down; remove the entry when fewer remain.

        Raises:
            KeyError: ``key`` is not stored.
        """
        with self._lock:
            slot = self._slots[key]
            if slot[1] < count:
                del self._slots[key]
            else:
                slot[1] -= count

    def __getitem__(self, key: Hashable) -> Any:
        with self._lock:
            return self._slots[key][0]
