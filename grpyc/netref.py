"""Netrefs: local proxies for objects that live at the peer.

A proxy holds its connection, the object's id pack (PROTOCOL.md section 4)
and how many times that id pack was received (its reference count). Every
operation becomes a request (section 5) through `syncreq`. Proxy classes are
built from the remote class's method list (the INSPECT answer): one class per
remote class, cached; classes for the built-in types are prepared once at
import and shared by all connections. A proxy whose class is not known yet
has the placeholder class `UnresolvedNetref` and asks for its class on first
use (an operator, ``__class__``, ``isinstance``).

Proxies talk to their connection only through `ProxyConnection`. A proxy's
``__del__`` only queues a DEL; it never sends, blocks or switches greenlets,
since it may run inside a GC pass anywhere.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import pickle
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol, SupportsIndex, cast

from grpyc import consts
from grpyc.lib import IdPack, get_id_pack, get_methods

__all__ = [
    "LOCAL_ATTRS",
    "BaseNetref",
    "ProxyConnection",
    "UnresolvedNetref",
    "asyncreq",
    "builtin_classes_cache",
    "class_factory",
    "connection_of",
    "id_pack_of",
    "local_class_of",
    "resolve",
    "syncreq",
]

# Attributes a proxy never forwards: numpy probes these and must see "absent".
DELETED_ATTRS = frozenset(["__array_struct__", "__array_interface__"])

# The remote attribute read that just failed in `BaseNetref.__getattribute__`:
# (proxy, name, AttributeError), taken by the `__getattr__` that follows it.
_just_missed: tuple[Any, str, AttributeError] | None = None

# Attributes a proxy answers itself. INSPECT answers leave these names out.
# fmt: off
LOCAL_ATTRS = frozenset([
    "____conn__", "____id_pack__", "____refcount__", "__class__", "__cmp__", "__del__",
    "__delattr__", "__dir__", "__doc__", "__getattr__", "__getattribute__", "__hash__",
    "__instancecheck__", "__init__", "__metaclass__", "__module__", "__new__", "__reduce__",
    "__reduce_ex__", "__repr__", "__setattr__", "__slots__", "__str__", "__weakref__",
    "__dict__", "__methods__", "__exit__", "__eq__", "__ne__", "__lt__", "__gt__", "__le__",
    "__ge__",
]) | DELETED_ATTRS

# Types whose proxy classes are shared by all connections; their name packs
# are what every RPyC 6 peer sends for them.
_BUILTIN_TYPES: tuple[type, ...] = (
    type, object, bool, complex, dict, float, int, list, slice, str, tuple, set, frozenset,
    BaseException, Exception, type(None), types.BuiltinFunctionType, types.GeneratorType,
    types.MethodType, types.CodeType, types.FrameType, types.TracebackType, types.ModuleType,
    types.FunctionType, types.MappingProxyType, type(int.__add__), type((1).__add__),
    type(iter([])), type(iter(())), type(iter(set())), bytes, bytearray,
    type(iter(range(10))), memoryview,
)
# fmt: on
_builtin_types_by_name: dict[str, type] = {}
builtin_classes_cache: dict[str, type[BaseNetref]] = {}


class ProxyConnection(Protocol):
    """What a proxy needs of its connection (`grpyc.protocol.Connection` provides it)."""

    @property
    def local_method_lookup(self) -> bool: ...
    def proxy_setting(self, key: str) -> Any: ...
    def sync_request(self, handler: int, *args: Any) -> Any: ...
    def async_request(self, handler: int, *args: Any, timeout: float | None = None) -> Any: ...
    def release_proxy(self, id_pack: IdPack, count: int) -> None: ...
    def resolve_proxy_class(self, id_pack: IdPack) -> type: ...


def connection_of(proxy: BaseNetref) -> Any:
    """The connection `proxy` belongs to."""
    return object.__getattribute__(proxy, "____conn__")


def id_pack_of(proxy: BaseNetref) -> IdPack:
    """The id pack of the remote object `proxy` stands for."""
    return object.__getattribute__(proxy, "____id_pack__")  # type: ignore[no-any-return]


def add_reference(proxy: BaseNetref) -> None:
    """Count one more reference received for `proxy` (released together by its DEL)."""
    object.__setattr__(
        proxy, "____refcount__", object.__getattribute__(proxy, "____refcount__") + 1
    )


def resolve(proxy: Any) -> None:
    """Give a placeholder proxy its real class (asks the peer's INSPECT if needed)."""
    if type(proxy) is UnresolvedNetref:
        cls = connection_of(proxy).resolve_proxy_class(id_pack_of(proxy))
        object.__setattr__(proxy, "__class__", cls)


def local_class_of(obj: Any) -> Any:
    """The class of `obj`; for a proxy, the local class of the same name if there is one,
    else its proxy class (found without a round trip)."""
    if not isinstance(obj, BaseNetref):
        return type(obj)
    resolve(obj)
    return type(obj)._local_class or type(obj)


def syncreq(proxy: BaseNetref, handler: int, *args: Any) -> Any:
    """Send request `handler` about `proxy` and wait for the result. RPyC-compatible."""
    conn = object.__getattribute__(proxy, "____conn__")
    return conn.sync_request(handler, proxy, *args)


def asyncreq(proxy: BaseNetref, handler: int, *args: Any) -> Any:
    """Send request `handler` about `proxy`; returns an `AsyncResult`. RPyC-compatible."""
    conn = object.__getattribute__(proxy, "____conn__")
    return conn.async_request(handler, proxy, *args)


def _public_module_name() -> str:
    """This module's name as the program knows it: RPyC's under `install_as_rpyc`."""
    return (
        "rpyc.core.netref"
        if sys.modules.get("rpyc.core.netref") is sys.modules[__name__]
        else __name__
    )


class NetrefMetaclass(type):
    """Metaclass of proxy classes: a readable ``repr`` for debugging."""

    __slots__ = ()

    def __repr__(cls) -> str:
        return f"<netref class '{_public_module_name()}.{cls.__name__}'>"


class BaseNetref(metaclass=NetrefMetaclass):
    """Base of every proxy class. Do not instantiate directly: the connection does.

    RPyC-compatible: the slot names ``____conn__``, ``____id_pack__`` and
    ``____refcount__`` are the ones RPyC code reaches for.
    """

    __slots__ = ("____conn__", "____id_pack__", "____refcount__", "__weakref__")
    # Class-level data set by `class_factory`.
    _local_class: type | None = None
    _routines: frozenset[str] = frozenset()

    def __init__(self, conn: ProxyConnection, id_pack: IdPack) -> None:
        object.__setattr__(self, "____conn__", conn)
        object.__setattr__(self, "____id_pack__", id_pack)
        object.__setattr__(self, "____refcount__", 1)

    def __del__(self) -> None:
        # Runs inside GC passes: only queue (never send, block or switch).
        try:
            conn = object.__getattribute__(self, "____conn__")
            conn.release_proxy(
                object.__getattribute__(self, "____id_pack__"),
                object.__getattribute__(self, "____refcount__"),
            )
        except Exception:  # noqa: BLE001, S110 - a dying proxy must not raise in a GC pass
            pass

    def __getattribute__(self, name: str) -> Any:
        if name in LOCAL_ATTRS:
            return _local_attr(self, name)
        if name in ("__call__", "__array__"):
            return object.__getattribute__(self, name)
        cls = type(self)
        conn = object.__getattribute__(self, "____conn__")
        if name in cls._routines and conn.local_method_lookup:
            return _method_for(cls, name).__get__(self, cls)
        # `syncreq` inlined: every remote attribute read comes this way.
        try:
            return conn.sync_request(consts.HANDLE_GETATTR, self, name)
        except AttributeError as exc:
            global _just_missed
            _just_missed = (self, name, exc)  # for the __getattr__ Python calls next
            raise

    def __getattr__(self, name: str) -> Any:
        # Python calls this when `__getattribute__` raised AttributeError. If
        # the peer has just answered that for this name, asking again (as
        # stock rpyc does) would get the same answer: raise that one
        # (docs/semantics.md, "Attribute access").
        global _just_missed
        missed, _just_missed = _just_missed, None
        if name in DELETED_ATTRS:
            raise AttributeError(name)
        if missed is not None and missed[0] is self and missed[1] == name:
            raise missed[2]
        return syncreq(self, consts.HANDLE_GETATTR, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in LOCAL_ATTRS:
            object.__setattr__(self, name, value)
        else:
            syncreq(self, consts.HANDLE_SETATTR, name, value)

    def __delattr__(self, name: str) -> None:
        if name in LOCAL_ATTRS:
            object.__delattr__(self, name)
        else:
            syncreq(self, consts.HANDLE_DELATTR, name)

    def __dir__(self) -> list[str]:
        return list(syncreq(self, consts.HANDLE_DIR))

    def __hash__(self) -> int:
        return cast(int, syncreq(self, consts.HANDLE_HASH))

    # Comparisons are CMP requests naming the operator (set below the class).
    __cmp__: Callable[[BaseNetref, Any], Any]
    __eq__: Callable[[BaseNetref, object], Any]
    __ne__: Callable[[BaseNetref, object], Any]
    __lt__: Callable[[BaseNetref, Any], Any]
    __gt__: Callable[[BaseNetref, Any], Any]
    __le__: Callable[[BaseNetref, Any], Any]
    __ge__: Callable[[BaseNetref, Any], Any]

    def __repr__(self) -> str:
        return cast(str, syncreq(self, consts.HANDLE_REPR))

    def __str__(self) -> str:
        return cast(str, syncreq(self, consts.HANDLE_STR))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        # Only the exception travels: its type and traceback are rebuilt remotely.
        return syncreq(self, consts.HANDLE_CTXEXIT, exc)

    def __reduce_ex__(self, proto: SupportsIndex) -> Any:
        # As RPyC, the peer decides (its allow_pickle): pickle.dumps(proxy)
        # only stores the peer's bytes. copy.copy/deepcopy would unpickle them
        # here at once, running code the peer chose (CVE-2024-27758 class):
        # that needs this side's allow_pickle too.
        if sys._getframe(1).f_globals.get("__name__") == "copy":
            _require_local_pickle(self)
        return pickle.loads, (syncreq(self, consts.HANDLE_PICKLE, proto),)

    def __instancecheck__(self, other: Any) -> bool:
        own = object.__getattribute__(self, "____id_pack__")
        if own[2] != 0:
            raise TypeError("isinstance() arg 2 must be a type, a tuple of types, or a union")
        if isinstance(other, BaseNetref):
            theirs = object.__getattribute__(other, "____id_pack__")
            if theirs[1] == own[1]:
                return bool(theirs[2] != 0)
            return bool(syncreq(self, consts.HANDLE_INSTANCECHECK, theirs))
        local = type(self)._local_class
        return local is not None and isinstance(other, local)


def _comparison(op: str) -> Callable[[BaseNetref, Any], Any]:
    def compare(self: BaseNetref, other: Any) -> Any:
        return syncreq(self, consts.HANDLE_CMP, other, op)

    compare.__name__ = compare.__qualname__ = op
    return compare


for _op in ("__cmp__", "__eq__", "__ne__", "__lt__", "__gt__", "__le__", "__ge__"):
    setattr(BaseNetref, _op, _comparison(_op))
del _op


def _local_attr(proxy: BaseNetref, name: str) -> Any:
    if name == "__class__":
        return _class_of(proxy)
    if name == "__doc__":
        return syncreq(proxy, consts.HANDLE_GETATTR, "__doc__")
    if name in DELETED_ATTRS:
        raise AttributeError(name)
    return object.__getattribute__(proxy, name)


def _class_of(proxy: BaseNetref) -> Any:
    """``proxy.__class__``: the local class of the same name if there is one.

    That makes ``isinstance(remote_list, list)`` true, as in RPyC.
    """
    resolve(proxy)
    local = type(proxy)._local_class
    is_class = object.__getattribute__(proxy, "____id_pack__")[2] == 0
    if local is not None:
        return type(local) if is_class else local
    return syncreq(proxy, consts.HANDLE_GETATTR, "__class__")


def _require_local_pickle(proxy: BaseNetref) -> None:
    if not connection_of(proxy).proxy_setting("allow_pickle"):
        raise ValueError("pickling is disabled (allow_pickle=False)")


def _make_method(name: str, doc: str | None) -> Callable[..., Any]:
    """A proxy method that forwards to the remote method `name`."""
    if name == "__call__":

        def method(self: BaseNetref, *args: Any, **kwargs: Any) -> Any:
            # `syncreq` inlined: every call of a proxy comes this way.
            conn = object.__getattribute__(self, "____conn__")
            keywords = tuple(kwargs.items()) if kwargs else ()
            return conn.sync_request(consts.HANDLE_CALL, self, args, keywords)
    elif name == "__array__":

        def method(self: BaseNetref, *args: Any, **kwargs: Any) -> Any:
            # numpy calls this on proxies: never unpickle peer bytes unless allowed.
            _require_local_pickle(self)
            data = syncreq(self, consts.HANDLE_PICKLE, -1)
            array = pickle.loads(data)  # noqa: S301 - allow_pickle checked above
            return array.__array__(*args, **kwargs)
    elif name in _OLD_SLICERS:
        modern = _OLD_SLICERS[name]

        def method(self: BaseNetref, *args: Any, **kwargs: Any) -> Any:
            start, stop, *rest = args  # (start, stop, *args): Python 2's slicing methods
            if stop == sys.maxsize:
                stop = None
            return syncreq(self, consts.HANDLE_OLDSLICING, modern, name, start, stop, tuple(rest))
    else:

        def method(self: BaseNetref, *args: Any, **kwargs: Any) -> Any:
            return syncreq(self, consts.HANDLE_CALLATTR, name, args, tuple(kwargs.items()))

    method.__name__ = name
    method.__qualname__ = name
    method.__doc__ = doc
    return method


_SHARED_METHODS = 512  # functions kept for sharing (`_shared_method`)

_OLD_SLICERS = {
    "__getslice__": "__getitem__",
    "__setslice__": "__setitem__",
    "__delslice__": "__delitem__",
}


@functools.lru_cache(maxsize=_SHARED_METHODS)
def _shared_method(name: str, doc: str | None) -> Callable[..., Any]:
    """`_make_method(name, doc)`, one function for every proxy class that needs it.

    A proxy class is made per connection and remote class, and its functions
    depend on nothing but the name and the docstring: sharing them saves each
    class a function and a cell per special method (objects a full
    collection of the process walks). Bounded: a peer's docstrings vary.
    """
    return _make_method(name, doc)


def _method_for(cls: type[BaseNetref], name: str) -> Callable[..., Any]:
    """The CALLATTR function for `name` on `cls`, looked up once per class and name."""
    methods: dict[str, Callable[..., Any]] = cls.__dict__["_named_methods"]
    method = methods.get(name)
    if method is None:
        method = methods[name] = _shared_method(name, None)
    return method


def _resolve_local_class(name_pack: str) -> type | None:
    """The local class named `name_pack` in an already imported module, if any.

    A name pack that is itself a module's name stands for a module.
    """
    builtin = _builtin_types_by_name.get(name_pack)
    if builtin is not None:
        return builtin
    if name_pack in sys.modules:
        return types.ModuleType
    module_name, _, class_name = name_pack.rpartition(".")
    module = sys.modules.get(module_name)
    found = getattr(module, class_name, None) if module is not None else None
    return found if isinstance(found, type) else None


def class_factory(
    id_pack: IdPack, methods: Iterable[tuple[str, str | None]], exposed_prefix: str = "exposed_"
) -> type[BaseNetref]:
    """Build the proxy class for a remote class from its INSPECT answer.

    Only special methods (operators, ``__call__``, ``__iter__`` ...) become
    functions in the class, since Python looks those up on the type; other
    names are reached through ``__getattribute__`` and get their function on
    first use. A peer's answer is bounded: at most `MAX_METHODS` names of at
    most `MAX_NAME_LENGTH` characters, docstrings cut at `MAX_DOC_LENGTH`.

    Args:
        id_pack: the id pack of the remote object (its name pack names the class).
        methods: ``(name, docstring)`` pairs, as INSPECT returns them.
        exposed_prefix: names with this prefix are also reachable without it.
    """
    name_pack = str(id_pack[0])
    namespace: dict[str, Any] = {"__slots__": (), "_named_methods": {}}
    routines: set[str] = set()
    for raw_name, doc in itertools.islice(methods, MAX_METHODS):
        name = str(raw_name)
        if name in LOCAL_ATTRS or len(name) > MAX_NAME_LENGTH:
            continue
        if name in _SPECIAL_METHODS:
            text = doc[:MAX_DOC_LENGTH] if isinstance(doc, str) else None
            namespace[name] = _shared_method(name, text)
        routines.add(name)
        if exposed_prefix and name.startswith(exposed_prefix):
            routines.add(name[len(exposed_prefix) :])
    namespace["_routines"] = frozenset(routines)
    namespace["_local_class"] = _resolve_local_class(name_pack)
    return cast(type[BaseNetref], NetrefMetaclass(name_pack, (BaseNetref,), namespace))


# Bounds on one INSPECT answer: real classes stay far below them.
MAX_METHODS = 4096
MAX_NAME_LENGTH = 256
MAX_DOC_LENGTH = 4096


def _special_method_names() -> frozenset[str]:
    """Dunder names Python looks up on a proxy's type (operators and protocols).

    Descriptor hooks (``__get__``, ``__set__`` ...) and class-creation hooks
    are left out: a proxy must not act as a descriptor of the class holding it.
    """
    probes = (
        object,
        int,
        float,
        complex,
        bool,
        list,
        dict,
        set,
        frozenset,
        str,
        bytes,
        bytearray,
        tuple,
        type,
        range,
        slice,
        memoryview,
        BaseException,
    )
    names = {
        name
        for probe in probes
        for name in dir(probe)
        if name.startswith("__")
        and name.endswith("__")
        and inspect.isroutine(getattr(probe, name, None))
    }
    names |= {
        "__call__",
        "__enter__",
        "__exit__",
        "__aenter__",
        "__aexit__",
        "__aiter__",
        "__anext__",
        "__await__",
        "__array__",
        "__getslice__",
        "__setslice__",
        "__delslice__",
        "__matmul__",
        "__rmatmul__",
        "__imatmul__",
        "__next__",
        "__missing__",
        "__fspath__",
        "__length_hint__",
        "__bytes__",
        "__reversed__",
        "__round__",
        "__trunc__",
        "__floor__",
        "__ceil__",
        "__complex__",
        "__index__",
    }
    names -= {
        "__get__",
        "__set__",
        "__delete__",
        "__set_name__",
        "__init_subclass__",
        "__class_getitem__",
        "__subclasshook__",
        "__prepare__",
        "__mro_entries__",
    }
    return frozenset(names)


_SPECIAL_METHODS = _special_method_names()


class UnresolvedNetref(BaseNetref):
    """Placeholder class of a proxy made before its class is known.

    Unboxing never waits for the peer, so a proxy of a class not seen yet
    starts with this class (its reference count exact) and gets its real
    class (same slots, so ``__class__`` assignment works) when a caller
    resolves it or on first use of an operator, ``__class__`` or
    ``isinstance``; attribute access needs no class (it is a GETATTR).
    """

    __slots__ = ()
    _named_methods: ClassVar[dict[str, Callable[..., Any]]] = {}


def _resolving(name: str) -> Callable[..., Any]:
    """A special method of the placeholder: resolve the class, then use its method."""

    def method(self: BaseNetref, *args: Any, **kwargs: Any) -> Any:
        resolve(self)
        real = getattr(type(self), name, None)
        if real is None or type(self) is UnresolvedNetref:
            raise TypeError(f"'{type(self).__name__}' proxy does not support {name}")
        return real(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


# Built-in containers whose iteration has no side effects: their proxies
# fetch items in batches (BUFFITER) instead of one request per item.
_PREFETCHED_ITERABLES = frozenset(
    ["builtins.list", "builtins.dict", "builtins.set", "builtins.frozenset"]
)
_FIRST_BATCH = 16
_MAX_BATCH = 1024


def _prefetching_iter(self: BaseNetref) -> Any:
    """``iter(proxy)`` for built-in containers: batches, growing 16, 64 ... 1024."""
    conn = object.__getattribute__(self, "____conn__")
    remote_iterator = syncreq(self, consts.HANDLE_CALLATTR, "__iter__", (), ())
    if not conn.proxy_setting("prefetch_iteration"):
        return remote_iterator
    return _batches(remote_iterator)


def _batches(remote_iterator: BaseNetref) -> Any:
    batch = _FIRST_BATCH
    while True:
        items = syncreq(remote_iterator, consts.HANDLE_BUFFITER, batch)
        yield from items
        if len(items) < batch:
            return  # a built-in container's iterator is exhausted
        batch = min(batch * 4, _MAX_BATCH)


def _prepare_placeholder() -> None:
    for name in _SPECIAL_METHODS:
        if name not in vars(BaseNetref) and name not in LOCAL_ATTRS:
            setattr(UnresolvedNetref, name, _resolving(name))


def _prepare_builtin_classes() -> None:
    for builtin in _BUILTIN_TYPES:
        id_pack = get_id_pack(builtin)
        _builtin_types_by_name[id_pack[0]] = builtin
    for builtin in _BUILTIN_TYPES:
        id_pack = get_id_pack(builtin)
        cls = class_factory(id_pack, get_methods(LOCAL_ATTRS, builtin))
        if id_pack[0] in _PREFETCHED_ITERABLES:
            setattr(cls, "__iter__", _prefetching_iter)  # noqa: B010 - a class built at run time
        builtin_classes_cache[id_pack[0]] = cls


_prepare_placeholder()
_prepare_builtin_classes()
