"""`Connection`: the RPyC 6 protocol on one channel, run by a greenlet hub.

How it works: the connection's `ConnectionHub` (hub.py) runs one reader
greenlet that hands every frame to `Connection._on_frame`. There, replies
and exceptions are decoded and unboxed *in frame order* and delivered to the
waiting slot of their ``seq`` (unboxing never blocks the reader: a proxy whose
class is not known yet gets a placeholder class that its caller resolves);
requests go to their own handler greenlet, within the hub's limits. PING and
DEL are answered by the reader itself (they never block), so keepalives and
reference counting go on even when handlers are saturated.

This module owns what messages mean (PROTOCOL.md sections 2, 4, 5, 7):
message encoding, boxing and reference counting, the 20 request handlers,
and the attribute policy (`check_attr`), which is applied on every path that
touches an attribute, including CMP, HASH, CALL, INSTANCECHECK and PICKLE.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
import sys
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

import gevent
import gevent.lock
from gevent import GreenletExit

from grpyc import brine, consts, netref, vinegar
from grpyc.async_ import AsyncResult, AsyncResultTimeout
from grpyc.hub import ConnectionHub, ReplySlot
from grpyc.lib import IdPack, get_id_pack, get_methods, hasattr_static

__all__ = ["DEFAULT_CONFIG", "Connection", "PingError", "ProtocolError", "check_attr"]

RemoteValue = Any

# fmt: off
_SAFE_ATTRS = frozenset([
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

DEFAULT_CONFIG: dict[str, Any] = {
    # --- RPyC's keys and defaults (the seed document's dict) ---
    "allow_safe_attrs": True,
    "allow_exposed_attrs": True,
    "allow_public_attrs": False,
    "allow_all_attrs": False,
    "safe_attrs": set(_SAFE_ATTRS),
    "exposed_prefix": "exposed_",
    "allow_getattr": True,
    "allow_setattr": False,
    "allow_delattr": False,
    "allow_pickle": False,
    "include_local_traceback": True,
    "include_local_version": True,
    "instantiate_custom_exceptions": False,
    "import_custom_exceptions": False,
    "instantiate_oldstyle_exceptions": False,
    "propagate_SystemExit_locally": False,
    "propagate_KeyboardInterrupt_locally": True,
    "log_exceptions": True,
    "logger": None,
    "connid": None,
    "credentials": None,
    "endpoints": None,
    "sync_request_timeout": 30,
    "before_closed": None,
    "close_catchall": False,
    # Kept for compatibility and ignored: every request already runs in its
    # own greenlet, so replies can never reach the wrong thread.
    "bind_threads": False,
    # --- grpyc's keys ---
    # None keeps the channel's own setting (compression "auto", 64 MiB frames).
    "compression": None,
    "max_frame_size": None,
    "max_decompressed_size": None,
    # Brine nesting the reader accepts; real messages nest < 20 deep.
    "max_brine_depth": brine.DEFAULT_MAX_DEPTH,
    # Handler greenlets per connection; beyond, requests queue, then get errors.
    # 256 keeps a flood from one peer at a few MiB of greenlet stacks.
    "max_concurrent_requests": 256,
    "max_queued_requests": 4096,
    # Bytes of requests (their decompressed frames) running or queued at once;
    # past it, requests get an error reply. Bounds what a peer can park here.
    "max_request_bytes": 128 * 1024 * 1024,
    # Proxy classes cached per connection (least recently used go first): a
    # peer naming endless new classes cannot grow memory without bound.
    "max_netref_classes": 256,
    # Bytes queued for a peer that does not read before the connection drops:
    # above the largest frame so one big reply never trips it.
    "max_send_buffer": 256 * 1024 * 1024,
    # Upper bound for one BUFFITER batch, so a peer cannot make us drain an
    # endless iterator into memory.
    "max_buffiter_count": 65536,
    # True runs one request at a time per connection (RPyC's model); a handler
    # waiting on the peer yields its turn, so nested requests still get in.
    "serialize_requests": False,
    # True answers `proxy.method` from the class's INSPECT answer and calls
    # it with one CALLATTR (no GETATTR round trip); False is exact RPyC.
    "local_method_lookup": True,
    # True iterates proxies of built-in lists, dicts and sets in batches
    # (BUFFITER: 16, 64, 256, then 1024 items a request); False is RPyC's one
    # request per item. Off by default: under the soak workload a server that
    # prefetches grows RSS in memory outside Python's allocator (issue note).
    "prefetch_iteration": False,
    # Seconds between keepalive pings when nothing arrives (None: off), and how
    # long a ping may take before the peer is declared dead.
    "keepalive_interval": None,
    "keepalive_timeout": 10.0,
    # Seconds without any incoming frame before the connection closes (None: off).
    "idle_timeout": None,
    # Seconds `close()` waits for the peer to answer CLOSE.
    "close_timeout": 2.0,
}

_CMP_OPS = frozenset(["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__cmp__"])
_connection_ids = itertools.count(1)
_module_logger = logging.getLogger("grpyc.protocol")


class PingError(Exception):
    """The exception raised should `Connection.ping` fail. RPyC-compatible."""


class ProtocolError(ValueError):
    """The peer sent a message that breaks the protocol."""


# ------------------------------------------------------------------ messages
def encode_request(seq: int, handler: int, boxed_args: Any) -> bytes:
    return brine.dump((seq, (handler, boxed_args)), b"\x01")


def encode_reply(seq: int, boxed: Any) -> bytes:
    return brine.dump((seq, boxed), b"\x02")


def encode_exception(seq: int, dumped_exc: Any) -> bytes:
    return brine.dump((seq, dumped_exc), b"\x03")


def decode_message(payload: bytes, max_depth: int) -> tuple[int, int, Any]:
    """Split a frame payload into ``(msg_type, seq, body)``.

    Raises:
        ProtocolError: not a well-formed RPyC 6 message.
    """
    if not payload:
        raise ProtocolError("empty message")
    msg = payload[0]
    if msg not in (consts.MSG_REQUEST, consts.MSG_REPLY, consts.MSG_EXCEPTION):
        raise ProtocolError(f"unknown message type {msg}")
    try:
        decoded = brine.load(payload, max_depth, start=1)
    except brine.BrineError as exc:
        raise ProtocolError(f"undecodable message: {exc}") from exc
    if type(decoded) is not tuple or len(decoded) != 2 or type(decoded[0]) is not int:
        raise ProtocolError("message is not a (seq, body) pair")
    return msg, decoded[0], decoded[1]


# ------------------------------------------------------------ attribute policy
def check_attr(config: dict[str, Any], obj: Any, name: str, perm: str) -> str:
    """The attribute name the policy lets a peer reach on `obj`, or AttributeError.

    Follows the seed document's config table: `perm` (``allow_getattr`` ...)
    must be on; then the name must be allowed as exposed (``exposed_prefix``),
    safe (``safe_attrs``), public (no leading ``_``) or by ``allow_all_attrs``.
    ``name`` maps to ``exposed_name`` when only that one exists.
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
    has_exposed = bool(prefix) and (
        hasattr(obj, prefix + name) or hasattr_static(obj, prefix + name)
    )
    if plain and (not has_exposed or hasattr(obj, name)):
        return name
    if has_exposed:
        return prefix + name
    if plain:
        return name
    raise AttributeError(f"cannot access {name!r}: not allowed by the attribute policy")


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _attr_name(name: Any) -> str:
    if type(name) is str:
        return name
    if type(name) is bytes:
        return name.decode("utf-8")
    raise TypeError(f"attribute name must be str, not {type(name).__name__}")


