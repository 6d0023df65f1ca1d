"""Exceptions to and from their wire form (PROTOCOL.md section 6).

`dump` turns a local exception into the brine-dumpable vinegar value that
answers a failed request; `load` turns a peer's vinegar value back into an
exception to raise. Both are RPyC-compatible: a stock RPyC 6 peer loads what
`dump` makes and `load` accepts what a stock peer dumps.

Invariants of `load`, whatever the peer sends:

- a value of the wrong shape raises `VinegarError` and nothing else;
- no module is imported unless both `import_custom_exceptions` and
  `instantiate_custom_exceptions` are on;
- only a class that derives from `BaseException` is ever instantiated, and
  only through its `__new__` (never `__init__`); without
  `instantiate_custom_exceptions` only the built-in exception classes are;
- no dunder attribute is set and no method of the class is shadowed, so a
  peer can neither change the class nor reach other objects.

This module does no I/O: it maps values to values.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

import greenlet

from grpyc import brine, consts
from grpyc._tbtext import format_exception
from grpyc.version import LOCAL_VERSION, RPYC_VERSION

__all__ = [
    "LOCAL_VERSION",
    "REMOTE_LINE",
    "REMOTE_LINE_END",
    "REMOTE_LINE_START",
    "GenericException",
    "VinegarError",
    "dump",
    "load",
]

# The version a peer sees (`grpyc.version.LOCAL_VERSION`): a stock peer
# compares the part before the first "." with its own major version and
# appends a warning to the remote traceback when they differ, so it leads
# with the RPyC release whose wire format grpyc speaks.

_VERSION_DENIED = "<version denied>"
_TRACEBACK_DENIED = "<traceback denied>"
_REMOTE_VERSION_ATTR = "_remote_version"
_REMOTE_TB_ATTR = "_remote_tb"

# The header `str()` puts before a remote traceback. A traceback that crossed
# several connections holds one header per hop; the number in a new header
# counts them. Same text as RPyC, so mixed chains of peers count alike.
_REMOTE_TB_START = "\n\n========= Remote Traceback "
_REMOTE_TB_END = " =========\n"
# RPyC's public names for the same header.
REMOTE_LINE_START = _REMOTE_TB_START
REMOTE_LINE_END = _REMOTE_TB_END
REMOTE_LINE = f"{REMOTE_LINE_START}({{}}){REMOTE_LINE_END}"

# Public attributes `dump` leaves out, as RPyC does: the remote traceback
# travels as the traceback text. Other public methods (``add_note``) are sent
# as a placeholder (see `_attr_value`); `load` never lets them shadow a method.
_UNSENT_ATTRS = frozenset([_REMOTE_TB_ATTR, "with_traceback"])

# Containers whose repr shows nothing but their items: an attribute holding
# one of these, with only brine-dumpable values inside, travels as its repr,
# as RPyC sends it. At most this many items are looked at.
_DATA_CONTAINERS = frozenset([list, dict, set, frozenset, tuple, bytearray])
_MAX_DATA_ITEMS = 1000

# Longer than any real dotted module path or class name; a peer must not make
# us build (and cache) classes with megabyte names.
_MAX_NAME_LENGTH = 1000

# Generic classes are named by the peer, so their cache is bounded: far more
# distinct remote exception classes than any real service raises, yet a
# hostile peer cannot grow our memory without limit. Past it the least
# recently used class is dropped, and a later exception of that remote class
# gets a new local class.
_MAX_GENERIC_CLASSES = 1024

# The longest traceback text `dump` sends. A traceback holds the nested
# remote tracebacks of every hop below it, so an error unwinding a chain of
# N callbacks sends O(N) text at each of N hops: at depth 800, 2.4 MB at the
# top and ~1 GB in all (25 s). Past this cap the middle is left out: the head
# keeps this hop's own traceback, the tail the innermost one (the original
# error). A whole traceback of up to ~20 nested hops fits.
MAX_TRACEBACK_CHARS = 64 * 1024
_TRACEBACK_HEAD_CHARS = 16 * 1024

RemoteValue = Any
VinegarValue = int | tuple[tuple[str, str], tuple[Any, ...], tuple[tuple[str, Any], ...], str]


class VinegarError(ValueError):
    """The peer sent an exception value that is not a valid vinegar value."""


def _str_with_remote_traceback(exc: BaseException, text: str) -> str:
    remote_tb = getattr(exc, _REMOTE_TB_ATTR, None)
    if not isinstance(remote_tb, str):
        return text
    hop = remote_tb.count(_REMOTE_TB_START) + 1
    return f"{text}{_REMOTE_TB_START}({hop}){_REMOTE_TB_END}{remote_tb}"


def _safe_str(base: type[BaseException], exc: BaseException) -> str:
    try:
        return base.__str__(exc)
    except Exception:  # noqa: BLE001 - args come from the peer; str() must still show the traceback
        return "<Unprintable exception>"


class GenericException(Exception):  # noqa: N818 - RPyC's public name
    """Stands for a remote exception class that is not rebuilt locally.

    RPyC-compatible. `load` makes one subclass per remote class, named
    ``module.ClassName``; ``str()`` shows the remote traceback.
    """

    def __str__(self) -> str:
        return _str_with_remote_traceback(self, _safe_str(Exception, self))

    def __repr__(self) -> str:
        return str(self)


# --------------------------------------------------------------------- dump


def _dumpable_or_repr(value: Any) -> Any:
    if brine.dumpable(value):
        return value
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not stop the exception reply
        return f"<unrepresentable {type(value).__name__} object>"


def _public_names(val: BaseException) -> list[str]:
    try:
        return dir(val)
    except Exception:  # noqa: BLE001 - a broken __dir__ must not stop the exception reply
        return ["args"]


def _dump_args(val: BaseException) -> tuple[Any, ...]:
    try:
        args = tuple(val.args)
    except Exception:  # noqa: BLE001 - a broken args property must not stop the exception reply
        return ()
    return tuple(_dumpable_or_repr(arg) for arg in args)


_UNREADABLE = object()


def _read_attr(val: BaseException, name: str) -> Any:
    try:
        return getattr(val, name)
    except Exception:  # noqa: BLE001 - an attribute that cannot be read is not sent
        return _UNREADABLE


def _is_plain_data(value: Any) -> bool:
    """Whether ``value`` is built-in containers of brine-dumpable values only."""
    pending, seen = [value], 0
    while pending:
        item = pending.pop()
        seen += 1
        if seen > _MAX_DATA_ITEMS:
            return False
        if type(item) not in _DATA_CONTAINERS:
            if not brine.dumpable(item):
                return False
        elif type(item) is dict:
            pending.extend(item.keys())
            pending.extend(item.values())
        elif type(item) is not bytearray:
            pending.extend(item)
    return True


def _attr_value(value: Any) -> Any:
    """What an exception attribute's value becomes on the wire.

    Differs from RPyC, which sends the repr of any value brine cannot carry:
    an object's repr may show what the service hides (a ``restricted()``
    object's fields leak through ``AttributeError.obj``, which Python sets to
    the object that lacked the attribute). Only plain data travels as its
    repr; any other object as ``<module.Class object>``. A stock receiver
    sets whatever string comes, so both forms load there alike.
    """
    if brine.dumpable(value):
        return value
    if _is_plain_data(value):
        return _dumpable_or_repr(value)
    kind = type(value)
    return f"<{kind.__module__}.{kind.__qualname__} object>"


def _dump_attrs(val: BaseException, names: list[str]) -> list[tuple[str, Any]]:
    attrs = []
    for name in names:
        if name == "args" or name.startswith("_") or name in _UNSENT_ATTRS:
            continue
        value = _read_attr(val, name)
        if value is not _UNREADABLE:
            attrs.append((name, _attr_value(value)))
    return attrs


def _traceback_text(val: BaseException, tb: types.TracebackType | None) -> str:
    # traceback.format_exception's text, which takes the class from `val` too.
    text = "".join(format_exception(val, tb))
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    return _shortened(text)


def _shortened(text: str) -> str:
    """`text` cut to `MAX_TRACEBACK_CHARS` around a note of what was left out."""
    head = text[:_TRACEBACK_HEAD_CHARS]
    tail_chars = MAX_TRACEBACK_CHARS - _TRACEBACK_HEAD_CHARS
    left_out = len(text) - _TRACEBACK_HEAD_CHARS - tail_chars
    note = (
        f"\n[... {left_out:,} characters of nested tracebacks left out: a traceback "
        f"sent by grpyc keeps its first {_TRACEBACK_HEAD_CHARS:,} and last "
        f"{tail_chars:,} characters ...]\n"
    )
    return head + note + text[-tail_chars:]


def dump(
    typ: type[BaseException],
    val: BaseException,
    tb: types.TracebackType | None,
    include_local_traceback: bool = True,
    include_local_version: bool = True,
) -> VinegarValue:
    """The vinegar value of an exception, as from ``sys.exc_info()``. RPyC-compatible.

    Args:
        typ, val, tb: the exception's class, instance and traceback.
        include_local_traceback: send the formatted traceback (with chained
            exceptions and notes); else ``"<traceback denied>"``.
        include_local_version: send `LOCAL_VERSION`; else ``"<version denied>"``.

    Returns:
        ``consts.EXC_STOP_ITERATION`` for `StopIteration`, else the tuple
        ``((module, class_name), args, attrs, traceback_text)`` of
        PROTOCOL.md section 6: every element brine-dumpable, non-dumpable
        args replaced by their repr, attribute values as `_attr_value` says.
    """
    if typ is StopIteration:
        return consts.EXC_STOP_ITERATION
    tbtext = _traceback_text(val, tb) if include_local_traceback else _TRACEBACK_DENIED
    attrs = _dump_attrs(val, _public_names(val))
    version = LOCAL_VERSION if include_local_version else _VERSION_DENIED
    attrs.append((_REMOTE_VERSION_ATTR, version))
    return (str(typ.__module__), str(typ.__name__)), _dump_args(val), tuple(attrs), tbtext


# --------------------------------------------------------------------- load


def _describe(value: Any) -> str:
    """Type and size of a peer value, for messages; never its repr (which may be huge or deep)."""
    if type(value) in (tuple, str, bytes, frozenset):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def _check_name(name: Any, what: str) -> str:
    if type(name) is not str:
        raise VinegarError(f"vinegar {what} must be a str, got {_describe(name)}")
    if len(name) > _MAX_NAME_LENGTH:
        raise VinegarError(
            f"vinegar {what} of {len(name)} chars exceeds the limit of {_MAX_NAME_LENGTH}"
        )
    # Real names are printable; control characters, NUL and lone surrogates
    # cannot even name a class.
    if not name.isprintable():
        raise VinegarError(f"vinegar {what} {name!r} has non-printable characters")
    return name


def _check_attrs(attrs: Any) -> tuple[tuple[str, Any], ...]:
    if type(attrs) is not tuple:
        raise VinegarError(f"vinegar attrs must be a tuple, got {_describe(attrs)}")
    for index, pair in enumerate(attrs):
        if type(pair) is not tuple or len(pair) != 2:
            raise VinegarError(
                f"vinegar attrs[{index}] must be a (name, value) pair, got {_describe(pair)}"
            )
        if type(pair[0]) is not str:
            raise VinegarError(
                f"vinegar attrs[{index}] name must be a str, got {_describe(pair[0])}"
            )
    return attrs


def _check_shape(val: Any) -> tuple[str, str, tuple[Any, ...], tuple[tuple[str, Any], ...], str]:
    """Validate a peer's vinegar tuple; return its parts."""
    if type(val) is not tuple or len(val) != 4:
        raise VinegarError(
            "vinegar value must be 1 or a 4-tuple ((module, class_name), args, attrs, "
            f"traceback_text), got {_describe(val)}"
        )
    names, args, attrs, tbtext = val
    if type(names) is not tuple or len(names) != 2:
        raise VinegarError(
            f"vinegar class name must be a (module, class_name) pair, got {_describe(names)}"
        )
    modname = _check_name(names[0], "module name")
    clsname = _check_name(names[1], "class name")
    if type(args) is not tuple:
        raise VinegarError(f"vinegar args must be a tuple, got {_describe(args)}")
    if type(tbtext) is not str:
        raise VinegarError(f"vinegar traceback text must be a str, got {_describe(tbtext)}")
    return modname, clsname, args, _check_attrs(attrs), tbtext


