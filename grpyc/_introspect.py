"""Id packs, class hooks and method lists of local objects: pure introspection.

`grpyc.lib` re-exports the id packs and method lists.

Nothing here touches a connection, a socket or gevent.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Iterable
from types import GetSetDescriptorType
from typing import Any, cast

__all__ = ["HOOK_NAMES", "IdPack", "class_hook", "get_id_pack", "get_methods", "hasattr_static"]

IdPack = tuple[str, int, int]


def _module_name_pack(module: Any) -> str:
    name = getattr(module, "__name__", None)
    if name in sys.modules:
        return str(name)
    return f"{type(module).__module__}.{name}"


_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: no attribute can be set on the type
_MAX_KNOWN = 4096
# The class attributes a class may define to change how grpyc treats its
# objects: RPyC's attribute accessors, and the id pack of a proxy.
HOOK_NAMES = ("_rpyc_getattr", "_rpyc_setattr", "_rpyc_delattr", "____id_pack__")
# Immutable classes (builtins: they cannot gain an attribute) that define no hook.
_known_plain: set[type] = set()
# Name packs of the immutable classes of objects sent by reference (bound
# methods, functions, builtin containers: most of them). Such a class can be
# neither renamed nor given a ``____id_pack__``, so its name pack is made
# once, not per object (a failed class attribute lookup and a format, ~0.6 us).
_name_packs: dict[type, str] = {}


def class_hook(cls: type, name: str) -> Any:
    """``getattr(cls, name, None)`` for one of `HOOK_NAMES`.

    Almost every type asked has none, and a class attribute lookup that
    fails formats an AttributeError message inside CPython (~2,300
    instructions): without a metaclass of its own, the dicts of the class's
    MRO answer exactly.
    """
    if cls in _known_plain:
        return None
    if type(cls) is not type:
        return getattr(cls, name, None)  # a metaclass may provide it
    for klass in cls.__mro__:
        if klass is object:
            break  # immutable, and defines none of them
        if name in klass.__dict__:
            return getattr(cls, name, None)  # as getattr for a descriptor that raises
    if (
        cls.__flags__ & _IMMUTABLE_TYPE  # at once false for a class of the program's own
        and _never_changes(cls)
        and len(_known_plain) < _MAX_KNOWN
        # Known plain for every hook, not only the one asked now.
        and not any(hook in klass.__dict__ for klass in cls.__mro__ for hook in HOOK_NAMES)
    ):
        _known_plain.add(cls)
    return None


def get_id_pack(obj: Any) -> IdPack:
    """The id pack ``(name_pack, class_id, instance_id)`` of a local object.

    PROTOCOL.md section 4: a class gets its own name and instance id 0; a
    module is named by its module name; a proxy keeps the id pack it was
    given, so an object received from a third party goes on by that name.
    """
    cls = type(obj)
    name_pack = _name_packs.get(cls)
    if name_pack is not None:
        return (name_pack, id(cls), id(obj))
    if class_hook(cls, "____id_pack__") is not None:
        return cast(IdPack, object.__getattribute__(obj, "____id_pack__"))
    if inspect.ismodule(obj):
        return (_module_name_pack(obj), id(cls), id(obj))
    if isinstance(obj, type):
        return (f"{obj.__module__}.{obj.__name__}", id(obj), 0)
    # Every instance of `cls` is neither a module nor a class: only the name counts.
    name_pack = f"{cls.__module__}.{cls.__name__}"
    # The flag first: a class of the program's own fails it at once, on every call.
    immutable = cls.__flags__ & _IMMUTABLE_TYPE
    if immutable and _never_changes(cls) and len(_name_packs) < _MAX_KNOWN:
        _name_packs[cls] = name_pack
    return (name_pack, id(cls), id(obj))


def _never_changes(cls: type) -> bool:
    """Whether no attribute of `cls` can change: it, its bases and its metaclass are immutable."""
    return type(cls) is type and all(klass.__flags__ & _IMMUTABLE_TYPE for klass in cls.__mro__)


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
        (name, _docstring(attr))
        for name, attr in attrs.items()
        if name not in skip and _is_routine(attr)
    )


# `inspect.isroutine` answers from the type of its argument alone: for a type
# that is immutable (functions, builtin methods, slot wrappers) the answer
# cannot change, so it is asked once. A connection's first INSPECT asks it of
# every attribute of the root's class and of `object` (~24 for a service).
_routine_types: dict[type, bool] = {}


def _is_routine(attr: Any) -> bool:
    kind = type(attr)
    known = _routine_types.get(kind)
    if known is not None:
        return known
    answer = inspect.isroutine(attr)
    if kind.__flags__ & _IMMUTABLE_TYPE and len(_routine_types) < _MAX_KNOWN:
        _routine_types[kind] = answer
    return answer


# The cache keeps copies: a long docstring (a program may build one) is
# cleaned each time rather than kept, so the cache holds at most 1,024
# docstrings of 4,096 characters.
_MAX_KEPT_DOC = 4096


def _docstring(attr: Any) -> str | None:
    """``inspect.getdoc(attr)``, the cleaning of a docstring kept by its text.

    Cleaning (`inspect.cleandoc`) is most of getdoc's cost and depends on the
    text alone, which the same methods give on every connection. A docstring
    a routine inherits is still looked up each time (it may change with a
    base class).
    """
    try:
        doc = attr.__doc__
    except AttributeError:
        return None
    if type(doc) is str and len(doc) <= _MAX_KEPT_DOC:
        return _cleaned(doc)
    return inspect.getdoc(attr)  # None (inherited, or no docstring), not text, or long


@functools.lru_cache(maxsize=1024)
def _cleaned(doc: str) -> str:
    return inspect.cleandoc(doc)


def hasattr_static(obj: Any, name: str) -> bool:
    """``hasattr`` that runs no descriptor or ``__getattr__`` code."""
    if _surely_absent(obj, name):
        return False
    try:
        inspect.getattr_static(obj, name)
    except AttributeError:
        return False
    return True


# Static views of a class's MRO and namespace: no metaclass code runs.
_static_mro = type.__dict__["__mro__"].__get__
_static_namespace = type.__dict__["__dict__"].__get__


def _surely_absent(obj: Any, name: str) -> bool:
    """True only when ``inspect.getattr_static(obj, name)`` would raise.

    The attribute policy asks this for every attribute a peer reads that has
    no ``exposed_`` twin (the usual case); getattr_static costs ~4 us there,
    this ~0.3. It looks where getattr_static looks, the namespaces of the
    object's type and its plain instance dict, and answers False (ask
    getattr_static) for anything less plain: a class (its metaclass counts
    too) or a type whose ``__dict__`` is not the standard slot.
    """
    mro = _static_mro(type(obj))
    if type in mro:
        return False
    dict_slot = None
    for base in mro:
        namespace = _static_namespace(base)
        if name in namespace:
            return False
        if dict_slot is None:
            dict_slot = namespace.get("__dict__")
            if dict_slot is not None and type(dict_slot) is not GetSetDescriptorType:
                return False
    if dict_slot is None:
        return True  # no instance dict
    # The standard __dict__ slot (checked above): its getter runs no user code.
    attributes = dict_slot.__get__(obj)
    return type(attributes) is dict and name not in attributes