# ---------------------------------------------------------------- connection
class Connection:
    """The RPyC connection (protocol) over one channel. RPyC-compatible.

    Objects exported to the peer are kept alive by reference count until the
    peer's proxies die; proxies of remote objects are cached weakly.

    Args:
        root: the local service object exposed to the peer.
        channel: the `Channel` carrying the frames.
        config: overrides of `DEFAULT_CONFIG`.

    Unlike RPyC, a connection is served by its own reader greenlet from the
    moment it exists: `serve`/`poll`/`serve_all` only wait, and any number of
    greenlets may call through it at once.
    """

    _HANDLERS: ClassVar[dict[int, Callable[..., Any]]]

    def __init__(self, root: Any, channel: Any, config: dict[str, Any] | None = None) -> None:
        self._config: dict[str, Any] = {**DEFAULT_CONFIG, **(config or {})}
        if self._config["connid"] is None:
            self._config["connid"] = f"conn{next(_connection_ids)}"
        self._channel = channel
        try:
            self._apply_channel_config()
        except BaseException:
            channel.close()  # the connection owns its channel, even when refused
            raise
        self._local_root = root
        self._remote_root: Any = None
        self._seq = itertools.count()
        self._local_objects: dict[IdPack, list[Any]] = {}
        self._proxy_cache: weakref.WeakValueDictionary[IdPack, Any] = weakref.WeakValueDictionary()
        self._netref_classes: OrderedDict[tuple[str, int, bool], type] = OrderedDict()
        # A list: append and pop are atomic for other OS threads; DELs merge,
        # so their order does not matter.
        self._dels: list[tuple[IdPack, int]] = []
        self._local_method_lookup = bool(self._config["local_method_lookup"])
        self._max_depth = int(self._config["max_brine_depth"])
        self._closing = False
        self._pinging = False
        self._disconnected = False
        self._turn = gevent.lock.Semaphore(1) if self._config["serialize_requests"] else None
        self._turn_holder: Any = None
        self._last_traceback: Any = None
        self._logger: logging.Logger = self._config["logger"] or _module_logger
        self._hub = ConnectionHub(
            channel,
            self._on_frame,
            self._on_closed,
            name=self._config["connid"],
            logger=self._logger,
            max_concurrent_requests=int(self._config["max_concurrent_requests"]),
            max_queued_requests=int(self._config["max_queued_requests"]),
            max_send_buffer=int(self._config["max_send_buffer"]),
            max_request_bytes=int(self._config["max_request_bytes"]),
            take_deferred=self._take_del_frames,
        )
        self._hub.start()
        self._start_watchdog()

    def _apply_channel_config(self) -> None:
        for key, attr in (
            ("compression", "compress"),
            ("max_frame_size", "max_frame_size"),
            ("max_decompressed_size", "max_decompressed_size"),
        ):
            value = self._config[key]
            if value is not None:
                setattr(self._channel, attr, value)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<grpyc.Connection {self._config['connid']!r} ({state}) at 0x{id(self):x}>"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -------------------------------------------------------------- lifecycle
    @property
    def closed(self) -> bool:
        """True once the connection is closed (locally, by the peer, or lost)."""
        return self._closing or self._hub.closed

    def close(self) -> None:
        """Close the connection, releasing all held resources. RPyC-compatible.

        Sends CLOSE and waits up to ``close_timeout`` for the peer's answer
        (PROTOCOL.md section 7), then shuts down at once.
        """
        if self.closed:
            return
        self._closing = True
        try:
            before_closed = self._config["before_closed"]
            if before_closed is not None:
                before_closed(self.root)
            self._request(consts.HANDLE_CLOSE, (), self._config["close_timeout"])
        except (EOFError, TimeoutError):
            pass
        except Exception:
            if not self._config["close_catchall"]:
                raise
        finally:
            self._hub.shutdown(EOFError("connection closed locally"))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request of the peer runs here; False if `timeout` passed first.

        grpyc's own (servers drain connections with it); a closed connection is idle.
        """
        return self._hub.wait_idle(timeout)

    def abort(self, reason: str = "connection aborted") -> None:
        """Close at once, without the CLOSE exchange: pending calls get `EOFError`.

        grpyc's own (servers use it for connections that must go now).
        """
        self._hub.shutdown(EOFError(reason))

    def _on_closed(self, reason: BaseException) -> None:
        """Runs once when the hub shuts down: release everything, tell the service."""
        self._closing = True
        self._local_objects.clear()
        self._proxy_cache.clear()
        self._dels.clear()
        self._remote_root = None
        if not self._disconnected:
            self._disconnected = True
            on_disconnect = getattr(self._local_root, "on_disconnect", None)
            if on_disconnect is not None:
                on_disconnect(self)

    def fileno(self) -> int:
        """The underlying file descriptor. RPyC-compatible."""
        return self._channel.fileno()

    def ping(self, data: Any = None, timeout: float | None = 3) -> None:
        """Check the peer echoes `data` within `timeout`. RPyC-compatible.

        Raises:
            PingError: the echo differs from what was sent.
            EOFError: the connection closed (also while waiting).
            AsyncResultTimeout: no echo within `timeout`.
        """
        if data is None:
            data = "abcdefghijklmnopqrstuvwxyz" * 20
        echoed = self.async_request(consts.HANDLE_PING, data, timeout=timeout).value
        if echoed != data:
            raise PingError("echo mismatches sent data")

    # ---------------------------------------------------------------- serving
    def serve(
        self,
        timeout: float | None = 1,
        wait_for_lock: bool = True,
        waiting: Callable[[], bool] = lambda: True,
    ) -> bool:
        """Wait up to `timeout` for the reader to handle one message. RPyC-compatible.

        The reader greenlet serves all the time; this only waits for it.

        Returns:
            True if a request or reply was handled, False otherwise.

        Raises:
            EOFError: the connection is closed.
        """
        if not waiting():
            return False
        return self._hub.wait_frame(timeout)

    def poll(self, timeout: float | None = 0) -> bool:
        """`serve` with a default timeout of 0. RPyC-compatible."""
        return self.serve(timeout)

    def serve_all(self) -> None:
        """Block until the connection closes, then close it. RPyC-compatible."""
        try:
            self._hub.serve_until_closed()
        finally:
            self.close()

    def serve_threaded(self, thread_count: int = 10) -> None:
        """Same as `serve_all`: requests already run concurrently. RPyC-compatible."""
        self.serve_all()

    def poll_all(self, timeout: float | None = 0) -> bool:
        """Wait `timeout`, telling whether any message was handled. RPyC-compatible."""
        served = False
        deadline = gevent.Timeout._start_new_or_dummy(timeout)
        try:
            while True:
                served = self._hub.wait_frame(None) or served
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise
        except EOFError:
            pass
        finally:
            deadline.close()
        return served

    # --------------------------------------------------------------- requests
    def sync_request(self, handler: int, *args: Any) -> Any:
        """Send a request and wait for its result. RPyC-compatible.

        Raises:
            the remote exception, `EOFError` if the connection closes, or
            `AsyncResultTimeout` after ``sync_request_timeout`` seconds.
        """
        return self._request(handler, args, self._config["sync_request_timeout"])

    def _request(self, handler: int, args: tuple[Any, ...], timeout: float | None) -> Any:
        if not self._hub.is_hub_thread():
            return self._hub.call_from_thread(self._request, (handler, args, timeout), timeout)
        if self._hub.closed:
            raise EOFError(f"connection {self._config['connid']} is closed")
        seq = next(self._seq)
        payload = encode_request(seq, handler, self._box(args))
        slot = ReplySlot()
        pending = self._hub.pending
        pending[seq] = slot
        try:
            self._hub.send(payload)
            outcome = self._wait_turn_released(slot, timeout)
        finally:
            pending.pop(seq, None)
        if outcome is None:
            raise AsyncResultTimeout("result expired")
        is_exc, obj, unresolved = outcome
        if unresolved:
            self._resolve_netref_classes(unresolved)
        if is_exc:
            raise obj
        return obj

    def _wait_turn_released(self, slot: ReplySlot, timeout: float | None) -> Any:
        """Wait on `slot`; a handler waiting so frees its place for nested requests."""
        if not self._hub.nested_wait():
            return slot.wait(timeout)
        try:
            return self._wait_releasing_turn(slot, timeout)
        finally:
            self._hub.nested_wait_done()

    def _wait_releasing_turn(self, slot: ReplySlot, timeout: float | None) -> Any:
        """Wait on `slot`; with ``serialize_requests``, yield the turn meanwhile."""
        if self._turn is None or self._turn_holder is not gevent.getcurrent():
            return slot.wait(timeout)
        self._turn_holder = None
        self._turn.release()
        try:
            return slot.wait(timeout)
        finally:
            self._turn.acquire()
            self._turn_holder = gevent.getcurrent()

    def async_request(self, handler: int, *args: Any, timeout: float | None = None) -> AsyncResult:
        """Send a request without waiting; returns its `AsyncResult`. RPyC-compatible."""
        if not self._hub.is_hub_thread():
            return self._hub.call_from_thread(
                lambda: self.async_request(handler, *args, timeout=timeout), (), timeout
            )
        if self._hub.closed:
            raise EOFError(f"connection {self._config['connid']} is closed")
        result = AsyncResult(self)
        if timeout is not None:
            result.set_expiry(timeout)
        seq = next(self._seq)
        payload = encode_request(seq, handler, self._box(args))
        self._hub.pending[seq] = result
        try:
            self._hub.send(payload)
        except BaseException:
            self._hub.pending.pop(seq, None)
            raise
        return result

    @property
    def root(self) -> Any:
        """The peer's root object (its service). RPyC-compatible."""
        if self._remote_root is None:
            self._remote_root = self.sync_request(consts.HANDLE_GETROOT)
        return self._remote_root

    # ------------------------------------------------------------ the reader
    def _on_frame(self, payload: bytes) -> None:
        """Handle one frame; runs in the reader greenlet and never blocks."""
        msg, seq, body = decode_message(payload, self._max_depth)
        if msg == consts.MSG_REQUEST:
            self._on_request(seq, body, len(payload))
        elif msg == consts.MSG_REPLY:
            self._on_reply(seq, body)
        else:
            self._on_exception(seq, body)

    def _on_request(self, seq: int, body: Any, size: int) -> None:
        if type(body) is not tuple or len(body) != 2 or type(body[0]) is not int:
            self._answer_nowait(seq, ProtocolError("request is not a (handler, args) pair"))
            return
        handler, boxed_args = body
        if handler == consts.HANDLE_DEL and self._try_del_inline(seq, boxed_args):
            return
        if handler == consts.HANDLE_PING and self._try_ping_inline(seq, boxed_args, size):
            return
        if handler == consts.HANDLE_CLOSE:
            self._hub.spawn_owned(self._serve_close, seq)
            return
        if not self._hub.submit(self._serve_request, seq, handler, boxed_args, cost=size):
            self._answer_nowait(seq, RuntimeError(self._overload_message()))

    def _overload_message(self) -> str:
        hub = self._hub
        return (
            f"too many requests: {hub.running_handlers} running, {hub.nested_waits} of them "
            f"waiting on nested calls (max_concurrent_requests={hub.max_concurrent_requests}), "
            f"{hub.queued_requests} queued "
            f"(max_queued_requests={hub.max_queued_requests}), {hub.bytes_in_flight} bytes "
            f"in flight (max_request_bytes={hub.max_request_bytes})"
        )

    def _on_reply(self, seq: int, body: Any) -> None:
        slot = self._hub.pending.pop(seq, None)
        unresolved: list[Any] = []
        try:
            value = self._unbox(body, unresolved)
        except Exception as exc:  # noqa: BLE001 - a malformed reply fails its own caller
            if slot is not None:
                slot._deliver(True, ProtocolError(f"malformed reply: {exc!r}"))
            return
        if slot is not None:
            slot._deliver(False, value, tuple(unresolved))

    def _on_exception(self, seq: int, body: Any) -> None:
        slot = self._hub.pending.pop(seq, None)
        if slot is None:
            return
        try:
            exc = self._unbox_exc(body)
        except vinegar.VinegarError as error:
            exc = ProtocolError(f"malformed exception reply: {error}")
        slot._deliver(True, exc)

    def _answer_nowait(self, seq: int, exc: BaseException) -> None:
        self._hub.send_nowait(encode_exception(seq, self._box_exc(type(exc), exc, None)))

    def _try_del_inline(self, seq: int, boxed_args: Any) -> bool:
        """Answer a well-formed DEL in the reader; False leaves it to a handler."""
        try:
            label, ((obj_label, id_pack), (count_label, count)) = boxed_args
        except (TypeError, ValueError):
            return False
        if (
            label != consts.LABEL_TUPLE
            or obj_label != consts.LABEL_LOCAL_REF
            or count_label != consts.LABEL_VALUE
            or type(id_pack) is not tuple
            or len(id_pack) != 3
        ):
            return False
        try:
            self._decref(id_pack, count)
        except (KeyError, TypeError, ValueError) as exc:
            self._answer_nowait(seq, exc)
            return True
        self._hub.send_nowait(encode_reply(seq, (consts.LABEL_VALUE, None)))
        return True

    def _try_ping_inline(self, seq: int, boxed_args: Any, size: int) -> bool:
        """Echo a small, well-formed PING from the reader; False leaves it to a handler.

        Big pings go to a handler: re-encoding a huge value must not stall
        the reader (and every other caller) meanwhile.
        """
        try:
            label, ((data_label, data),) = boxed_args
        except (TypeError, ValueError):
            return False
        if label != consts.LABEL_TUPLE or data_label != consts.LABEL_VALUE or size > 4096:
            return False
        self._hub.send_nowait(encode_reply(seq, (consts.LABEL_VALUE, data)))
        return True

    # ----------------------------------------------------------- the handlers
    def _serve_request(self, seq: int, handler: int, boxed_args: Any) -> None:
        """Run one request in its handler greenlet and send the answer."""
        if self._turn is not None:
            self._turn.acquire()
            self._turn_holder = gevent.getcurrent()
        args: Any = ()
        try:
            try:
                args = self._unbox(boxed_args)
                payload = encode_reply(seq, self._box(self._call_handler(handler, args)))
            except GreenletExit:
                raise
            except BaseException as exc:  # noqa: BLE001 - every failure goes to the peer
                self._raise_if_local(exc)
                payload = encode_exception(seq, self._box_exc(type(exc), exc, exc.__traceback__))
        finally:
            if self._turn is not None:
                self._turn_holder = None
                self._turn.release()
        # `args` stays alive until the reply is queued: a proxy dying earlier
        # would send its DEL ahead of a reply that refers to it.
        with contextlib.suppress(EOFError):
            self._hub.send(payload)
        del args

    def _call_handler(self, handler: int, args: Any) -> Any:
        func = self._HANDLERS.get(handler)
        if func is None:
            raise ProtocolError(f"unknown request handler {handler}")
        if type(args) is not tuple:
            raise ProtocolError("request arguments are not a tuple")
        return func(self, *args)

    def _raise_if_local(self, exc: BaseException) -> None:
        """Re-raise SystemExit/KeyboardInterrupt here when the config says so."""
        if isinstance(exc, SystemExit) and self._config["propagate_SystemExit_locally"]:
            raise exc
        if (
            isinstance(exc, KeyboardInterrupt)
            and self._config["propagate_KeyboardInterrupt_locally"]
        ):
            raise exc
        self._last_traceback = exc.__traceback__
        if self._config["log_exceptions"] and not isinstance(exc, StopIteration):
            self._logger.debug(
                "%s: exception in request handler", self._config["connid"], exc_info=exc
            )

    def _serve_close(self, seq: int) -> None:
        with contextlib.suppress(EOFError):
            self._hub.send(encode_reply(seq, (consts.LABEL_VALUE, None)))
        self._hub.shutdown(EOFError("connection closed by peer"))

    def _box_exc(self, typ: type[BaseException], exc: BaseException, tb: Any) -> Any:
        return vinegar.dump(
            typ,
            exc,
            tb,
            include_local_traceback=self._config["include_local_traceback"],
            include_local_version=self._config["include_local_version"],
        )

    def _unbox_exc(self, raw: Any) -> BaseException:
        return vinegar.load(
            raw,
            import_custom_exceptions=self._config["import_custom_exceptions"],
            instantiate_custom_exceptions=self._config["instantiate_custom_exceptions"],
            instantiate_oldstyle_exceptions=self._config["instantiate_oldstyle_exceptions"],
        )

    # ----------------------------------------------------------------- boxing
    def _box(self, obj: Any) -> tuple[int, Any]:
        """Box a local value for the wire (PROTOCOL.md section 4)."""
        if brine.dumpable(obj):
            return consts.LABEL_VALUE, obj
        if type(obj) is tuple:
            return consts.LABEL_TUPLE, tuple([self._box(item) for item in obj])
        if isinstance(obj, netref.BaseNetref) and (
            object.__getattribute__(obj, "____conn__") is self
        ):
            return consts.LABEL_LOCAL_REF, object.__getattribute__(obj, "____id_pack__")
        id_pack = get_id_pack(obj)
        entry = self._local_objects.get(id_pack)
        if entry is None:
            self._local_objects[id_pack] = [obj, 1]
        else:
            entry[1] += 1
        return consts.LABEL_REMOTE_REF, id_pack

    def _unbox(self, package: Any, unresolved: list[Any] | None = None) -> Any:
        """Rebuild a boxed value. With `unresolved` (the reader), never blocks."""
        label, value = package
        if label == consts.LABEL_VALUE:
            return value
        if label == consts.LABEL_TUPLE:
            return tuple([self._unbox(item, unresolved) for item in value])
        if label == consts.LABEL_LOCAL_REF:
            return self._local_objects[value][0]
        if label == consts.LABEL_REMOTE_REF:
            return self._proxy_for(value, unresolved)
        raise ProtocolError(f"invalid box label {label!r}")

    def _proxy_for(self, raw_id_pack: Any, unresolved: list[Any] | None) -> Any:
        name_pack, class_id, instance_id = raw_id_pack
        if type(class_id) is not int or type(instance_id) is not int:
            raise ProtocolError(f"invalid id pack {raw_id_pack!r}")
        id_pack = (str(name_pack), class_id, instance_id)
        proxy = self._proxy_cache.get(id_pack)
        if proxy is not None:
            object.__setattr__(
                proxy, "____refcount__", object.__getattribute__(proxy, "____refcount__") + 1
            )
            if unresolved is None and type(proxy) is netref.UnresolvedNetref:
                self._resolve_netref_classes((proxy,))
            return proxy
        cls = self._known_netref_class(id_pack)
        if cls is None and unresolved is None:
            cls = self._inspect_netref_class(id_pack)
        proxy = (cls or netref.UnresolvedNetref)(self, id_pack)
        if cls is None:
            unresolved.append(proxy)  # type: ignore[union-attr]
        self._proxy_cache[id_pack] = proxy
        return proxy

    def _known_netref_class(self, id_pack: IdPack) -> type | None:
        cls = netref.builtin_classes_cache.get(id_pack[0])
        if cls is None:
            key = (id_pack[0], id_pack[1], id_pack[2] == 0)
            cls = self._netref_classes.get(key)
            if cls is not None:
                self._netref_classes.move_to_end(key)
        return cls

    def _inspect_netref_class(self, id_pack: IdPack) -> type:
        methods = self.sync_request(consts.HANDLE_INSPECT, id_pack)
        cls = netref.class_factory(id_pack, methods, self._config["exposed_prefix"])
        self._netref_classes[(id_pack[0], id_pack[1], id_pack[2] == 0)] = cls
        while len(self._netref_classes) > self._config["max_netref_classes"]:
            self._netref_classes.popitem(last=False)
        return cls

    def _resolve_netref_classes(self, proxies: tuple[Any, ...]) -> None:
        """Give placeholder proxies their real class (asks INSPECT if needed)."""
        for proxy in proxies:
            if type(proxy) is not netref.UnresolvedNetref:
                continue
            id_pack = object.__getattribute__(proxy, "____id_pack__")
            cls = self._known_netref_class(id_pack) or self._inspect_netref_class(id_pack)
            object.__setattr__(proxy, "__class__", cls)

    def _decref(self, id_pack: Any, count: Any) -> None:
        if type(count) is not int or count < 1:
            raise ValueError(f"invalid DEL count {count!r}")
        key = (str(id_pack[0]), id_pack[1], id_pack[2])
        entry = self._local_objects[key]
        entry[1] -= count
        if entry[1] <= 0:
            del self._local_objects[key]

    def _queue_del(self, id_pack: IdPack, count: int) -> None:
        """Called from a proxy's ``__del__``: queue only, never send or block."""
        if self._hub.closed:
            return
        self._dels.append((id_pack, count))
        self._hub.schedule_flush()

    def _take_del_frames(self) -> list[bytes]:
        """DEL frames for the proxies that died, merged per object (hub writer)."""
        if not self._dels:
            return []
        merged: dict[IdPack, int] = {}
        while self._dels:
            id_pack, count = self._dels.pop()
            merged[id_pack] = merged.get(id_pack, 0) + count
        return [
            encode_request(
                next(self._seq),
                consts.HANDLE_DEL,
                (
                    consts.LABEL_TUPLE,
                    ((consts.LABEL_LOCAL_REF, id_pack), (consts.LABEL_VALUE, count)),
                ),
            )
            for id_pack, count in merged.items()
        ]

    # ------------------------------------------------------ attribute access
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
        name = _attr_name(name)
        accessor = getattr(type(obj), overrider, None)
        if accessor is None:
            return default(obj, self._check_attr(obj, name, perm), *args)
        return accessor(obj, name, *args)

    def _require_allowed(self, obj: Any, name: str, *, plain_policy: bool = True) -> None:
        """Apply the policy to an attribute a handler uses implicitly.

        A ``_rpyc_getattr`` override decides if the object's type has one;
        otherwise the config policy does (when `plain_policy`).
        """
        override = getattr(type(obj), "_rpyc_getattr", None)
        if override is not None:
            override(obj, name)
        elif plain_policy:
            self._check_attr(obj, name, "allow_getattr")

    @classmethod
    def _request_handlers(cls) -> dict[int, Callable[..., Any]]:
        """Handler number -> ``_handle_<name>`` function (PROTOCOL.md section 5).

        Built once per class (subclasses may override handlers), not per
        connection: thousands of connections share it.
        """
        return {
            number: getattr(cls, f"_handle_{name.lower()}")
            for number, name in consts.HANDLER_NAMES.items()
        }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._HANDLERS = cls._request_handlers()

    def _handle_ping(self, data: Any) -> Any:
        return data

    def _handle_close(self) -> None:
        self._hub.spawn_owned(self._hub.shutdown, EOFError("connection closed by peer"))

    def _handle_getroot(self) -> Any:
        return self._local_root

    def _handle_getattr(self, obj: Any, name: Any) -> Any:
        return self._access_attr(obj, name, (), "_rpyc_getattr", "allow_getattr", getattr)

    def _handle_delattr(self, obj: Any, name: Any) -> None:
        self._access_attr(obj, name, (), "_rpyc_delattr", "allow_delattr", delattr)

    def _handle_setattr(self, obj: Any, name: Any, value: Any) -> None:
        self._access_attr(obj, name, (value,), "_rpyc_setattr", "allow_setattr", setattr)

    def _handle_call(self, obj: Any, args: Any, kwargs: Any = ()) -> Any:
        # Calling plain functions is what callbacks are; an object whose type
        # has its own policy must allow "__call__" through it.
        self._require_allowed(obj, "__call__", plain_policy=False)
        return obj(*args, **dict(kwargs))

    def _handle_callattr(self, obj: Any, name: Any, args: Any, kwargs: Any = ()) -> Any:
        return self._handle_getattr(obj, name)(*args, **dict(kwargs))

    def _handle_repr(self, obj: Any) -> str:
        self._require_allowed(obj, "__repr__")
        return repr(obj)

    def _handle_str(self, obj: Any) -> str:
        self._require_allowed(obj, "__str__")
        return str(obj)

    def _handle_cmp(self, obj: Any, other: Any, op: Any = "__cmp__") -> Any:
        op = _attr_name(op)
        if op not in _CMP_OPS:
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
        self._decref(get_id_pack(obj), count)

    def _handle_inspect(self, id_pack: Any) -> tuple[tuple[str, str | None], ...]:
        key = (str(id_pack[0]), id_pack[1], id_pack[2])
        obj = self._local_objects[key][0]
        if isinstance(obj, netref.BaseNetref):
            # A proxy we re-exported: its own peer knows the methods.
            conn = object.__getattribute__(obj, "____conn__")
            return conn.sync_request(consts.HANDLE_INSPECT, key)
        return self._visible_methods(obj)

    def _visible_methods(self, obj: Any) -> tuple[tuple[str, str | None], ...]:
        """The INSPECT answer: routines the peer may call.

        Dunders always (they make the proxy's operators; calling one still
        goes through the policy); other names only when the policy allows them,
        so private method names do not leak and a proxy's local method lookup
        matches what GETATTR would allow. Types with their own
        ``_rpyc_getattr`` decide per call, so all their routines are listed.
        """
        methods = get_methods(netref.LOCAL_ATTRS, obj)
        if getattr(type(obj), "_rpyc_getattr", None) is not None:
            return methods
        return tuple(
            (name, doc) for name, doc in methods if _is_dunder(name) or self._may_get(obj, name)
        )

    def _may_get(self, obj: Any, name: str) -> bool:
        try:
            self._check_attr(obj, name, "allow_getattr")
        except AttributeError:
            return False
        return True

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
        # The exception may be a proxy: its class is known, its traceback is not.
        return exit_method(exc.__class__, exc, None)

    def _handle_instancecheck(self, obj: Any, other_id_pack: Any) -> bool:
        if isinstance(obj, netref.BaseNetref):
            conn = object.__getattribute__(obj, "____conn__")
            return conn.sync_request(consts.HANDLE_INSTANCECHECK, obj, other_id_pack)
        if not isinstance(obj, type):
            raise TypeError("INSTANCECHECK target is not a class")
        self._require_allowed(obj, "__instancecheck__", plain_policy=False)
        key = (str(other_id_pack[0]), other_id_pack[1], other_id_pack[2])
        entry = self._local_objects.get(key)
        if entry is not None:
            return isinstance(entry[0], obj)
        return any(id(base) == key[1] for base in obj.__subclasses__())

    # ----------------------------------------------------------- keepalive
    def _start_watchdog(self) -> None:
        intervals = [
            t for t in (self._config["keepalive_interval"], self._config["idle_timeout"]) if t
        ]
        if intervals:
            self._hub.start_watchdog(min(intervals) / 2, self._watchdog_check)

    def _watchdog_check(self) -> None:
        idle = self._config["idle_timeout"]
        quiet = time.monotonic() - self._hub.last_received
        if idle and quiet >= idle and not self._hub.is_busy():
            self._logger.info(
                "%s: closing after %.1f s idle (idle_timeout=%s)",
                self._config["connid"],
                quiet,
                idle,
            )
            self._hub.shutdown(EOFError(f"idle for {quiet:.1f} s (idle_timeout={idle})"))
            return
        interval = self._config["keepalive_interval"]
        if interval and quiet >= interval and not self._pinging:
            self._keepalive_ping()

    def _keepalive_ping(self) -> None:
        self._pinging = True
        try:
            self._ping_or_close()
        finally:
            self._pinging = False

    def _ping_or_close(self) -> None:
        try:
            self.ping(timeout=self._config["keepalive_timeout"])
        except (TimeoutError, PingError):
            self._logger.warning(
                "%s: peer did not answer keepalive ping; closing", self._config["connid"]
            )
            self._hub.shutdown(EOFError("peer did not answer keepalive ping"))
        except EOFError:
            pass


Connection._HANDLERS = Connection._request_handlers()