def _is_module_path(modname: str) -> bool:
    return all(part.isidentifier() for part in modname.split("."))


def _find_module(modname: str, import_custom_exceptions: bool) -> object | None:
    module = sys.modules.get(modname)
    if module is not None or not import_custom_exceptions or not _is_module_path(modname):
        return module
    try:
        return importlib.import_module(modname)
    except Exception:  # noqa: BLE001 - any failure to import means "no such class here"
        return None


def _local_class(
    modname: str, clsname: str, import_custom: bool, instantiate_custom: bool
) -> type[BaseException] | None:
    """The local exception class the peer names, if policy lets us use it."""
    if instantiate_custom:
        module = _find_module(modname, import_custom)
    elif modname == builtins.__name__:
        module = builtins
    else:
        return None
    if module is None:
        return None
    # A static lookup runs no module-level __getattr__ or descriptor code.
    cls = _static_module_attr(module, clsname)
    if isinstance(cls, type) and issubclass(cls, BaseException) and not _steers(cls):
        return cls
    return None


# What a module's type holds (``__dict__``, ``__init__`` ...): a name among
# these is for inspect to look up, any other one is in the module's dict or nowhere.
_MODULE_TYPE_NAMES = frozenset(name for klass in types.ModuleType.__mro__ for name in vars(klass))


