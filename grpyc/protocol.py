"""`Connection`: RPyC's connection API and the dispatch of its messages.

How it works: a connection runs on a *runtime*, chosen when it is made:
`grpyc.hub.ConnectionHub` for code under gevent (greenlets), or
`grpyc._threadhub.ThreadHub` for plain OS threads (RPyC's model). Whoever
holds the runtime's read baton hands each frame to `Connection._dispatch`
(RPyC's raw-message entry point), which decodes it (`messages`) and:

- a **reply** or **exception**: unboxes it *in frame order* (`boxing`; never
  waiting for the peer) and delivers it to the slot of its ``seq``;
- a **request**: answers PING and DEL on the spot (they never block), and
  hands the rest to the runtime (`submit`), which runs `_serve_request`
  within its limits; that calls the handler (`_handlers`) under the
  attribute policy (`policy`) and sends the boxed answer.

An exception that came from the peer is data: it is raised only to the code
that made the request, and sent back as an answer when it escapes a handler;
``propagate_*_locally`` concern only exceptions raised by local code.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast

import gevent
import gevent.lock

from grpyc import consts, netref, vinegar
from grpyc._answering import RequestRunner, is_from_peer
from grpyc._handlers import RequestHandlers
from grpyc._keepalive import Watchdog
from grpyc._serving import Serving
from grpyc._threadbind import ThreadBinding
from grpyc._threadhub import ThreadHub
from grpyc.async_ import AsyncResult, AsyncResultTimeout
from grpyc.boxing import Boxer, ObjectTable, ProxyTable
from grpyc.config import DEFAULT_CONFIG, Limits
from grpyc.framing import Payload, Spliced
from grpyc.hub import ConnectionHub
from grpyc.lib import IdPack, in_gevent
from grpyc.messages import (
    PingError,
    ProtocolError,
    decode_payload,
    encode_del,
    encode_exception,
    encode_request,
)
from grpyc.policy import check_attr

__all__ = [
    "DEFAULT_CONFIG",
    "Connection",
    "PingError",
    "ProtocolError",
    "check_attr",
    "is_from_peer",
]

_connection_ids = itertools.count(1)
# With ``logger=None`` RPyC logs nothing; grpyc's own warnings go nowhere too.
_silent_logger = logging.getLogger("grpyc.protocol.silent")
_silent_logger.addHandler(logging.NullHandler())
_silent_logger.propagate = False

# Timed-out requests whose late replies are still unboxed (so the proxies in
# them are released to the peer); replies to any other unknown ``seq`` are
# dropped undecoded, so a peer cannot make us hold what nobody asked for.
_MAX_EXPIRED_SEQS = 1024
# What one queued DEL is counted as against max_send_buffer: the frame and
# the entry that waits for it.
_DEL_COST = 128
_NOT_EXPIRED = object()


def _require_grpyc_channel(channel: Any) -> None:
    """Refuse, in words, a channel of another library (stock rpyc's, typically).

    ``import grpyc as rpyc`` followed by ``from rpyc.utils.server import
    ThreadedServer`` gets stock's server when stock is installed too; it
    hands grpyc's service a stock channel, which would fail on the first
    frame with an obscure AttributeError.
    """
    if not hasattr(channel, "next_buffered"):
        kind = f"{type(channel).__module__}.{type(channel).__qualname__}"
        raise TypeError(
            f"a grpyc connection needs a grpyc channel, not {kind}: a grpyc service was "
            "given to another library's server or factory (stock rpyc's?); use grpyc's "
            "(rpyc.utils.server.ThreadedServer after import grpyc as rpyc), or call "
            "grpyc.install_as_rpyc() first so that the rpyc modules are grpyc's"
        )


class Connection(Serving, RequestRunner, RequestHandlers):
    """The RPyC connection (protocol) over one channel. RPyC-compatible.

    Objects exported to the peer are kept alive by reference count until the
    peer's proxies die; proxies of remote objects are cached weakly.

    Args:
        root: the local service object exposed to the peer.
        channel: the `Channel` carrying the frames.
        config: overrides of `DEFAULT_CONFIG`.

    Unlike RPyC, a connection made under gevent is served by its own reader
    greenlet from the moment it exists, and any number of greenlets may call
    through it at once; one made in plain threads is served by the threads
    that wait on it, as in RPyC (docs/semantics.md).
    """

    # Whether `_box` and `_unbox` are these very methods (no subclass
    # overrides RPyC's names): the request path then calls the boxer itself,
    # two calls fewer per request.
    _BOXES_ITSELF: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._BOXES_ITSELF = cls._box is Connection._box and cls._unbox is Connection._unbox

    def __init__(self, root: Any, channel: Any, config: dict[str, Any] | None = None) -> None:
        self._config: dict[str, Any] = {**DEFAULT_CONFIG, **(config or {})}
        if self._config["connid"] is None:
            self._config["connid"] = f"conn{next(_connection_ids)}"
        self._channel = channel
        try:
            _require_grpyc_channel(channel)
            self._apply_channel_config()
            limits = Limits.from_config(self._config)
        except BaseException:
            channel.close()  # the connection owns its channel, even when refused
            raise
        self._local_root = root
        self._remote_root: Any = None
        self._seq = itertools.count()
        self._local_objects = ObjectTable(int(self._config.get("max_exported_objects", 1 << 62)))
        proxies = ProxyTable(int(self._config["max_netref_classes"]))
        self._boxer = Boxer(self, self._local_objects, proxies)
        # Oldest first (a dict keeps insertion order). Of ints only, a dict is
        # not tracked by the collector: nothing for a full collection to walk.
        self._expired_seqs: dict[int, None] = {}
        self._max_depth = int(self._config["max_brine_depth"])
        self._max_decoded_size = int(self._config["max_decoded_size"])
        self._binding = ThreadBinding(channel) if self._config["bind_threads"] else None
        self._closing = False
        self._disconnected = False
        self._turn = gevent.lock.Semaphore(1) if self._config["serialize_requests"] else None
        self._turn_holder: Any = None
        self._last_traceback: Any = None
        self._logger: logging.Logger = self._config["logger"] or _silent_logger
        self._hub = self._make_runtime(limits)
        self._pause = self._hub.pause  # passed with every frame decoded: made once
        self._hub.start()
        Watchdog.start(self, self._hub, self._config, self._logger)

    def _make_runtime(self, limits: Limits) -> ConnectionHub | ThreadHub:
        cooperative = getattr(getattr(self._channel, "stream", None), "cooperative", None)
        if cooperative is None:
            cooperative = in_gevent()
        runtime_class = ConnectionHub if cooperative else ThreadHub
        return runtime_class(
            self._channel,
            self._on_frame,
            self._on_closed,
            name=self._config["connid"],
            logger=self._logger,
            limits=limits,
            take_deferred=self._take_del_frames,
            # A subclass's own `_dispatch` must see every frame: no lane then.
            read_reply=self._read_reply if type(self)._dispatch is Connection._dispatch else None,
        )

    def _apply_channel_config(self) -> None:
        for key, attr in (
            ("compression", "compress"),
            ("max_frame_size", "max_frame_size"),
            ("max_decompressed_size", "max_decompressed_size"),
        ):
            value = self._config[key]
            if value is not None:
                setattr(self._channel, attr, value)
        if hasattr(self._channel, "splice_values"):
            # `_dispatch` decodes with decode_payload, which takes Spliced payloads.
            self._channel.splice_values = True

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
        (PROTOCOL.md section 7), then shuts down at once. Called from a
        callback, the callback goes on running after it.
        """
        if self.closed:
            return
        self._closing = True
        # The greenlet closing is spared when the runtime kills the connection's
        # greenlets, even if it runs a callback of this connection.
        with self._hub.sparing(gevent.getcurrent()):
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

    def abort(self, reason: str = "connection aborted") -> None:
        """Close at once, without the CLOSE exchange: pending calls get `EOFError`.

        grpyc's own (servers use it for connections that must go now).
        """
        self._hub.shutdown(EOFError(reason))

    def when_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the connection has closed (at once if it has).

        grpyc's own: servers release a connection's slot with it. It runs
        after the service's ``on_disconnect``; its errors are logged.
        """
        self._hub.when_closed(callback)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request of the peer runs here; False if `timeout` passed first.

        grpyc's own (servers drain connections with it); a closed connection is idle.
        """
        return bool(self._hub.wait_idle(timeout))

    def update_config(self, changes: Mapping[str, Any]) -> None:
        """Change configuration keys of this connection (RPyC's ``_config``). grpyc's own.

        RPyC's keys take effect at their next use; the limits were checked
        when the connection was made and stay.
        """
        self._config.update(changes)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is closed; False if `timeout` passed first. grpyc's own."""
        return bool(self._hub.wait_closed(timeout))

    @property
    def cooperative(self) -> bool:
        """True if the connection runs on gevent (its own reader greenlet serves it);
        False if plain threads serve it as in RPyC. grpyc's own."""
        return isinstance(self._hub, ConnectionHub)

    def _shutdown_by_peer(self) -> None:
        self._hub.shutdown(EOFError("connection closed by peer"))

    def _on_closed(self, reason: BaseException) -> None:
        """Runs once when the runtime shuts down: release everything, tell the service."""
        self._closing = True
        self._boxer.clear()
        self._remote_root = None
        if not self._disconnected:
            self._disconnected = True
            on_disconnect = getattr(self._local_root, "on_disconnect", None)
            if on_disconnect is not None:
                on_disconnect(self)

    def fileno(self) -> int:
        """The underlying file descriptor. RPyC-compatible."""
        return int(self._channel.fileno())

    def ping(self, data: Any = None, timeout: float | None = 3) -> None:
        """Check the peer echoes `data` within `timeout`. RPyC-compatible.

        Raises:
            PingError: the echo differs from what was sent.
            EOFError: the connection closed (also while waiting).
            AsyncResultTimeout: no echo within `timeout`.
        """
        if data is None:
            data = "abcdefghijklmnopqrstuvwxyz" * 20
        # A call's path, not `async_request`'s: the same outcomes (the echo,
        # AsyncResultTimeout, EOFError) without an AsyncResult to make and wait on.
        echoed = self._request(consts.HANDLE_PING, (data,), timeout)
        if echoed != data:
            raise PingError("echo mismatches sent data")

    # --------------------------------------------------------------- requests
    def sync_request(self, handler: int, *args: Any) -> Any:
        """Send a request and wait for its result. RPyC-compatible.

        Raises:
            the remote exception, `EOFError` if the connection closes, or
            `AsyncResultTimeout` after ``sync_request_timeout`` seconds.
        """
        return self._request(handler, args, self._config["sync_request_timeout"])

    def _request(self, handler: int, args: tuple[Any, ...], timeout: float | None) -> Any:
        hub = self._hub
        if not hub.is_hub_thread():
            return hub.call_from_thread(self._request, (handler, args, timeout), timeout)
        if hub.closed:
            raise EOFError(f"connection {self._config['connid']} is closed")
        seq = next(self._seq)
        boxed = self._boxer.box(args) if self._BOXES_ITSELF else self._box(args)
        payload = encode_request(seq, handler, boxed)
        if self._binding is not None:
            payload = self._binding.request(payload)
        if self._turn is None:  # `_call` without a serialize_requests turn to yield
            outcome = hub.call(seq, payload, timeout)
        else:
            outcome = self._call(seq, payload, timeout)
        if outcome is None:
            self._note_expired(seq)
            raise AsyncResultTimeout("result expired")
        is_exc, obj, unresolved = outcome
        if unresolved:
            self._resolve_proxies(unresolved)
        if is_exc:
            raise obj
        return obj

    def _call(self, seq: int, payload: Payload, timeout: float | None) -> Any:
        """Send and wait; a handler holding the ``serialize_requests`` turn yields it meanwhile."""
        turn = self._turn
        if turn is None or self._turn_holder is not gevent.getcurrent():
            return self._hub.call(seq, payload, timeout)
        self._turn_holder = None
        turn.release()
        try:
            return self._hub.call(seq, payload, timeout)
        finally:
            turn.acquire()
            self._turn_holder = gevent.getcurrent()

    def _note_expired(self, seq: int) -> None:
        expired = self._expired_seqs
        expired[seq] = None
        if len(expired) > _MAX_EXPIRED_SEQS:
            del expired[next(iter(expired))]

    def async_request(self, handler: int, *args: Any, timeout: float | None = None) -> AsyncResult:
        """Send a request without waiting; returns its `AsyncResult`. RPyC-compatible."""
        hub = self._hub
        if not hub.is_hub_thread():
            handed = hub.call_from_thread(
                lambda: self.async_request(handler, *args, timeout=timeout), (), timeout
            )
            return cast(AsyncResult, handed)
        if hub.closed:
            raise EOFError(f"connection {self._config['connid']} is closed")
        result = AsyncResult(hub, self._resolve_proxies)
        if timeout is not None:
            result.set_expiry(timeout)
        seq = next(self._seq)
        payload = self._addressed(encode_request(seq, handler, self._box(args)))
        hub.expect_reply(seq, result)
        try:
            hub.send(payload)
        except BaseException:
            hub.take_reply(seq)
            raise
        return result

    @property
    def root(self) -> Any:
        """The peer's root object (its service). RPyC-compatible."""
        if self._remote_root is None:
            self._remote_root = self.sync_request(consts.HANDLE_GETROOT)
        return self._remote_root

    # --------------------------------------------------------------- dispatch
    def _on_frame(self, payload: bytes) -> None:
        # Looked up on every frame, so a wrapper set on the instance sees them all.
        dispatch = self._dispatch
        if getattr(dispatch, "__func__", None) is not _PLAIN_DISPATCH:
            if type(payload) is Spliced:
                payload = payload.whole()  # a wrapper or override sees the message as sent
            dispatch(payload)
            return
        # `_dispatch` and a request's `_route` inlined: once a frame
        msg, seq, body, size = decode_payload(
            payload, self._max_depth, self._max_decoded_size, self._pause
        )
        if msg == consts.MSG_REQUEST and self._binding is None:
            self._on_request(seq, body, size)
        else:
            self._route(msg, seq, body, size)

    def _dispatch(self, data: bytes) -> None:
        """Handle one raw message (a frame's payload). RPyC-compatible entry point.

        Runs in whatever reads the frame and never waits for the peer.
        """
        msg, seq, body, size = decode_payload(
            data, self._max_depth, self._max_decoded_size, self._pause
        )
        self._route(msg, seq, body, size)

    def _read_reply(self, data: bytes, seq: int) -> Any:
        """The outcome ``(is_exc, obj, unresolved)`` if `data` is the reply to `seq`;
        else None, the frame handled as any other.

        The runtime's lane for a lone caller (`hub.ConnectionHub.call`): its reply
        skips the pending slot. A `_dispatch` set on the instance sees every frame.
        """
        # Not ``self.__dict__``: once made, every attribute read of the
        # connection takes CPython's slower path (+1.9k instructions a call).
        if getattr(self._dispatch, "__func__", None) is not _PLAIN_DISPATCH:
            self._on_frame(data)
            return None
        msg, got, body, size = decode_payload(
            data, self._max_depth, self._max_decoded_size, self._pause
        )
        if msg != consts.MSG_REPLY or got != seq:
            self._route(msg, got, body, size)
            return None
        return self._reply_outcome(body)  # its caller takes `seq` off the pending table

    def _route(self, msg: int, seq: int, body: Any, size: int) -> None:
        if msg == consts.MSG_REQUEST:
            peer_thread = 0 if self._binding is None else self._binding.sender_of_last_frame()
            self._on_request(seq, body, size, peer_thread)
        elif msg == consts.MSG_REPLY:
            self._on_reply(seq, body)
        else:
            self._on_exception(seq, body)

    def _on_reply(self, seq: int, body: Any) -> None:
        slot = self._hub.take_reply(seq)
        if slot is None and self._expired_seqs.pop(seq, _NOT_EXPIRED) is _NOT_EXPIRED:
            # Nobody asked (a DEL's answer): leave the peer's references
            # unmade, and have it acknowledged before we wait.
            self._channel.owe_ack()
            return
        outcome = self._reply_outcome(body)
        if slot is not None:
            slot.deliver(*outcome)

    def _reply_outcome(self, body: Any) -> tuple[bool, Any, tuple[Any, ...]]:
        unresolved: list[Any] = []
        try:
            value = self._boxer.unbox(body, unresolved)
        except Exception as exc:  # noqa: BLE001 - a malformed reply fails its own caller
            return (True, ProtocolError(f"malformed reply: {exc!r}"), ())
        return (False, value, tuple(unresolved))

    def _on_exception(self, seq: int, body: Any) -> None:
        slot = self._hub.take_reply(seq)
        if slot is None:
            return
        try:
            exc = self._unbox_exc(body)
        except vinegar.VinegarError as error:
            exc = ProtocolError(f"malformed exception reply: {error}")
        slot.deliver(True, exc)

    def _answer_nowait(self, seq: int, exc: BaseException, peer_thread: int = 0) -> None:
        payload = encode_exception(seq, self._box_exc(type(exc), exc, None))
        self._hub.send_nowait(self._answer(payload, peer_thread))

    def _addressed(self, payload: Payload) -> Payload:
        """A request, with bind_threads ids when the connection speaks them."""
        return payload if self._binding is None else self._binding.request(payload)

    def _answer(self, payload: Payload, peer_thread: int) -> Payload:
        """An answer, with bind_threads ids when the connection speaks them."""
        return payload if self._binding is None else self._binding.answer(payload, peer_thread)

    # ----------------------------------------------------------------- boxing
    def _box(self, obj: Any) -> Any:
        """Box a local value for the wire (PROTOCOL.md section 4). RPyC-compatible name."""
        return self._boxer.box(obj)

    def _unbox(self, package: Any) -> Any:
        """Rebuild a boxed value; never waits for the peer. RPyC-compatible name."""
        return self._boxer.unbox(package)

    def _exported(self, id_pack: Any) -> Any:
        return self._local_objects.get(id_pack)

    def _find_exported(self, id_pack: Any) -> Any:
        return self._local_objects.find(id_pack)

    def _release_exported(self, id_pack: Any, count: Any) -> None:
        self._local_objects.decref(id_pack, count)

    # --------------------------------------------------- what proxies call on
    @property
    def local_method_lookup(self) -> bool:
        """Whether proxies answer ``proxy.method`` locally (grpyc's opt-in, `DEFAULT_CONFIG`)."""
        return bool(self._config["local_method_lookup"])

    def proxy_setting(self, key: str) -> Any:
        """A configuration value proxies consult (``allow_pickle``, ``prefetch_iteration``)."""
        return self._config[key]

    def release_proxy(self, id_pack: IdPack, count: int) -> None:
        """A proxy of the peer's object died: queue its DEL (never sends, blocks or switches)."""
        if self._hub.closed:
            return
        self._boxer.queue_release(id_pack, count)
        self._hub.note_deferred(_DEL_COST)
        self._hub.schedule_flush()

    def resolve_proxy_class(self, id_pack: IdPack) -> type:
        """The proxy class for `id_pack`, asking the peer (INSPECT) if it is not known."""
        inspect = functools.partial(self.sync_request, consts.HANDLE_INSPECT)
        return self._boxer.proxy_class(id_pack, inspect, self._config["exposed_prefix"])

    def _resolve_proxies(self, proxies: tuple[Any, ...]) -> None:
        """Give placeholder proxies their real class (asks INSPECT if needed)."""
        for proxy in proxies:
            netref.resolve(proxy)

    def _take_del_frames(self) -> list[bytes]:
        """DEL frames for the proxies that died, merged per object (called by the writer)."""
        merged = self._boxer.take_releases()
        frames = [encode_del(next(self._seq), id_pack, count) for id_pack, count in merged.items()]
        if self._binding is not None:
            frames = [self._binding.unbound(frame) for frame in frames]
        return frames


Connection._HANDLERS = Connection._request_handlers()


# `_read_reply` hands frames to a `_dispatch` set on an instance.
_PLAIN_DISPATCH = Connection._dispatch
