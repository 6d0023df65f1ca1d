"""The 20 request handlers of RPyC 6 (PROTOCOL.md section 5), as a mixin of `Connection`.

RPyC-compatible: each handler is the method ``_handle_<name>`` taking the
unboxed request arguments, so a `Connection` subclass may override one; the
table from handler number to function is built once per class. Every path
that touches an attribute of a local object goes through the attribute
policy (`grpyc.policy`), including the implicit ones RPyC left open (CMP,
HASH, CALL, INSTANCECHECK, PICKLE, BUFFITER).
"""

from __future__ import annotations

import itertools
import pickle
import sys
from collections.abc import Callable
from typing import Any, ClassVar, cast

from grpyc import consts, netref
from grpyc._introspect import class_hook
from grpyc.lib import get_id_pack, get_methods
from grpyc.policy import CMP_OPS, attr_name, check_attr

__all__ = ["RequestHandlers"]


class RequestHandlers:
    """Request handlers; the connection provides `_config`, `_local_root` and the tables."""

    _HANDLERS: ClassVar[dict[int, Callable[..., Any]]]
    _config: dict[str, Any]
    _local_root: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._HANDLERS = cls._request_handlers()

    @classmethod
    def _request_handlers(cls) -> dict[int, Callable[..., Any]]:
        """Handler number -> ``_handle_<name>`` function.

        Built once per class (subclasses may override handlers), not per
        connection: thousands of connections share it.
        """
        return {
            number: getattr(cls, f"_handle_{name.lower()}")
            for number, name in consts.HANDLER_NAMES.items()
        }

    # The connection implements these.
    def _exported(self, id_pack: Any) -> Any:
        raise NotImplementedError

    def _release_exported(self, id_pack: Any, count: Any) -> None:
        raise NotImplementedError

    def _shutdown_by_peer(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ the policy
    def _check_attr(self, obj: Any, name: str, perm: str) -> str:
        return check_attr(self._config, obj, name, perm)

    def _access_attr(
        self,
        obj: Any,
        name: Any,
        args: tuple[Any, ...],
        overrider: str,
        perm: str,
        default: Callable[..., Any],
    ) -> Any:
        if type(name) is not str:  # `attr_name` inlined: once per attribute request
            name = attr_name(name)
        accessor = class_hook(type(obj), overrider)
        if accessor is None:
            return default(obj, check_attr(self._config, obj, name, perm), *args)
        return accessor(obj, name, *args)

    def _require_allowed(self, obj: Any, name: str, *, plain_policy: bool = True) -> None:
        """Apply the policy to an attribute a handler uses implicitly.

        A ``_rpyc_getattr`` override decides if the object's type has one;
        otherwise the config policy does (when `plain_policy`).
        """
        override = class_hook(type(obj), "_rpyc_getattr")
        if override is not None:
            override(obj, name)
        elif plain_policy:
            self._check_attr(obj, name, "allow_getattr")

    # -------------------------------------------------------------- handlers
    def _handle_ping(self, data: Any) -> Any:
        return data

    def _handle_close(self) -> None:
        self._shutdown_by_peer()

    def _handle_getroot(self) -> Any:
        return self._local_root

    def _handle_getattr(self, obj: Any, name: Any) -> Any:
        # `_access_attr` inlined: every remote attribute read comes this way.
        if type(name) is not str:
            name = attr_name(name)
        accessor = class_hook(type(obj), "_rpyc_getattr")
        if accessor is None:
            return getattr(obj, check_attr(self._config, obj, name, "allow_getattr"))
        return accessor(obj, name)

    def _handle_delattr(self, obj: Any, name: Any) -> None:
        self._access_attr(obj, name, (), "_rpyc_delattr", "allow_delattr", delattr)

    def _handle_setattr(self, obj: Any, name: Any, value: Any) -> None:
        self._access_attr(obj, name, (value,), "_rpyc_setattr", "allow_setattr", setattr)

    def _handle_call(self, obj: Any, args: Any, kwargs: Any = ()) -> Any:
        # Calling plain functions is what callbacks are; an object whose type
        # has its own policy must allow "__call__" through it.
        # `_require_allowed(obj, "__call__", plain_policy=False)` inlined: the
        # call of every callback and bound method comes this way.
        override = class_hook(type(obj), "_rpyc_getattr")
        if override is not None:
            override(obj, "__call__")
        if type(kwargs) is tuple and not kwargs:  # no keywords, as sent by every client
            return obj(*args)
        return obj(*args, **dict(kwargs))  # stock's way for the rest (None raises)

    def _handle_callattr(self, obj: Any, name: Any, args: Any, kwargs: Any = ()) -> Any:
        return self._handle_getattr(obj, name)(*args, **dict(kwargs))

    def _handle_repr(self, obj: Any) -> str:
        # As RPyC, whatever the config: only a type's own policy may refuse.
        self._require_allowed(obj, "__repr__", plain_policy=False)
        return repr(obj)

    def _handle_str(self, obj: Any) -> str:
        self._require_allowed(obj, "__str__", plain_policy=False)
        return str(obj)

    def _handle_cmp(self, obj: Any, other: Any, op: Any = "__cmp__") -> Any:
        op = attr_name(op)
        if op not in CMP_OPS:
            raise AttributeError(f"cannot access {op!r}: not a comparison")
        self._require_allowed(obj, op)
        return getattr(type(obj), op)(obj, other)

    def _handle_hash(self, obj: Any) -> int:
        self._require_allowed(obj, "__hash__")
        return hash(obj)

    def _handle_dir(self, obj: Any) -> tuple[str, ...]:
        return tuple(dir(obj))

    def _handle_pickle(self, obj: Any, proto: Any) -> bytes:
        if not self._config["allow_pickle"]:
            raise ValueError("pickling is disabled (allow_pickle=False)")
        self._require_allowed(obj, "__reduce_ex__", plain_policy=False)
        return bytes(pickle.dumps(obj, proto))

    def _handle_del(self, obj: Any, count: Any = 1) -> None:
        self._release_exported(get_id_pack(obj), count)

    def _handle_inspect(self, id_pack: Any) -> tuple[tuple[str, str | None], ...]:
        obj = self._exported(id_pack)
        if isinstance(obj, netref.BaseNetref):
            # A proxy we re-exported: its own peer knows the methods.
            conn = netref.connection_of(obj)
            inspected = conn.sync_request(consts.HANDLE_INSPECT, netref.id_pack_of(obj))
            return cast(tuple[tuple[str, str | None], ...], inspected)
        # Every routine, as RPyC lists them: calling one still goes through the policy.
        return get_methods(netref.LOCAL_ATTRS, obj)

    def _handle_buffiter(self, obj: Any, count: Any) -> tuple[Any, ...]:
        if type(count) is not int or count < 0:
            raise ValueError(f"invalid BUFFITER count {count!r}")
        limit = self._config["max_buffiter_count"]
        if count > limit:
            raise ValueError(f"BUFFITER count {count} exceeds max_buffiter_count={limit}")
        self._require_allowed(obj, "__next__")
        return tuple(itertools.islice(obj, count))

    def _handle_oldslicing(
        self, obj: Any, attempt: Any, fallback: Any, start: Any, stop: Any, args: Any
    ) -> Any:
        try:
            return self._handle_getattr(obj, attempt)(slice(start, stop), *args)
        except Exception:  # noqa: BLE001 - legacy protocol: fall back to the old method
            if stop is None:
                stop = sys.maxsize
            return self._handle_getattr(obj, fallback)(start, stop, *args)

    def _handle_ctxexit(self, obj: Any, exc: Any) -> Any:
        exit_method = self._handle_getattr(obj, "__exit__")
        if exc is None:
            return exit_method(None, None, None)
        # The exception may be a proxy: its class comes from what the proxy
        # knows (no round trip the peer's policy could refuse); its traceback
        # stays at the peer.
        return exit_method(netref.local_class_of(exc), exc, None)

    def _handle_instancecheck(self, obj: Any, other_id_pack: Any) -> bool:
        if isinstance(obj, netref.BaseNetref):
            conn = netref.connection_of(obj)
            return bool(conn.sync_request(consts.HANDLE_INSTANCECHECK, obj, other_id_pack))
        if not isinstance(obj, type):
            raise TypeError("INSTANCECHECK target is not a class")
        self._require_allowed(obj, "__instancecheck__", plain_policy=False)
        other = self._find_exported(other_id_pack)
        if other is not None:
            return isinstance(other, obj)
        subclasses: list[type] = obj.__subclasses__()
        return any(id(base) == other_id_pack[1] for base in subclasses)

    def _find_exported(self, id_pack: Any) -> Any:
        raise NotImplementedError


RequestHandlers._HANDLERS = RequestHandlers._request_handlers()
