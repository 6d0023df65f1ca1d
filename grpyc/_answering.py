"""Running one request of the peer and sending its answer, a `Connection` mixin.

A request as it comes (`_on_request`) is answered at once if it is a DEL or
a small PING, else submitted to the runtime, which runs `_serve_request`
(in the reader itself or in a handler greenlet). There the request's
arguments are unboxed (never waiting for the peer), its handler
runs under the attribute policy (`_handlers`), and the result or the
exception is boxed and sent back. Every failure goes back to the peer as an
exception answer, except a local `SystemExit`/`KeyboardInterrupt` when
``propagate_*_locally`` says so; an exception that came from the peer is
data and always goes back (`is_from_peer`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import gevent
from gevent import GreenletExit

from grpyc import consts, vinegar
from grpyc.framing import Payload
from grpyc.messages import ProtocolError, encode_exception, encode_reply, split_request

if TYPE_CHECKING:
    from grpyc.boxing import Boxer

__all__ = ["RequestRunner", "is_from_peer"]

_NONE_BOX = (consts.LABEL_VALUE, None)
# PINGs up to this size are echoed by the reader itself; bigger ones go to a
# handler, so re-encoding a huge value never stalls the reader.
_INLINE_PING_LIMIT = 4096


def is_from_peer(exc: BaseException) -> bool:
    """Whether `exc` was rebuilt from a peer's exception message (it has the remote traceback)."""
    return getattr(exc, "_remote_tb", None) is not None


