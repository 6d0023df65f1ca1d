"""The attribute policy: which attributes of a local object a peer may reach.

Pure decisions over a config mapping (the seed document's keys: the
``allow_*`` switches, ``safe_attrs``, ``exposed_prefix``); no I/O, no
connection. `check_attr` is applied on every path that touches an attribute,
including the implicit ones (CMP, HASH, CALL, INSTANCECHECK, PICKLE).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpyc._introspect import hasattr_static

__all__ = ["CMP_OPS", "SAFE_ATTRS", "attr_name", "check_attr", "is_dunder", "may_get"]

# fmt: off
SAFE_ATTRS = frozenset([
    "__abs__", "__add__", "__and__", "__bool__", "__cmp__", "__contains__", "__delitem__",
    "__delslice__", "__div__", "__divmod__", "__doc__", "__enter__", "__eq__", "__exit__",
    "__float__", "__floordiv__", "__format__", "__ge__", "__getitem__", "__getslice__",
    "__gt__", "__hash__", "__hex__", "__iadd__", "__iand__", "__idiv__", "__ifloordiv__",
    "__ilshift__", "__imod__", "__imul__", "__index__", "__int__", "__invert__", "__ior__",
    "__ipow__", "__irshift__", "__isub__", "__iter__", "__itruediv__", "__ixor__", "__le__",
    "__len__", "__length_hint__", "__long__", "__lshift__", "__lt__", "__mod__", "__mul__",
    "__ne__", "__neg__", "__new__", "__next__", "__nonzero__", "__oct__", "__or__", "__pos__",
    "__pow__", "__radd__", "__rand__", "__rdiv__", "__rdivmod__", "__repr__", "__rfloordiv__",
    "__rlshift__", "__rmod__", "__rmul__", "__ror__", "__rpow__", "__rrshift__", "__rshift__",
    "__rsub__", "__rtruediv__", "__rxor__", "__setitem__", "__setslice__", "__str__", "__sub__",
    "__truediv__", "__xor__", "next",
])
# fmt: on

CMP_OPS = frozenset(["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__cmp__"])


def check_attr(config: Mapping[str, Any], obj: Any, name: str, perm: str) -> str:
    """The attribute name the policy lets a peer reach on `obj`, or AttributeError.

    `perm` (``allow_getattr`` ...) must be on; then the name must be allowed
    as exposed (``exposed_prefix``), safe (``safe_attrs``), public (no leading
    ``_``) or by ``allow_all_attrs``. ``name`` maps to ``exposed_name`` when
    that exists and ``name`` itself is not both allowed and present.
    """
    if not config[perm]:
        raise AttributeError(f"cannot access {name!r}: {perm} is off")
    prefix = config["exposed_prefix"] if config["allow_exposed_attrs"] else ""
    plain = (
        config["allow_all_attrs"]
        or (bool(prefix) and name.startswith(prefix))
        or (config["allow_safe_attrs"] and name in config["safe_attrs"])
        or (config["allow_public_attrs"] and not name.startswith("_"))
    )
    exposed = prefix + name if prefix else ""
    has_exposed = bool(exposed) and (hasattr(obj, exposed) or hasattr_static(obj, exposed))
    if plain and (not has_exposed or hasattr(obj, name)):
        return name
    if has_exposed:
        return exposed
    raise AttributeError(f"cannot access {name!r}: not allowed by the attribute policy")


def may_get(config: Mapping[str, Any], obj: Any, name: str) -> bool:
    """Whether GETATTR of `name` on `obj` passes the policy."""
    try:
        check_attr(config, obj, name, "allow_getattr")
    except AttributeError:
        return False
    return True


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def attr_name(name: Any) -> str:
    """An attribute name from the wire (RPyC peers may send bytes).

    Raises:
        TypeError: neither str nor UTF-8 bytes.
    """
    if type(name) is str:
        return name
    if type(name) is bytes:
        return name.decode("utf-8")
    raise TypeError(f"attribute name must be str, not {type(name).__name__}")
