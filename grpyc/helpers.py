"""Wrappers around proxies and services: RPyC's ``rpyc.utils.helpers`` and decorators.

Owns the client-side conveniences (`async_`, `timed`, `buffiter`), the
server-side ones (`restricted`, `classpartial`, `exposed`, `service`) and
`BgServingThread`, kept so that RPyC code runs unchanged. Nothing here touches
a socket: requests go through `grpyc.netref` and the connection's public
methods, so the connection's policy and limits apply as for any other call.

All names, arguments and behaviours are RPyC-compatible; where grpyc differs
(`BgServingThread`, `buffiter` on local iterables) the docstring says so.
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

import gevent

from grpyc import consts
from grpyc.async_ import AsyncResult
from grpyc.netref import BaseNetref, asyncreq, syncreq

__all__ = [
    "BgServingThread",
    "async_",
    "buffiter",
    "classpartial",
    "exposed",
    "restricted",
    "service",
    "timed",
]

# The prefix `exposed` marks with; the same as the protocol's default
# ``exposed_prefix`` (kept literal so this module does not import protocol).
_DEFAULT_EXPOSED_PREFIX = "exposed_"

_ClassT = TypeVar("_ClassT", bound=type)


# ------------------------------------------------------------------ async_
class _Async:
    """A callable proxy wrapper whose calls return `AsyncResult`s."""

    __slots__ = ("__weakref__", "_request", "proxy")

    def __init__(self, proxy: Any, request: tuple[BaseNetref, int, tuple[Any, ...]]) -> None:
        self.proxy = proxy
        self._request = request

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult:
        target, handler, prefix = self._request
        return cast(AsyncResult, asyncreq(target, handler, *prefix, args, tuple(kwargs.items())))

    def __repr__(self) -> str:
        return f"async_({self.proxy!r})"


def _remote_call(obj: Any) -> tuple[BaseNetref, int, tuple[Any, ...]] | None:
    """The request that calls `obj` remotely, or None if `obj` is not remote.

    A netref is called with CALL. With ``local_method_lookup`` (grpyc's
    default), ``proxy.method`` is a local bound method of the proxy that
    sends CALLATTR; it is called remotely the same way.
    """
    if isinstance(obj, BaseNetref):
        return obj, consts.HANDLE_CALL, ()
    owner = getattr(obj, "__self__", None)
    func = getattr(obj, "__func__", None)
    if not isinstance(owner, BaseNetref) or func is None:
        return None
    name = func.__name__
    cls = type(owner)
    named_methods = cls.__dict__.get("_named_methods", {})
    if func is not cls.__dict__.get(name) and func is not named_methods.get(name):
        return None
    return owner, consts.HANDLE_CALLATTR, (name,)


# Keyed by id(): a cached wrapper holds its proxy, so the id cannot be reused
# while the entry lives. Wrappers are also filed under their own id, so
# wrapping a wrapper returns it.
_async_wrappers: weakref.WeakValueDictionary[int, _Async] = weakref.WeakValueDictionary()


def async_(proxy: Any) -> _Async:
    """The asynchronous version of a callable proxy. RPyC-compatible.

    Calling the result sends the call and returns its `AsyncResult` at once.
    Wrappers are cached weakly per proxy: keep the wrapper in a variable
    rather than writing ``async_(f)(x)`` in a loop. Async calls are not
    ordered with respect to each other.

    Raises:
        TypeError: `proxy` is not a netref (or a proxy's method), or not callable.
    """
    cached = _async_wrappers.get(id(proxy))
    if cached is not None and (cached is proxy or cached.proxy is proxy):
        return cached
    request = _remote_call(proxy)
    if request is None:
        raise TypeError(f"'proxy' must be a Netref: {type(proxy).__name__} is not")
    if not callable(proxy):
        raise TypeError(f"'proxy' must be callable: {type(proxy).__name__} proxy is not")
    wrapper = _Async(proxy, request)
    _async_wrappers[id(proxy)] = wrapper
    _async_wrappers[id(wrapper)] = wrapper
    return wrapper


# RPyC's name from before ``async`` became a keyword.
globals()["async"] = async_


class timed:  # noqa: N801 - RPyC's name
    """A callable proxy whose calls expire after `timeout` seconds. RPyC-compatible.

    Each call returns an `AsyncResult` with that expiry: reading its
    ``value`` (or ``wait()``) raises `AsyncResultTimeout` once `timeout`
    passes without a reply; a reply arriving later is dropped.

    Raises:
        TypeError: `proxy` is not a callable netref.
    """

    __slots__ = ("__weakref__", "proxy", "timeout")

    def __init__(self, proxy: Any, timeout: float | None) -> None:
        self.proxy = async_(proxy)
        self.timeout = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult:
        result = self.proxy(*args, **kwargs)
        result.set_expiry(self.timeout)
        return result

    def __repr__(self) -> str:
        return f"timed({self.proxy.proxy!r}, {self.timeout!r})"


# ---------------------------------------------------------------- buffiter
def buffiter(obj: Any, chunk: int = 10, max_chunk: int = 1000, factor: int = 2) -> Iterator[Any]:
    """Iterate `obj` fetching items in batches that grow. RPyC-compatible.

    Each batch is one BUFFITER request (PROTOCOL.md section 5) of `chunk`
    items; the size is multiplied by `factor` after every batch, up to
    `max_chunk`. One round trip per batch instead of one per item. Unlike
    RPyC, a local (non-proxy) iterable is iterated directly. A grpyc peer
    refuses batches over its ``max_buffiter_count`` (65536 by default).

    Raises:
        ValueError: `chunk` < 1, `max_chunk` < 1 or `factor` < 1.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor!r}")
    if chunk < 1 or max_chunk < 1:
        raise ValueError(f"chunk and max_chunk must be >= 1, got {chunk!r} and {max_chunk!r}")
    return _buffered(obj, chunk, max_chunk, factor)