def _static_module_attr(module: object, name: str) -> Any:
    """``inspect.getattr_static(module, name, None)``, without its ~10 us, for a
    plain module and a name its type does not define."""
    if type(module) is not types.ModuleType or name in _MODULE_TYPE_NAMES:
        return inspect.getattr_static(module, name, None)
    namespace: dict[str, Any] = object.__getattribute__(module, "__dict__")
    return namespace.get(name)


# Exceptions that steer the interpreter or gevent rather than report an error:
# raised anywhere (in a greenlet's repr, a __del__, a library), they stop the
# process, unwind a generator or end a greenlet. From a peer they are data, so
# they are rebuilt as generic classes of the same name (plain Exceptions).
_STEERING = (KeyboardInterrupt, SystemExit, GeneratorExit, SystemError, greenlet.GreenletExit)


def _steers(cls: type[BaseException]) -> bool:
    return issubclass(cls, _STEERING)


# RPyC's registry, by full name ``"module.ClassName"``, of the classes that
# stand for remote exceptions whose class is not used locally. A program
# registers its own there (RPyC's tutorial does), and `load` rebuilds an
# exception of that remote name as the registered class. `load` adds the
# generic classes it makes too, as RPyC does, but drops them again with
# _generic_classes; what a program registers stays.
_generic_exceptions_cache: dict[str, type[BaseException]] = {}

