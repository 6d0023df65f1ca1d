"""Boxing: values to and from their wire form, and the two tables behind it (PROTOCOL.md section 4).

- `ObjectTable`: local objects the peer holds references to, counted per id
  pack (+1 per box, -count per DEL), bounded by ``max_exported_objects``.
- `ProxyTable`: proxies of the peer's objects (weakly cached per id pack, so
  one remote object has one proxy and its reference count is exact) and the
  proxy classes built from INSPECT answers (an LRU bounded by
  ``max_netref_classes``).
- `Boxer`: ``box``/``unbox`` over both tables for one connection.

Unboxing never waits for the peer: a proxy whose class is not known yet
gets the placeholder class `netref.UnresolvedNetref`, which asks INSPECT on
first use (or when the caller resolves it). So the code that reads frames
never blocks on the peer, and a peer cannot park work here by sending
references whose INSPECT it never answers.

The tables are touched from every thread that calls through a connection;
each operation that reads and writes a count is made atomic by one lock
that is never held across a wait.
"""

from __future__ import annotations

import weakref
from _weakref import _remove_dead_weakref  # type: ignore[attr-defined]  # what WeakValueDictionary uses
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

from gevent.monkey import get_original

from grpyc import brine, consts, netref
from grpyc.lib import IdPack, get_id_pack
from grpyc.messages import ProtocolError

__all__ = ["MAX_NAME_PACK_LENGTH", "Boxer", "ObjectTable", "ProxyTable"]

_allocate_lock: Callable[[], Any] = get_original("_thread", "allocate_lock")

# `box`'s and `unbox`'s names, bound once: in the compiled module a global is one cached
# lookup, an attribute of a module two.
_dumpable = brine.dumpable
_SCALAR_TYPES = brine.SCALAR_TYPES
_LABEL_VALUE = consts.LABEL_VALUE
_LABEL_TUPLE = consts.LABEL_TUPLE
_LABEL_LOCAL_REF = consts.LABEL_LOCAL_REF
_LABEL_REMOTE_REF = consts.LABEL_REMOTE_REF
_BaseNetref = netref.BaseNetref
# The slots' own getters (what `netref.connection_of` and `id_pack_of` call):
# no Python frame per proxy boxed.
_proxy_connection: Callable[[Any], Any] = vars(_BaseNetref)["____conn__"].__get__
_proxy_id_pack: Callable[[Any], IdPack] = vars(_BaseNetref)["____id_pack__"].__get__
_add_reference = netref.add_reference
_UnresolvedNetref = netref.UnresolvedNetref
_builtin_classes = netref.builtin_classes_cache  # filled in place, never rebound
_new_weakref = weakref.ref

# Longest class name a peer may use in an id pack. Real dotted class names
# stay far below; a 16 MiB name would otherwise live as long as its proxy.
MAX_NAME_PACK_LENGTH = 1024


class ObjectTable:
    """Local objects referenced by the peer, with their reference counts."""

    __slots__ = ("_entries", "_lock", "max_objects")

    def __init__(self, max_objects: int) -> None:
        self._entries: dict[IdPack, list[Any]] = {}
        self._lock = _allocate_lock()
        self.max_objects = max_objects

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ObjectTable):
            return self._entries == other._entries
        return self._entries == other

    __hash__ = None  # type: ignore[assignment]

    def values(self) -> list[list[Any]]:
        """The ``[object, count]`` entries (a snapshot)."""
        return list(self._entries.values())

    def add(self, obj: Any) -> IdPack:
        """Count one more reference the peer holds to `obj`; return its id pack.

        Raises:
            RuntimeError: `obj` is new and the table already holds ``max_objects``.
        """
        id_pack = get_id_pack(obj)
        with self._lock:
            entry = self._entries.get(id_pack)
            if entry is not None:
                entry[1] += 1
                return id_pack
            if len(self._entries) >= self.max_objects:
                raise RuntimeError(
                    f"cannot export another object: the peer holds {len(self._entries)} "
                    f"(max_exported_objects={self.max_objects})"
                )
            self._entries[id_pack] = [obj, 1]
        return id_pack

    def get(self, id_pack: Any) -> Any:
        """The object the peer refers to by `id_pack`.

        Raises:
            KeyError: no such exported object (the peer sent a stale or forged reference).
        """
        return self._entries[_key(id_pack)][0]

    def find(self, id_pack: Any) -> Any:
        """The object for `id_pack`, or None."""
        entry = self._entries.get(_key(id_pack))
        return None if entry is None else entry[0]

    def decref(self, id_pack: Any, count: Any) -> None:
        """The peer dropped `count` references to `id_pack`.

        Raises:
            ValueError: `count` is not a positive int.
            KeyError: no such exported object.
        """
        if type(count) is not int or count < 1:
            raise ValueError(f"invalid DEL count {count!r}")
        key = _key(id_pack)
        with self._lock:
            entry = self._entries[key]
            entry[1] -= count
            if entry[1] <= 0:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _key(id_pack: Any) -> IdPack:
    if type(id_pack) is not tuple or len(id_pack) != 3:
        raise KeyError(f"invalid id pack {id_pack!r}")
    if type(id_pack[0]) is str:
        return id_pack  # equal to, and hashed as, the tuple built below
    return (str(id_pack[0]), id_pack[1], id_pack[2])


