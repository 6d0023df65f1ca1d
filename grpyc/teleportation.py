"""Function teleportation: a function as brine-dumpable values, and back.

This module executes code by design: `import_function` turns bytecode received
from a peer into a callable, which runs whatever the peer wrote. Import only
exports from peers you already trust with code execution (classic mode).

The export is RPyC 6.0.2's, value for value, so each side imports the other's:
``(name, module, defaults, kwdefaults, code)`` where ``defaults`` is a tuple or
``None``, ``kwdefaults`` is a tuple of ``(name, value)`` pairs or ``None``, and
``code`` holds the 18 `types.CodeType` constructor arguments of Python 3.11+
in constructor order. A code object among the constants (a nested function,
lambda or comprehension) appears there as ``(CODE_MARKER, code)``.

The export carries no version number: the number of code fields (18 from
Python 3.11, 16 for 3.8 to 3.10, 15 before) is the only version it shows, and
`import_function` refuses the older layouts. Bytecode also differs between
Python 3.11, 3.12 and 3.13, which share the 18-field layout, so both ends must
run the same minor version; that cannot be checked from the export.
"""

from __future__ import annotations

import builtins
import importlib
import reprlib
import sys
from collections.abc import Callable
from types import CodeType, FunctionType
from typing import Any

from grpyc import brine

__all__ = ["CODE_MARKER", "export_function", "import_function"]

# RPyC's tag for a nested code object among a code object's constants.
CODE_MARKER = "MAg1c J0hNNzo0hn ZqhuBP17LQk8"

# Nested code objects (functions in functions, comprehensions) recurse once
# per level; Python source rarely nests more than a handful deep, and this
# bound keeps a hostile export far from the interpreter's recursion limit.
MAX_CODE_NESTING = 100

# The CodeType constructor arguments of Python 3.11+, in order, with the type
# each must have in an export.
_CODE_FIELDS: tuple[tuple[str, type], ...] = (
    ("co_argcount", int),
    ("co_posonlyargcount", int),
    ("co_kwonlyargcount", int),
    ("co_nlocals", int),
    ("co_stacksize", int),
    ("co_flags", int),
    ("co_code", bytes),
    ("co_consts", tuple),
    ("co_names", tuple),
    ("co_varnames", tuple),
    ("co_filename", str),
    ("co_name", str),
    ("co_qualname", str),
    ("co_firstlineno", int),
    ("co_linetable", bytes),
    ("co_exceptiontable", bytes),
    ("co_freevars", tuple),
    ("co_cellvars", tuple),
)
_NAME_TUPLE_FIELDS = frozenset({"co_names", "co_varnames", "co_freevars", "co_cellvars"})
_MAX_C_INT = 2**31 - 1

# Code layouts of the Python versions RPyC supports before 3.11, by field count.
_OLDER_LAYOUTS = {16: "3.8 to 3.10", 15: "3.7 or older"}

ExportedFunction = tuple[
    str,
    str | None,
    tuple[Any, ...] | None,
    tuple[tuple[str, Any], ...] | None,
    tuple[Any, ...],
]


def export_function(func: Callable[..., Any]) -> ExportedFunction:
    """Describe ``func`` as brine-dumpable values for `import_function`; RPyC-compatible.

    The function keeps only its code, name, module name and defaults: globals
    are looked up where it is imported, so it should import what it needs in
    its body.

    Raises:
        TypeError: ``func`` is not a plain Python function (RPyC would export a
            bound method's function and drop ``self``; grpyc refuses), it is a
            closure, a default or constant is not brine-dumpable, or a constant
            looks like a nested code object (RPyC would turn it into one).
    """
    if not isinstance(func, FunctionType):
        raise TypeError(f"can only export a Python function, not {type(func).__name__}: {func!r}")
    if func.__closure__:
        free = ", ".join(func.__code__.co_freevars)
        raise TypeError(f"cannot export {func.__qualname__}: it is a closure over {free}")
    defaults = func.__defaults__
    kwdefaults = None if func.__kwdefaults__ is None else tuple(func.__kwdefaults__.items())
    if not brine.dumpable(defaults):
        raise TypeError(f"cannot export {func.__qualname__}: defaults not dumpable: {defaults!r}")
    if not brine.dumpable(kwdefaults):
        raise TypeError(
            f"cannot export {func.__qualname__}: keyword defaults not dumpable: {kwdefaults!r}"
        )
    module = func.__module__
    if module is not None and not isinstance(module, str):
        raise TypeError(f"cannot export {func.__qualname__}: __module__ is {module!r}")
    return (func.__name__, module, defaults, kwdefaults, _export_code(func.__code__))


def _export_code(code: CodeType) -> tuple[Any, ...]:
    fields = [getattr(code, name) for name, _ in _CODE_FIELDS]
    fields[7] = tuple(_export_const(code, const) for const in code.co_consts)
    return tuple(fields)


def _export_const(code: CodeType, const: Any) -> Any:
    if isinstance(const, CodeType):
        return (CODE_MARKER, _export_code(const))
    if not brine.dumpable(const):
        raise TypeError(f"cannot export {code.co_qualname}: constant not dumpable: {const!r}")
    if _is_code_marker(const):
        # It would come back as a code object.
        raise TypeError(f"cannot export {code.co_qualname}: constant mimics CODE_MARKER")
    return const


def _is_code_marker(const: Any) -> bool:
    return type(const) is tuple and len(const) == 2 and const[0] == CODE_MARKER