# The generic classes `load` made, least recently used first.
_generic_classes: dict[str, type[GenericException]] = {}


def _registered_class(fullname: str) -> type[BaseException] | None:
    """The exception class a program registered for ``fullname``, if any."""
    cls = _generic_exceptions_cache.get(fullname)
    if cls is None or cls is _generic_classes.get(fullname):
        return None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls
    return None  # only exception classes are ever instantiated


def _generic_class(modname: str, clsname: str) -> type[GenericException]:
    """The cached `GenericException` subclass named ``modname.clsname``."""
    fullname = f"{modname}.{clsname}"
    cls = _generic_classes.pop(fullname, None)
    if cls is None:
        namespace = {"__module__": f"{__name__}/{modname}", "__qualname__": fullname}
        cls = type(fullname, (GenericException,), namespace)
        _generic_exceptions_cache.setdefault(fullname, cls)
        # pop(..., None): hubs in other OS threads may evict the same entry.
        while len(_generic_classes) >= _MAX_GENERIC_CLASSES:
            _forget_generic(next(iter(_generic_classes), ""))
    # Reinserted last: the dict's order is the least recently used order.
    _generic_classes[fullname] = cls
    return cls


def _forget_generic(fullname: str) -> None:
    cls = _generic_classes.pop(fullname, None)
    if cls is not None and _generic_exceptions_cache.get(fullname) is cls:
        _generic_exceptions_cache.pop(fullname, None)


_rebuilt_classes: dict[type[BaseException], type[BaseException]] = {}


def _remote_str(base: type[BaseException]) -> Callable[[BaseException], str]:
    def __str__(self: BaseException) -> str:  # noqa: N807 - becomes the class's __str__
        return _str_with_remote_traceback(self, _safe_str(base, self))

    return __str__


def _remote_repr(self: BaseException) -> str:
    return str(self)


def _rebuilt_class(base: type[BaseException]) -> type[BaseException]:
    """The cached subclass of a local class whose ``str()`` shows the remote traceback.

    It keeps the name and module of ``base``, so the exception looks and
    catches like ``base``.
    """
    cls = _rebuilt_classes.get(base)
    if cls is not None:
        return cls

    def fill(namespace: dict[str, Any]) -> None:
        namespace["__module__"] = base.__module__
        namespace["__qualname__"] = base.__qualname__
        namespace["__str__"] = _remote_str(base)
        namespace["__repr__"] = _remote_repr

    # new_class picks the base's metaclass, as a class statement would.
    cls = types.new_class(base.__name__, (base,), exec_body=fill)
    return _rebuilt_classes.setdefault(base, cls)


def _rebuilt_instance(base: type[BaseException], args: tuple[Any, ...]) -> BaseException | None:
    try:
        cls = _rebuilt_class(base)
        exc = cls.__new__(cls)
        exc.args = args
    except Exception:  # noqa: BLE001 - a class that cannot be rebuilt falls back to generic
        return None
    return exc