def _forget_proxy(table: dict[IdPack, Any], key: IdPack, _ref: Any) -> None:
    # A proxy died: its entry goes, unless a new proxy of the object took it.
    _remove_dead_weakref(table, key)


class ProxyTable:
    """Proxies of the peer's objects and the proxy classes made for them."""

    __slots__ = ("_classes", "_lock", "_proxies", "max_classes")

    def __init__(self, max_classes: int) -> None:
        # Weak references by id pack: a plain dict and C callbacks, where a
        # WeakValueDictionary ran five Python frames per proxy (get, set,
        # its KeyedRef's __new__ and __init__, the removal).
        self._proxies: dict[IdPack, weakref.ref[Any]] = {}
        self._classes: OrderedDict[tuple[str, int, bool], type] = OrderedDict()
        self._lock = _allocate_lock()
        self.max_classes = max_classes

    def proxy_for(self, conn: Any, id_pack: IdPack, unresolved: list[Any] | None = None) -> Any:
        """The proxy of `id_pack`, made if needed, with one more reference counted.

        A proxy whose class is not known yet gets the placeholder class and
        is appended to `unresolved` (if given).
        """
        with self._lock:
            proxies = self._proxies
            ref = proxies.get(id_pack)
            proxy = None if ref is None else ref()
            if proxy is None:
                cls = self.known_class(id_pack)
                proxy = (cls or _UnresolvedNetref)(conn, id_pack)
                proxies[id_pack] = _new_weakref(proxy, partial(_forget_proxy, proxies, id_pack))
            else:
                _add_reference(proxy)
        if unresolved is not None and type(proxy) is _UnresolvedNetref:
            unresolved.append(proxy)
        return proxy

    def known_class(self, id_pack: IdPack) -> type | None:
        """The proxy class for `id_pack` if it is built in or cached."""
        cls = _builtin_classes.get(id_pack[0])
        if cls is None:
            key = (id_pack[0], id_pack[1], id_pack[2] == 0)
            cls = self._classes.get(key)
            if cls is not None:
                self._classes.move_to_end(key)
        return cls

    def remember_class(self, id_pack: IdPack, cls: type) -> None:
        with self._lock:
            self._classes[(id_pack[0], id_pack[1], id_pack[2] == 0)] = cls
            while len(self._classes) > self.max_classes:
                self._classes.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._proxies.clear()
            self._classes.clear()