def _buffered(obj: Any, chunk: int, max_chunk: int, factor: int) -> Iterator[Any]:
    # The remote iterator itself, not iter(proxy): that may already prefetch.
    if isinstance(obj, BaseNetref):
        iterator = syncreq(obj, consts.HANDLE_CALLATTR, "__iter__", (), ())
    else:
        iterator = iter(obj)
    if not isinstance(iterator, BaseNetref):
        yield from iterator
        return
    count = min(chunk, max_chunk)
    while True:
        items = syncreq(iterator, consts.HANDLE_BUFFITER, count)
        if not items:
            return
        yield from items
        count = min(count * factor, max_chunk)


# -------------------------------------------------------------- restricted
class Restricted:  # as stock names its class: the peer sees the name
    """A view of an object that lets the peer reach only listed attributes.

    The protocol consults ``_rpyc_getattr``/``_rpyc_setattr``/``_rpyc_delattr``
    on every path that touches an attribute (GETATTR, CALLATTR, SETATTR,
    DELATTR, and the implicit ones: CALL, REPR, STR, CMP, HASH, PICKLE,
    BUFFITER, CTXEXIT), so nothing outside the lists is reachable remotely.
    """

    __slots__ = ("_attrs", "_obj", "_wattrs")
    _obj: Any
    _attrs: frozenset[str]
    _wattrs: frozenset[str]

    def __init__(self, obj: Any, attrs: frozenset[str], wattrs: frozenset[str]) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_attrs", attrs)
        object.__setattr__(self, "_wattrs", wattrs)

    def _rpyc_getattr(self, name: str) -> Any:
        if name not in self._attrs:
            raise AttributeError(f"{name!r} is not one of the readable attributes")
        return getattr(self._obj, name)

    def _rpyc_setattr(self, name: str, value: Any) -> None:
        if name not in self._wattrs:
            raise AttributeError(f"{name!r} is not one of the writable attributes")
        setattr(self._obj, name, value)

    def _rpyc_delattr(self, name: str) -> None:
        raise AttributeError(f"cannot delete {name!r} of a restricted object")

    __getattr__ = _rpyc_getattr

    def __setattr__(self, name: str, value: Any) -> None:
        self._rpyc_setattr(name, value)

    def __delattr__(self, name: str) -> None:
        self._rpyc_delattr(name)

    def __repr__(self) -> str:
        return f"<restricted {type(self._obj).__name__} object at 0x{id(self):x}>"


def restricted(obj: Any, attrs: Iterable[str], wattrs: Iterable[str] | None = None) -> Any:
    """A view of `obj` exposing only some of its attributes. RPyC-compatible.

    Args:
        obj: the object to wrap.
        attrs: names the peer may read (and call).
        wattrs: names the peer may set; defaults to `attrs`, ``()`` allows none.

    The view forwards nothing else: as in RPyC it is not callable, iterable or
    comparable unless through a listed attribute (``view.read()``). Deleting is
    always refused.
    """
    readable = frozenset(attrs)
    writable = readable if wattrs is None else frozenset(wattrs)
    return Restricted(obj, readable, writable)