def import_function(
    exported: ExportedFunction,
    globals: dict[str, Any] | None = None,
    def_: bool = True,
) -> FunctionType:
    """Rebuild a function exported by `export_function` or RPyC's; RPyC-compatible.

    Args:
        exported: the export.
        globals: the new function's globals; by default the namespace of the
            module named in the export, or of ``__main__`` if that module
            cannot be imported. ``__builtins__`` is added when missing.
        def_: also bind the function under its name in ``globals``.

    Raises:
        TypeError: ``exported`` is not a tuple, or ``globals`` is not a dict
            (a remote namespace must be obtained first: RPyC obtains it itself).
        ValueError: ``exported`` is malformed, or it comes from a Python
            version whose code layout differs from this interpreter's.

    Where grpyc differs from RPyC: the export is checked field by field before
    anything is built or imported, where RPyC fails wherever a bad value
    lands (or builds code for another Python version); ``globals`` must be a
    dict, where RPyC copies a remote namespace with ``obtain``.
    """
    name, module, defaults, kwdefaults, code_fields = _check_export(exported)
    # Everything from the peer is checked and built before any module is imported.
    code = _import_code(code_fields, depth=1)
    if code.co_freevars:
        # An exported function has no closure cells to fill them.
        raise ValueError(
            f"exported function {_short(name)} has free variables {_short(code.co_freevars)}"
        )
    if globals is None:
        globals = _module_namespace(module)
    elif not isinstance(globals, dict):
        raise TypeError(f"globals must be a dict, not {type(globals).__name__}")
    globals.setdefault("__builtins__", builtins.__dict__)
    func = FunctionType(code, globals, name, defaults)
    if kwdefaults is not None:
        func.__kwdefaults__ = dict(kwdefaults)
    if def_:
        globals[name] = func
    return func


def _check_export(exported: Any) -> ExportedFunction:
    if not isinstance(exported, tuple):
        raise TypeError(f"exported function must be a tuple, not {type(exported).__name__}")
    if len(exported) != 5:
        raise ValueError(f"exported function must have 5 fields, got {len(exported)}")
    name, module, defaults, kwdefaults, code_fields = exported
    if not isinstance(name, str):
        raise ValueError(f"exported function name must be a str, got {_short(name)}")
    if module is not None and not _is_absolute_module_name(module):
        raise ValueError(f"exported module name must be absolute or None, got {_short(module)}")
    if defaults is not None and not isinstance(defaults, tuple):
        raise ValueError(f"exported defaults must be a tuple or None, got {_short(defaults)}")
    if kwdefaults is not None and not _is_kwdefaults(kwdefaults):
        raise ValueError(
            f"exported kwdefaults must be (name, value) pairs or None, got {_short(kwdefaults)}"
        )
    return name, module, defaults, kwdefaults, code_fields


def _is_absolute_module_name(module: Any) -> bool:
    return isinstance(module, str) and module != "" and not module.startswith(".")


def _is_kwdefaults(kwdefaults: Any) -> bool:
    return isinstance(kwdefaults, tuple) and all(
        isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
        for pair in kwdefaults
    )


def _import_code(fields: Any, depth: int) -> CodeType:
    if depth > MAX_CODE_NESTING:
        raise ValueError(f"exported code nests deeper than MAX_CODE_NESTING={MAX_CODE_NESTING}")
    if type(fields) is not tuple:
        raise ValueError(f"exported code must be a tuple, got {type(fields).__name__}")
    _check_code_layout(len(fields))
    for (field, kind), value in zip(_CODE_FIELDS, fields, strict=True):
        _check_code_field(field, kind, value)
    if fields[1] > fields[0]:
        raise ValueError(f"exported co_posonlyargcount={fields[1]} exceeds co_argcount={fields[0]}")
    consts = tuple(
        _import_code(const[1], depth + 1) if _is_code_marker(const) else const
        for const in fields[7]
    )
    # CPython reports some inconsistent arguments as SystemError.
    arguments = [*fields[:7], consts, *fields[8:]]
    try:
        return CodeType(*arguments)
    except (TypeError, ValueError, SystemError) as exc:
        raise ValueError(f"exported code {_short(fields[12])} is invalid: {exc}") from exc


def _check_code_layout(field_count: int) -> None:
    if field_count == len(_CODE_FIELDS):
        return
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    older = _OLDER_LAYOUTS.get(field_count)
    if older is None:
        raise ValueError(
            f"exported code has {field_count} fields; Python {here} expects {len(_CODE_FIELDS)}"
        )
    raise ValueError(
        f"function exported by Python {older} ({field_count} code fields) cannot be "
        f"imported by Python {here}: bytecode differs between Python versions"
    )


def _check_code_field(field: str, kind: type, value: Any) -> None:
    # bool is an int subclass, so the exact type is compared.
    has_kind = type(value) is kind
    if not has_kind:
        raise ValueError(f"exported {field} must be {kind.__name__}, got {_short(value)}")
    # CodeType stores these as C ints; it reports some negative values as
    # SystemError and values past a C int as OverflowError.
    if kind is int and not 0 <= value <= _MAX_C_INT:
        raise ValueError(f"exported {field} must be in 0..{_MAX_C_INT}, got {value}")
    if field in _NAME_TUPLE_FIELDS and not all(type(item) is str for item in value):
        raise ValueError(f"exported {field} must hold only str, got {_short(value)}")


def _module_namespace(module: str | None) -> dict[str, Any]:
    try:
        namespace = vars(importlib.import_module(module or "__main__"))
    except ImportError:
        namespace = vars(importlib.import_module("__main__"))
    return namespace


def _short(value: Any) -> str:
    # Peer values can be megabytes long; messages show a bounded repr.
    return reprlib.repr(value)