class RequestRunner:
    """Runs requests for the connection: its tables, runtime and config are on ``self``."""

    _HANDLERS: ClassVar[dict[int, Any]]
    _BOXES_ITSELF: ClassVar[bool]
    _boxer: Boxer
    _config: dict[str, Any]
    _logger: logging.Logger
    _hub: Any
    _binding: Any
    _turn: Any
    _turn_holder: Any
    _last_traceback: Any
    _local_objects: Any

    def _unbox(self, package: Any) -> Any:
        raise NotImplementedError

    def _box(self, obj: Any) -> Any:
        raise NotImplementedError

    def _answer(self, payload: Payload, peer_thread: int) -> Payload:
        raise NotImplementedError

    def _answer_nowait(self, seq: int, exc: BaseException, peer_thread: int = 0) -> None:
        raise NotImplementedError

    def _on_request(self, seq: int, body: Any, size: int, peer_thread: int = 0) -> None:
        """A request came: a DEL or a small PING is answered here, at once;
        anything else goes to the runtime (`submit`) to run `_serve_request`."""
        try:
            handler, boxed_args = split_request(body)
        except ProtocolError as exc:
            self._answer_nowait(seq, exc, peer_thread)
            return
        if handler == consts.HANDLE_DEL and self._try_del_inline(seq, boxed_args, peer_thread):
            return
        if handler == consts.HANDLE_PING and self._try_ping_inline(
            seq, boxed_args, size, peer_thread
        ):
            return
        submitted = self._hub.submit(
            self._serve_request, seq, handler, boxed_args, peer_thread, cost=size
        )
        if not submitted:
            self._answer_nowait(seq, RuntimeError(self._hub.overload_message()), peer_thread)

    def _serve_request(self, seq: int, handler: int, boxed_args: Any, peer_thread: int = 0) -> None:
        """Run one request and send its answer."""
        if self._turn is not None:
            self._turn.acquire()
            self._turn_holder = gevent.getcurrent()
        args: Any = ()
        try:
            try:
                boxes_itself = self._BOXES_ITSELF
                args = self._boxer.unbox(boxed_args) if boxes_itself else self._unbox(boxed_args)
                if self._binding is None:
                    # `_call_handler` inlined (it runs once per request); it
                    # still explains what is wrong with a bad request.
                    func = self._HANDLERS.get(handler)
                    if func is None or type(args) is not tuple:
                        self._call_handler(handler, args)
                    result = func(self, *args)  # type: ignore[misc]
                else:
                    result = self._handle(handler, args, peer_thread)
                boxed = self._boxer.box(result) if boxes_itself else self._box(result)
                payload = encode_reply(seq, boxed)
            except GreenletExit as exc:
                if not is_from_peer(exc):
                    raise  # this greenlet is being killed
                payload = self._exception_answer(seq, exc)
            except BaseException as exc:  # noqa: BLE001 - every failure goes to the peer
                self._raise_if_local(exc)
                payload = self._exception_answer(seq, exc)
        finally:
            if self._turn is not None:
                self._turn_holder = None
                self._turn.release()
        # `args` stays alive until the answer is queued: a proxy dying earlier
        # would send its DEL ahead of an answer that refers to it.
        # A plain try: contextlib.suppress costs three calls per request.
        if self._binding is not None:  # `_answer` inlined: once per request
            payload = self._binding.answer(payload, peer_thread)
        try:  # noqa: SIM105
            self._hub.send(payload)
        except EOFError:
            pass  # the connection closed meanwhile: nobody to answer
        del args

    def _handle(self, handler: int, args: Any, peer_thread: int) -> Any:
        # With bind_threads: calls made while serving a stock thread go to that thread.
        with self._binding.serving(peer_thread):
            return self._call_handler(handler, args)

    def _exception_answer(self, seq: int, exc: BaseException) -> bytes:
        return encode_exception(seq, self._box_exc(type(exc), exc, exc.__traceback__))

    def _call_handler(self, handler: int, args: Any) -> Any:
        func = self._HANDLERS.get(handler)
        if func is None:
            raise ProtocolError(f"unknown request handler {handler}")
        if type(args) is not tuple:
            raise ProtocolError("request arguments are not a tuple")
        return func(self, *args)

    def _raise_if_local(self, exc: BaseException) -> None:
        """Re-raise a local SystemExit/KeyboardInterrupt here when the config says so.

        An exception that came from the peer is data: it goes back as an answer.
        """
        self._last_traceback = exc.__traceback__
        if not is_from_peer(exc):
            if isinstance(exc, SystemExit) and self._config["propagate_SystemExit_locally"]:
                raise exc
            if (
                isinstance(exc, KeyboardInterrupt)
                and self._config["propagate_KeyboardInterrupt_locally"]
            ):
                raise exc
        if self._config["log_exceptions"] and not isinstance(exc, StopIteration):
            self._logger.debug(
                "%s: exception in request handler", self._config["connid"], exc_info=exc
            )

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

    def _try_del_inline(self, seq: int, boxed_args: Any, peer_thread: int) -> bool:
        """Answer a well-formed DEL at once; False leaves it to a handler."""
        try:
            label, ((obj_label, id_pack), (count_label, count)) = boxed_args
        except (TypeError, ValueError):
            return False
        if (
            label != consts.LABEL_TUPLE
            or obj_label != consts.LABEL_LOCAL_REF
            or count_label != consts.LABEL_VALUE
        ):
            return False
        try:
            self._local_objects.decref(id_pack, count)
        except (KeyError, TypeError, ValueError) as exc:
            self._answer_nowait(seq, exc, peer_thread)
            return True
        # Nobody waits for it: it goes with our next frame (`send_later`).
        self._hub.send_later(self._answer(encode_reply(seq, _NONE_BOX), peer_thread))
        return True

    def _try_ping_inline(self, seq: int, boxed_args: Any, size: int, peer_thread: int) -> bool:
        """Echo a small, well-formed PING at once; False leaves it to a handler.

        Big pings go to a handler: re-encoding a huge value must not stall
        the reader (and every other caller) meanwhile.
        """
        try:
            label, args = boxed_args
            if label == consts.LABEL_VALUE:
                # How RPyC (and grpyc) box ``(data,)``: one value, the whole tuple.
                (data,) = args
            else:
                ((data_label, data),) = args
                if label != consts.LABEL_TUPLE or data_label != consts.LABEL_VALUE:
                    return False
        except (TypeError, ValueError):
            return False
        if size > _INLINE_PING_LIMIT:
            return False
        self._hub.send_nowait(
            self._answer(encode_reply(seq, (consts.LABEL_VALUE, data)), peer_thread)
        )
        return True
