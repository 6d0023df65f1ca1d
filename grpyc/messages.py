"""Messages of the RPyC 6 protocol: frame payloads in and out (PROTOCOL.md sections 2, 4, 5).

Pure code: a payload is one message-type byte and the brine of ``(seq, body)``.
Decoding checks the shape the protocol promises (a ``(seq, body)`` pair, a
``(handler, args)`` request body) before anything else looks at it; what a
message *means* is `protocol`'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpyc import brine, consts
from grpyc._brine_encode import dump_pieces
from grpyc._brine_small import SMALL_INPUT, decode_small
from grpyc._introspect import IdPack
from grpyc.framing import Payload, Pieces, Spliced

__all__ = [
    "PingError",
    "ProtocolError",
    "decode_measured",
    "decode_message",
    "decode_payload",
    "encode_del",
    "encode_exception",
    "encode_reply",
    "encode_request",
    "split_request",
]

_MSG_REQUEST = consts.MSG_REQUEST
_MSG_REPLY = consts.MSG_REPLY
_MSG_EXCEPTION = consts.MSG_EXCEPTION
_REQUEST_PREFIX = bytes([consts.MSG_REQUEST])
_REPLY_PREFIX = bytes([consts.MSG_REPLY])
_EXCEPTION_PREFIX = bytes([consts.MSG_EXCEPTION])


class ProtocolError(ValueError):
    """The peer sent a message that breaks the protocol."""


class PingError(Exception):
    """The exception raised should `Connection.ping` fail. RPyC-compatible."""


# A message with a big bytes or str value is `Pieces`, so the value is not
# copied on the way to the socket (see `brine.dump_pieces`). Both encoders
# call `dump_pieces` themselves: a shared helper cost a call layer per message.


def encode_request(seq: int, handler: int, boxed_args: Any) -> Payload:
    data = dump_pieces((seq, (handler, boxed_args)), _REQUEST_PREFIX)
    return Pieces(data) if isinstance(data, list) else data


def encode_reply(seq: int, boxed: Any) -> Payload:
    data = dump_pieces((seq, boxed), _REPLY_PREFIX)
    return Pieces(data) if isinstance(data, list) else data


def encode_exception(seq: int, dumped_exc: Any) -> bytes:
    return brine.dump((seq, dumped_exc), _EXCEPTION_PREFIX)


def encode_del(seq: int, id_pack: IdPack, count: int) -> bytes:
    """A DEL request: the peer's object `id_pack` lost `count` references here."""
    boxed_args = (
        consts.LABEL_TUPLE,
        ((consts.LABEL_LOCAL_REF, id_pack), (consts.LABEL_VALUE, count)),
    )
    return brine.dump((seq, (consts.HANDLE_DEL, boxed_args)), _REQUEST_PREFIX)


def decode_message(payload: bytes, max_depth: int) -> tuple[int, int, Any]:
    """Split a frame payload into ``(msg_type, seq, body)``.

    Raises:
        ProtocolError: not a well-formed RPyC 6 message.
    """
    msg, seq, body, _size = decode_measured(payload, max_depth)
    return msg, seq, body


def decode_measured(
    payload: bytes,
    max_depth: int,
    *,
    max_decoded_size: int | None = None,
    progress: Callable[[], object] | None = None,
) -> tuple[int, int, Any, int]:
    """`decode_message`, and what the decoded message costs in memory (an estimate in bytes).

    Args:
        max_decoded_size: refuse a message whose objects would pass this many
            bytes (checked while decoding, before big objects exist).
        progress: called every few hundred KiB decoded; the runtime yields
            to other connections there (see `brine.load_measured`).

    Raises:
        ProtocolError: not a well-formed RPyC 6 message, or over `max_decoded_size`.
    """
    return decode_payload(payload, max_depth, max_decoded_size, progress)


def decode_payload(
    payload: bytes,
    max_depth: int,
    max_decoded_size: int | None,
    progress: Callable[[], object] | None,
) -> tuple[int, int, Any, int]:
    """`decode_measured` with every argument positional: what a reader calls per frame.

    A small message (almost every one) is decoded here in one pass, as
    `brine.load_measured` would decode it, without its keyword arguments
    and its layer of calls (~2,000 instructions a frame).
    """
    if type(payload) is bytes and 0 < len(payload) <= SMALL_INPUT:
        msg = payload[0]
        small = decode_small(payload, 1, max_depth)
        if (
            small is not None
            and (max_decoded_size is None or small[1] <= max_decoded_size)
            and msg in (_MSG_REPLY, _MSG_REQUEST, _MSG_EXCEPTION)
        ):
            decoded = small[0]
            if type(decoded) is tuple and len(decoded) == 2 and type(decoded[0]) is int:
                return msg, decoded[0], decoded[1], small[1]
    if not payload:
        raise ProtocolError("empty message")
    msg = payload[0]
    if msg not in (consts.MSG_REQUEST, consts.MSG_REPLY, consts.MSG_EXCEPTION):
        raise ProtocolError(f"unknown message type {msg}")
    # A big value read into its own buffer is decoded as that very buffer.
    splice = (payload.at, payload.value) if type(payload) is Spliced else None
    try:
        decoded, size = brine.load_measured(
            payload,
            max_depth,
            start=1,
            max_decoded_size=max_decoded_size,
            progress=progress,
            splice=splice,
        )
    except brine.BrineError as exc:
        raise ProtocolError(f"undecodable message: {exc}") from exc
    if type(decoded) is not tuple or len(decoded) != 2 or type(decoded[0]) is not int:
        raise ProtocolError("message is not a (seq, body) pair")
    return msg, decoded[0], decoded[1], size


def split_request(body: Any) -> tuple[int, Any]:
    """``(handler, boxed_args)`` of a request body.

    Raises:
        ProtocolError: the body is not a ``(handler, args)`` pair with an int handler.
    """
    if type(body) is not tuple or len(body) != 2 or type(body[0]) is not int:
        raise ProtocolError("request is not a (handler, args) pair")
    return body[0], body[1]