class Boxer:
    """Box and unbox values for one connection; queue the releases of its proxies."""

    __slots__ = ("_conn", "_releases", "objects", "proxies")

    def __init__(self, conn: Any, objects: ObjectTable, proxies: ProxyTable) -> None:
        self._conn = conn
        self.objects = objects
        self.proxies = proxies
        # A list: append and pop are atomic for other OS threads; releases
        # merge per object when taken, so their order does not matter.
        self._releases: list[tuple[IdPack, int]] = []

    def queue_release(self, id_pack: IdPack, count: int) -> None:
        """A proxy died holding `count` references (from ``__del__``: only appends)."""
        self._releases.append((id_pack, count))

    def take_releases(self) -> dict[IdPack, int]:
        """The queued releases, merged per object (one DEL each)."""
        merged: dict[IdPack, int] = {}
        releases = self._releases
        while releases:
            id_pack, count = releases.pop()
            merged[id_pack] = merged.get(id_pack, 0) + count
        return merged

    def proxy_class(self, id_pack: IdPack, inspect: Callable[[IdPack], Any], prefix: str) -> type:
        """The proxy class for `id_pack`, made from ``inspect(id_pack)`` if not known."""
        cls = self.proxies.known_class(id_pack)
        if cls is None:
            cls = netref.class_factory(id_pack, inspect(id_pack), prefix)
            self.proxies.remember_class(id_pack, cls)
        return cls

    def clear(self) -> None:
        """The connection closed: forget every object, proxy and queued release."""
        self.objects.clear()
        self.proxies.clear()
        self._releases.clear()

    def box(self, obj: Any) -> tuple[int, Any]:
        """The wire form of a local value (PROTOCOL.md section 4)."""
        # Every request boxes its arguments with a proxy first: the tests go
        # by type, most frequent first, each at most once (a scalar is
        # dumpable by its type; a proxy or an object never is).
        kind = type(obj)
        if kind in _SCALAR_TYPES:
            return _LABEL_VALUE, obj
        if kind is tuple:
            # A request's arguments start with the proxy it is about, which is
            # never dumpable: no walk of the whole tuple to find that out. The
            # empty tuple (every call's keywords) is.
            if not obj or (not issubclass(type(obj[0]), _BaseNetref) and _dumpable(obj)):
                return _LABEL_VALUE, obj
            box = self.box
            return _LABEL_TUPLE, tuple([box(item) for item in obj])
        if issubclass(kind, _BaseNetref):  # by type: a __class__ claiming a proxy class is no proxy
            if _proxy_connection(obj) is self._conn:
                return _LABEL_LOCAL_REF, _proxy_id_pack(obj)
        elif _dumpable(obj):  # a frozenset or slice of dumpable values
            return _LABEL_VALUE, obj
        return _LABEL_REMOTE_REF, self.objects.add(obj)

    def unbox(self, package: Any, unresolved: list[Any] | None = None) -> Any:
        """Rebuild a boxed value; never waits for the peer.

        Proxies made with the placeholder class are appended to `unresolved`.

        Raises:
            ProtocolError: not a valid box.
            KeyError: a local reference to an object that is not exported.
        """
        if type(package) is not tuple or len(package) != 2:
            raise ProtocolError(f"invalid box {package!r:.80}")
        label, value = package
        if label == _LABEL_VALUE:
            return value
        if label == _LABEL_TUPLE:
            if type(value) is not tuple:
                raise ProtocolError("tuple box does not hold a tuple")
            # A value item is taken here: a call per item (the compiled
            # method called as a Python object) cost more than the item, and
            # a request's arguments are mostly values.
            items = []
            for item in value:
                if type(item) is tuple and len(item) == 2 and item[0] == _LABEL_VALUE:
                    items.append(item[1])
                else:
                    items.append(self.unbox(item, unresolved))
            return tuple(items)
        if label == _LABEL_LOCAL_REF:
            return self.objects.get(value)
        if label == _LABEL_REMOTE_REF:
            return self.proxies.proxy_for(self._conn, remote_id_pack(value), unresolved)
        raise ProtocolError(f"invalid box label {label!r}")


def remote_id_pack(raw: Any) -> IdPack:
    """A peer's id pack, checked.

    Raises:
        ProtocolError: not ``(name, class_id, instance_id)`` with str/bytes and
            ints, or a name longer than `MAX_NAME_PACK_LENGTH`.
    """
    if type(raw) is not tuple or len(raw) != 3:
        raise ProtocolError(f"invalid id pack {raw!r:.80}")
    name, class_id, instance_id = raw
    if type(class_id) is not int or type(instance_id) is not int:
        raise ProtocolError(f"invalid id pack {raw!r:.80}")
    if type(name) is bytes:
        name = name.decode("utf-8", "replace")
    elif type(name) is not str:
        raise ProtocolError(f"invalid id pack {raw!r:.80}")
    if len(name) > MAX_NAME_PACK_LENGTH:
        raise ProtocolError(
            f"id pack names a class of {len(name)} characters (at most {MAX_NAME_PACK_LENGTH})"
        )
    return (name, class_id, instance_id)
