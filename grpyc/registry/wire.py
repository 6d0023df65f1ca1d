"""The registry's wire format (PROTOCOL.md section 8): checks and encodings, no I/O.

A request is the brine of ``("RPYC", command, args)``; a reply is the brine
of the command's result. This module turns peer bytes into checked values
and values into bytes that fit a size budget; it holds no state and touches
no socket, so every rule here is tested by feeding bytes.

Invariant: a request that passes ``parse_request`` has exactly the shape its
command needs (names are ``str``, ports are ``int`` in 1..65535), so the
registry table never checks a type again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from grpyc import brine

__all__ = [
    "MAGIC",
    "MAX_DGRAM_SIZE",
    "InvalidRequestError",
    "check_aliases",
    "check_port",
    "datagram_reply_budget",
    "encode_request",
    "fit_reply",
    "is_complete",
    "parse_reply",
    "parse_request",
]

MAGIC: Final = "RPYC"
# RPyC's clients and UDP server read at most this many bytes of a datagram,
# so a larger request or reply would reach a stock peer truncated.
MAX_DGRAM_SIZE: Final = 1500
# The deepest request is REGISTER: (magic, command, (aliases, port)) with
# aliases a tuple, three levels; a QUERY reply is a tuple of pairs, two.
_REQUEST_DEPTH: Final = 3
_REPLY_DEPTH: Final = 2

Address = tuple[str, int]


class InvalidRequestError(ValueError):
    """Bytes that are not a well-formed registry request."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _is_port(value: Any) -> bool:
    return type(value) is int and 0 < value < 65536


def _query_args_ok(args: tuple[Any, ...]) -> bool:
    return len(args) == 1 and isinstance(args[0], str)


def _list_args_ok(args: tuple[Any, ...]) -> bool:
    if len(args) != 1 or not isinstance(args[0], tuple) or len(args[0]) != 1:
        return False
    return args[0][0] is None or isinstance(args[0][0], str)


def _register_args_ok(args: tuple[Any, ...]) -> bool:
    if len(args) != 2 or not isinstance(args[0], tuple):
        return False
    return all(isinstance(name, str) for name in args[0]) and _is_port(args[1])


def _unregister_args_ok(args: tuple[Any, ...]) -> bool:
    return len(args) == 1 and _is_port(args[0])


_ARGS_OK: Final[dict[str, Callable[[tuple[Any, ...]], bool]]] = {
    "QUERY": _query_args_ok,
    "LIST": _list_args_ok,
    "REGISTER": _register_args_ok,
    "UNREGISTER": _unregister_args_ok,
}


def parse_request(data: bytes, max_request_size: int) -> tuple[str, tuple[Any, ...]]:
    """``(COMMAND, args)`` of a request, checked against PROTOCOL.md section 8.

    The size is checked before anything is decoded.

    Raises:
        InvalidRequestError: the bytes are oversized, undecodable or of the wrong shape.
    """
    if len(data) > max_request_size:
        raise InvalidRequestError(
            f"request of {len(data)} bytes exceeds max_request_size={max_request_size}"
        )
    try:
        request = brine.load(data, _REQUEST_DEPTH)
    except ValueError as exc:
        raise InvalidRequestError(f"undecodable request of {len(data)} bytes: {exc}") from exc
    if not isinstance(request, tuple) or len(request) != 3:
        raise InvalidRequestError(
            f"request is not a (magic, command, args) triple: {_short(request)}"
        )
    magic, cmd, args = request
    if magic != MAGIC:
        raise InvalidRequestError(f"invalid magic {_short(magic)}")
    # RPyC looks commands up case-insensitively.
    command = cmd.upper() if isinstance(cmd, str) else None
    if command not in _ARGS_OK:
        raise InvalidRequestError(f"unknown command {_short(cmd)}")
    if not isinstance(args, tuple) or not _ARGS_OK[command](args):
        raise InvalidRequestError(f"invalid arguments for {command}: {_short(args)}")
    return command, args


def encode_request(cmd: str, args: tuple[Any, ...]) -> bytes:
    """The bytes of one request."""
    return brine.dump((MAGIC, cmd, args))


def _is_server_tuple(reply: Any) -> bool:
    return isinstance(reply, tuple) and all(
        isinstance(entry, tuple)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and type(entry[1]) is int
        for entry in reply
    )


def _is_name_tuple_or_none(reply: Any) -> bool:
    return reply is None or (
        isinstance(reply, tuple) and all(isinstance(name, str) for name in reply)
    )


_REPLY_OK: Final[dict[str, Callable[[Any], bool]]] = {
    "QUERY": _is_server_tuple,
    "LIST": _is_name_tuple_or_none,
    "REGISTER": lambda reply: reply == "OK",
    "UNREGISTER": lambda reply: reply == "OK",
}


def parse_reply(cmd: str, data: bytes) -> tuple[bool, Any]:
    """``(True, reply)`` when ``data`` is a well-formed reply to ``cmd``, else ``(False, None)``."""
    try:
        reply = brine.load(data, _REPLY_DEPTH)
    except ValueError:
        return False, None
    if not _REPLY_OK[cmd](reply):
        return False, None
    return True, reply


def is_complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole brine value (TCP gives no framing)."""
    try:
        brine.load(data, _REQUEST_DEPTH)
    except ValueError:
        return False
    return True


def datagram_reply_budget(request_size: int, max_amplification: int) -> int:
    """The most bytes a UDP reply to a ``request_size``-byte request may take.

    A datagram's source can be forged, so a reply larger than its request
    would let anyone aim our bandwidth at a third party: the reply is held
    to ``max_amplification`` times the request, and never above the
    datagram size RPyC's clients read.
    """
    return min(MAX_DGRAM_SIZE, max_amplification * request_size)


def _tuple_header_size(count: int) -> int:
    """Bytes of a brine tuple's tag and count (PROTOCOL.md section 3)."""
    if count <= 4:
        return 1
    return 2 if count < 256 else 5


def fit_reply(result: Any, max_size: int) -> tuple[bytes, int]:
    """``(encoding, entries left out)``: ``result`` in at most ``max_size`` bytes.

    A tuple (the servers of QUERY, the names of LIST) keeps the longest
    prefix of its entries that fits; any other result is encoded whole.
    A brine tuple is its header followed by its items' encodings, so the
    entries are sized one by one.
    """
    encoded = brine.dump(result)
    if len(encoded) <= max_size or not isinstance(result, tuple):
        return encoded, 0
    used, count = 0, 0
    for item in result:
        size = len(brine.dump(item))
        if _tuple_header_size(count + 1) + used + size > max_size:
            break
        used += size
        count += 1
    encoded = brine.dump(result[:count])
    assert len(encoded) <= max_size, (len(encoded), max_size)
    return encoded, len(result) - count


def check_aliases(aliases: Iterable[str]) -> tuple[str, ...]:
    """The aliases a caller passed, as a tuple of ``str``.

    Raises:
        TypeError: ``aliases`` is a single string, or holds a non-``str``.
    """
    if isinstance(aliases, str):
        raise TypeError(f"aliases must be an iterable of names, not the string {aliases!r}")
    names = tuple(aliases)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"service alias must be str, got {name!r}")
    return names


def check_port(port: int) -> int:
    """``port`` when it is a TCP port number.

    Raises:
        ValueError: it is not an ``int`` in 1..65535.
    """
    if not _is_port(port):
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")
    return port