def _instantiate(
    base: type[BaseException] | None, modname: str, clsname: str, args: tuple[Any, ...]
) -> BaseException:
    """An instance of ``base`` rebuilt (else of the generic class) holding ``args``.

    Only ``__new__`` runs: an ``__init__`` may have side effects or want
    arguments the peer did not send.
    """
    if base is None:
        base = _registered_class(f"{modname}.{clsname}")
    exc = None if base is None else _rebuilt_instance(base, args)
    if exc is None:
        generic = _generic_class(modname, clsname)
        exc = generic.__new__(generic)
        exc.args = args
    return exc


def _may_set(cls: type, name: str) -> bool:
    if name.startswith("__") or not name.isidentifier() or name == _REMOTE_TB_ATTR:
        return False
    # Never shadow a method: the rebuilt exception must keep working.
    return not inspect.isroutine(_static_class_attr(cls, name))


_TYPE_MRO = type.__dict__["__mro__"].__get__
_TYPE_NAMESPACE = type.__dict__["__dict__"].__get__
_METACLASS_MRO = _TYPE_MRO(type)  # what a class made by `type` also finds there


def _static_class_attr(cls: type, name: str) -> Any:
    """``inspect.getattr_static(cls, name, None)``, ~20x faster for a class made
    by `type` itself (every exception class but exotic ones): the namespaces of
    its MRO, then type's. Each exception a peer sends asks this for each of its
    attributes (11 us apiece through inspect, 3x the rest of `load`)."""
    if type(cls) is not type:
        return inspect.getattr_static(cls, name, None)
    for classes in (_TYPE_MRO(cls), _METACLASS_MRO):
        for klass in classes:
            namespace = _TYPE_NAMESPACE(klass)
            if name in namespace:
                return namespace[name]
    return None


def _reads_as_none(exc: BaseException, name: str) -> bool:
    try:
        return getattr(exc, name) is None
    except Exception:  # noqa: BLE001 - an attribute that cannot be read is set as sent
        return False


def _set_attrs(exc: BaseException, attrs: tuple[tuple[str, Any], ...]) -> None:
    for name, value in attrs:
        if not _may_set(type(exc), name):
            continue
        # An unset C field reads as None but prints differently once set to
        # None (OSError.filename2 would add " -> None" to str()).
        if value is None and _reads_as_none(exc, name):
            continue
        try:
            setattr(exc, name, value)
        except (AttributeError, TypeError, ValueError):
            # read-only or typed attributes (a property, OSError.errno) keep their value
            continue


def _version_warning(attrs: tuple[tuple[str, Any], ...]) -> str:
    remote_versions = [value for name, value in attrs if name == _REMOTE_VERSION_ATTR]
    if not remote_versions:
        return ""
    remote_version = remote_versions[-1]
    if not isinstance(remote_version, str) or remote_version == _VERSION_DENIED:
        return ""
    if remote_version.split(".")[0] == RPYC_VERSION.split(".")[0]:
        return ""
    local = LOCAL_VERSION
    return f"\nWARNING: Remote is on RPyC {remote_version} and local is on RPyC {local}.\n\n"


def load(
    val: RemoteValue,
    import_custom_exceptions: bool = False,
    instantiate_custom_exceptions: bool = False,
    instantiate_oldstyle_exceptions: bool = False,
) -> BaseException:
    """The exception a peer's vinegar value stands for. RPyC-compatible.

    Built-in exception classes are rebuilt; other classes only with
    ``instantiate_custom_exceptions`` (their module imported only with
    ``import_custom_exceptions`` too). A class not used that way is looked up
    by ``module.ClassName`` in RPyC's ``_generic_exceptions_cache``, where a
    program may register its own exception classes (as RPyC's tutorial
    does); anything else becomes a cached `GenericException` subclass of that
    name. The instance is
    made with ``__new__`` only, gets the remote args and attributes, keeps
    the remote traceback text in ``_remote_tb`` and shows it in ``str()``.
    A remote major version other than RPyC 6 adds a warning to that text.

    Unlike RPyC, this returns a `StopIteration` instance (not the class),
    imports nothing unless instantiation is on as well, and never sets
    dunder attributes or shadows methods. ``instantiate_oldstyle_exceptions``
    is accepted for compatibility; Python 3 has no old-style classes.

    Raises:
        VinegarError: ``val`` is not a vinegar value.
    """
    if type(val) is int and val == consts.EXC_STOP_ITERATION:
        return StopIteration()
    modname, clsname, args, attrs, tbtext = _check_shape(val)
    base = _local_class(modname, clsname, import_custom_exceptions, instantiate_custom_exceptions)
    exc = _instantiate(base, modname, clsname, args)
    _set_attrs(exc, attrs)
    setattr(exc, _REMOTE_TB_ATTR, tbtext + _version_warning(attrs))
    return exc