# --------------------------------------------------------- BgServingThread
class BgServingThread:
    """Serve a connection in the background. RPyC-compatible.

    On a connection made in plain threads (RPyC's model, where a connection
    is read only by the threads that wait on it) this is RPyC's background
    thread: a daemon thread that serves requests and replies as they come,
    so callbacks run there while the program's other threads block.

    On a connection made under gevent, which its own reader greenlet always
    serves, there is nothing to serve: it only watches for the connection to
    end and then calls `callback`, as RPyC's thread does when serving fails.

    `serve_interval` bounds each wait of the serving thread; `sleep_interval`
    is accepted and unused (waiting needs no pause between serves here).
    """

    SERVE_INTERVAL = 0.0
    SLEEP_INTERVAL = 0.1
    # Longest single wait of the serving thread, so `stop` returns soon.
    _WAIT = 0.5

    def __init__(
        self,
        conn: Any,
        callback: Callable[[], Any] | None = None,
        serve_interval: float = SERVE_INTERVAL,
        sleep_interval: float = SLEEP_INTERVAL,
    ) -> None:
        self._conn = conn
        self._active = True
        self._callback = callback
        self._serve_interval = serve_interval
        self._sleep_interval = sleep_interval
        if conn.cooperative:
            self._thread: Any = gevent.spawn(self._watch, conn)
        else:
            self._thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._thread.start()

    def _watch(self, conn: Any) -> None:
        conn.wait_closed()
        self._ended()

    def _serve(self, conn: Any) -> None:
        wait = max(self._serve_interval, self._WAIT)
        try:
            while self._active and not conn.closed:
                conn.serve(wait)
        except Exception:  # noqa: BLE001, S110 - the connection ended: the callback is told below
            pass
        self._ended()

    def _ended(self) -> None:
        if self._active:
            self._active = False
            self._conn = None
            if self._callback is not None:
                self._callback()

    @property
    def active(self) -> bool:
        """True until `stop` is called or the connection ends."""
        return self._active

    def stop(self) -> None:
        """Stop serving and wait for the background thread; the connection stays open.

        RPyC-compatible. Unlike RPyC, stopping again, or after the connection
        ended, is harmless.
        """
        self._active = False
        self._conn = None
        if isinstance(self._thread, threading.Thread):
            if self._thread is not threading.current_thread():
                self._thread.join()
        elif self._thread is not gevent.getcurrent():
            self._thread.kill()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until serving ends (connection closed or `stop`); False on timeout."""
        self._thread.join(timeout)
        if isinstance(self._thread, threading.Thread):
            return not self._thread.is_alive()
        return bool(self._thread.dead)


# ------------------------------------------------------------ classpartial
def classpartial(cls: _ClassT, /, *args: Any, **kwargs: Any) -> _ClassT:
    """`cls` with its constructor arguments bound. RPyC-compatible.

    For servers, which make one service instance per connection by calling
    the class with no arguments: ``Server(classpartial(MyService, db), ...)``.
    The result keeps `cls`'s name, so service aliases are unchanged.
    """

    def make(_partial_cls: type) -> Any:
        return cls(*args, **kwargs)

    def fill(namespace: dict[str, Any]) -> None:
        namespace.update(__new__=make, __doc__=cls.__doc__, __qualname__=cls.__qualname__)

    partial_cls = types.new_class(cls.__name__, (cls,), exec_body=fill)
    partial_cls.__module__ = cls.__module__
    return partial_cls  # type: ignore[return-value]


# ----------------------------------------------------- exposed and service
def exposed(arg: Any) -> Any:
    """Mark a function, descriptor or class as exposed. RPyC-compatible.

    ``@exposed`` marks with the default prefix ``exposed_``;
    ``@exposed("prefix_")`` with another one. The `service` class decorator
    then adds the prefixed alias of every marked name.

    Raises:
        TypeError: `arg` is neither a string nor a callable or descriptor.
    """
    if isinstance(arg, str):
        return functools.partial(_mark_exposed, arg)
    if callable(arg) or hasattr(arg, "__get__"):
        return _mark_exposed(_DEFAULT_EXPOSED_PREFIX, arg)
    raise TypeError(
        f"exposed expects a callable, a descriptor or a prefix string, not {type(arg).__name__}"
    )


def _mark_exposed(prefix: str, obj: Any) -> Any:
    obj.__exposed__ = prefix
    return obj


def _exposed_prefix(attr: Any) -> str | None:
    """The prefix `attr` was marked with: on it, or on the function it wraps."""
    for candidate in (attr, getattr(attr, "__func__", None)):
        prefix = getattr(candidate, "__exposed__", None)
        if isinstance(prefix, str) and prefix:
            return prefix
    return None


def _is_alias(cls: type, name: str, prefix: str, attr: Any) -> bool:
    """Whether ``name`` is the alias an earlier `service` pass added for ``attr``."""
    if not name.startswith(prefix):
        return False
    original = inspect.getattr_static(cls, name[len(prefix) :], None)
    return original is attr


def service(cls: _ClassT) -> _ClassT:
    """Class decorator: give every `exposed` name its prefixed alias. RPyC-compatible.

    For each attribute marked by `exposed` (also inherited ones), ``name``
    stays and ``<prefix>name`` is added; a marked nested class is processed
    the same way. Descriptors (staticmethod, classmethod, property) are
    copied as they are, so they keep working.
    """
    for name, attr in inspect.getmembers_static(cls):
        prefix = _exposed_prefix(attr)
        if prefix is None or inspect.iscode(attr) or _is_alias(cls, name, prefix, attr):
            continue
        if inspect.isclass(attr):
            attr = service(attr)
        setattr(cls, name, attr)
        setattr(cls, prefix + name, attr)
    return cls
