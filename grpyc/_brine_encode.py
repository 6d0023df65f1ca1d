"""Brine encoding: values to bytes (PROTOCOL.md section 3). Private to `grpyc.brine`.

Holds the tag table both directions share, `dump` and `dumpable`; decoding
is in `grpyc.brine`, which re-exports these. Pure code, no I/O.

Invariants: `dump` output is byte-identical to stock rpyc 6's
`rpyc.core.brine.dump`, and only exactly the types of PROTOCOL.md section 3
are dumpable: a subclass of int, str, tuple, ... is not (it travels by
reference).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from struct import Struct
from types import EllipsisType, NoneType, NotImplementedType
from typing import Any, Final

__all__ = [
    "C16",
    "DEFAULT_MAX_DEPTH",
    "F8",
    "I1",
    "I4",
    "SCALAR_TYPES",
    "SEPARATE_SIZE",
    "TAG_BYTES_L4",
    "TAG_EMPTY_TUPLE",
    "TAG_FROZENSET",
    "TAG_IMM_FIRST",
    "TAG_IMM_MIN",
    "TAG_IMM_STOP",
    "TAG_SLICE",
    "TAG_TUPLE_1",
    "TAG_TUPLE_4",
    "TAG_TUPLE_L1",
    "TAG_TUPLE_L4",
    "dump",
    "dump_pieces",
    "dumpable",
]

# How deeply containers may nest. 1000 is CPython's default recursion limit:
# about as deep as ordinary recursive code (repr, ==, a walk over boxes) can
# follow a value, so deeper nesting is of no use to a receiver and only costs
# it. No honest peer sends more: stock rpyc's own recursive codec gives out
# near 500 levels.
DEFAULT_MAX_DEPTH: Final = 1000

I1: Final = Struct("!B")
I4: Final = Struct("!L")
F8: Final = Struct("!d")
C16: Final = Struct("!dd")

_TAG_FLOAT = Struct("!Bd")
_TAG_COMPLEX = Struct("!Bdd")

# Tags (PROTOCOL.md section 3). The hot paths of dump and load write them as
# literals, with a comment: a module global costs a lookup per use.
_EMPTY_BYTES = 0x01
TAG_EMPTY_TUPLE = 0x02
_STR = 0x08
_BYTES_1 = 0x0A  # 0x0a..0x0d: bytes of length 1..4
_BYTES_L1 = 0x0E
TAG_BYTES_L4 = 0x0F
TAG_TUPLE_1 = 0x10  # 0x10..0x13: tuple of 1..4 items
TAG_TUPLE_4 = 0x13
TAG_TUPLE_L1 = 0x14
TAG_TUPLE_L4 = 0x15
_INT_L1 = 0x16
_INT_L4 = 0x17
_FLOAT = 0x18
TAG_SLICE = 0x19
TAG_FROZENSET = 0x1A
_COMPLEX = 0x1B
TAG_IMM_FIRST = 0x20  # 0x20..0xef: the int tag - 0x50
_IMM_END = 0xF0
_IMM_BIAS = 0x50
TAG_IMM_MIN = TAG_IMM_FIRST - _IMM_BIAS
TAG_IMM_STOP = _IMM_END - _IMM_BIAS

# The types brine takes whole, without looking inside (exact types).
SCALAR_TYPES: Final = frozenset(
    {NoneType, bool, int, float, complex, bytes, str, NotImplementedType, EllipsisType}
)


# Encoded headers for every length below 256, so the hot path is one index.
_IMM_INTS: Final = tuple(bytes([v + _IMM_BIAS]) for v in range(TAG_IMM_MIN, TAG_IMM_STOP))
_BYTES_HEADS: Final = (
    bytes([_EMPTY_BYTES]),
    *(bytes([_BYTES_1 + n - 1]) if n <= 4 else bytes([_BYTES_L1, n]) for n in range(1, 256)),
)
_STR_HEADS: Final = tuple(bytes([_STR]) + head for head in _BYTES_HEADS)
_TUPLE_HEADS: Final = (
    bytes([TAG_EMPTY_TUPLE]),
    *(bytes([TAG_TUPLE_1 + n - 1]) if n <= 4 else bytes([TAG_TUPLE_L1, n]) for n in range(1, 256)),
)
_INT_HEADS: Final = tuple(bytes([_INT_L1, n]) for n in range(256))


def _bytes_head(size: int) -> bytes:
    return _BYTES_HEADS[size] if size < 256 else bytes([TAG_BYTES_L4]) + I4.pack(size)


def _tuple_head(count: int) -> bytes:
    return _TUPLE_HEADS[count] if count < 256 else bytes([TAG_TUPLE_L4]) + I4.pack(count)


def _encode_int(value: int) -> bytes:
    if TAG_IMM_MIN <= value < TAG_IMM_STOP:
        return _IMM_INTS[value - TAG_IMM_MIN]
    # Raises ValueError past sys.get_int_max_str_digits(), as stock rpyc does.
    digits = b"%d" % value
    size = len(digits)
    if size < 256:
        return _INT_HEADS[size] + digits
    return bytes([_INT_L4]) + I4.pack(size) + digits


def _encode_bytes(value: bytes) -> bytes:
    return _bytes_head(len(value)) + value


def _str_head(size: int) -> bytes:
    return _STR_HEADS[size] if size < 256 else bytes([_STR, TAG_BYTES_L4]) + I4.pack(size)


def _encode_str(value: str) -> bytes:
    # A lone surrogate raises UnicodeEncodeError, as in stock rpyc.
    data = value.encode()
    return _str_head(len(data)) + data


# Scalar types: each encodes alone into one bytes object.
_ENCODERS: Final[dict[type, Callable[[Any], bytes]]] = {
    int: _encode_int,
    str: _encode_str,
    NoneType: lambda _: b"\x00",
    bool: lambda value: b"\x03" if value else b"\x04",
    bytes: _encode_bytes,
    float: lambda value: _TAG_FLOAT.pack(_FLOAT, value),
    complex: lambda value: _TAG_COMPLEX.pack(_COMPLEX, value.real, value.imag),
    NotImplementedType: lambda _: b"\x05",
    EllipsisType: lambda _: b"\x06",
}


def _members(container: Any) -> tuple[Any, ...] | None:
    """The items a tuple, frozenset or slice is encoded from; None for other types."""
    kind = type(container)
    if kind is tuple:
        members: tuple[Any, ...] = container  # no cast(): it is a call on a hot path
        return members
    if kind is frozenset:
        return tuple(container)
    if kind is slice:
        return (container.start, container.stop, container.step)
    return None


def _undumpable(value: Any) -> TypeError:
    kind = type(value)
    return TypeError(
        f"cannot dump {kind.__module__}.{kind.__qualname__}: brine takes only None, bool, "
        "int, float, complex, bytes, str, NotImplemented, Ellipsis, and tuple, frozenset "
        "and slice of these (exact types, not subclasses)"
    )


def _too_deep_to_dump() -> ValueError:
    return ValueError(f"cannot dump: containers nested deeper than {DEFAULT_MAX_DEPTH=}")


def _open_container(container: Any, append: Callable[[bytes], None]) -> Iterator[Any]:
    """Write a tuple's, frozenset's or slice's header; return an iterator over its items.

    Raises TypeError for any other type.
    """
    members = _members(container)
    if members is None:
        raise _undumpable(container)
    kind = type(container)
    if kind is frozenset:
        append(b"\x1a")
    elif kind is slice:
        append(b"\x19")
    append(_tuple_head(len(members)))
    return iter(members)


# Parts joined into the result buffer at a time: many small values must not
# cost a list slot and a bytes object each until the very end.
_JOIN_EVERY = 4096


def _dump_container(container: Any, prefix: bytes = b"", whole: bool = True) -> bytes | list[bytes]:
    """Encode a tuple, frozenset or slice on an explicit stack (`dump_pieces` unless `whole`)."""
    out: list[bytes] = [prefix] if prefix else []
    append = out.append
    done = bytearray()
    # With `whole` off: what is encoded before the last big value, in pieces.
    pieces: list[bytes] = []
    separate = -1 if whole else SEPARATE_SIZE
    if type(container) is tuple:
        count = len(container)
        append(_TUPLE_HEADS[count] if count < 256 else _tuple_head(count))
        items: Iterator[Any] = iter(container)
    else:
        items = _open_container(container, append)
    # One iterator per enclosing container: the open one is `items`.
    parents: list[Iterator[Any]] = []
    max_parents = DEFAULT_MAX_DEPTH - 1  # the open container is one level too
    # The common types are tested inline, in order of frequency in RPC
    # messages: this loop is the hottest path of a send.
    while True:
        for item in items:
            kind = type(item)
            if len(out) > _JOIN_EVERY:
                # b"".join costs ~80 bytes per part: join as we go.
                done += b"".join(out)
                out.clear()
            if kind is int:
                if -48 <= item < 160:  # one byte: the tag is item + 0x50
                    append(_IMM_INTS[item + 48])
                else:
                    append(_encode_int(item))
            elif kind is tuple:
                count = len(item)
                append(_TUPLE_HEADS[count] if count < 256 else _tuple_head(count))
                if count:
                    if len(parents) >= max_parents:
                        raise _too_deep_to_dump()
                    parents.append(items)
                    items = iter(item)
                    break
            elif kind is str:
                # Header and payload go separately: the join copies a long str once.
                raw = item.encode()
                size = len(raw)
                append(_STR_HEADS[size] if size < 256 else _str_head(size))
                if 0 <= separate <= size:
                    _cut_before(pieces, out, done, raw)
                else:
                    append(raw)
            elif item is None:
                append(b"\x00")
            elif kind is bytes:
                size = len(item)
                append(_bytes_head(size))
                if 0 <= separate <= size:
                    _cut_before(pieces, out, done, item)
                else:
                    append(item)
            else:
                encode = _ENCODERS.get(kind)
                if encode is not None:
                    append(encode(item))
                    continue
                child = _open_container(item, append)
                if len(parents) >= max_parents:
                    raise _too_deep_to_dump()
                parents.append(items)
                items = child
                break
        else:
            if not parents:
                return _finish(pieces, out, done) if pieces or done else b"".join(out)
            items = parents.pop()


def _cut_before(pieces: list[bytes], out: list[bytes], done: bytearray, value: bytes) -> None:
    """Move what `out` and `done` hold to `pieces` as one piece, then `value` as another."""
    if done:
        done += b"".join(out)
        pieces.append(bytes(done))
        done.clear()
    elif out:
        pieces.append(b"".join(out))
    out.clear()
    pieces.append(value)


def _finish(pieces: list[bytes], out: list[bytes], done: bytearray) -> bytes | list[bytes]:
    """The encoding from the parts a long or piecewise dump left."""
    done += b"".join(out)
    if not pieces:
        return bytes(done)
    if done:
        pieces.append(bytes(done))
    return pieces


# `dump_pieces` leaves bytes and str values at least this big out of the
# joined buffer: a vectored write sends them as they are. Copying 1 MiB costs
# little; the fresh memory for the copy costs page faults, and freeing it
# makes malloc give it back to the kernel (measured: ~1,000 minor faults per
# 1 MiB echo, 2.9 -> 1.1 ms per echo without them).
SEPARATE_SIZE: Final = 64 * 1024


# ---------------------------------------------------------------------------
# small tuples: one typed pass (compiled with _brine_encode.pxd)
# ---------------------------------------------------------------------------
# A message is a tuple of a few small ints, strs and tuples. Compiled, one
# recursive pass into a bytearray costs half of `_dump_container`'s loop (a
# call request: 0.6 us, 1.4 through the loop); run as Python it costs more,
# so the pure-Python build skips it. It takes only what it encodes exactly as
# the loop does (str and bytes under _SMALL_BYTES bytes, ints of under 256
# digits, tuples of under 256 items nested under _SMALL_DEPTH deep, None,
# bools) and leaves anything else, and every error, to the loop.
_SMALL_PASS: Final = not __file__.endswith(".py")
_SMALL_DEPTH: Final = 32
# A str or bytes of a few KiB (a ping, a traceback, a page of text) costs
# the loop ~25 us more a message on a shared CPU than this pass (bench.cpu
# --op medium); from SEPARATE_SIZE on, `dump_pieces` keeps it out of the buffer.
_SMALL_BYTES: Final = SEPARATE_SIZE


def _dump_small(container: tuple[Any, ...], prefix: bytes) -> bytes | None:
    # Written by index into a scratch buffer with room, then copied out:
    # `bytearray.append` resizes its buffer for every byte and grows it an
    # eighth at a time (compiled, ~50 instructions a byte: 14k of the client's
    # 232k per `root.echo`). The pass runs no Python code and allocates nothing
    # the GC tracks, so nothing re-enters it meanwhile; the flag keeps it so.
    global _scratch, _scratch_busy
    if _scratch_busy:
        return _dump_small_into(bytearray(_SMALL_ROOM), container, prefix)
    _scratch_busy = True
    try:
        return _dump_small_into(_scratch, container, prefix)
    finally:
        _scratch_busy = False
        if len(_scratch) > _SMALL_ROOM_KEPT:  # grown for a big message: not kept
            _scratch = bytearray(_SMALL_ROOM)


def _dump_small_into(out: bytearray, container: tuple[Any, ...], prefix: bytes) -> bytes | None:
    end = _put_raw(out, 0, prefix)
    end = _put_small(out, end, container, 0)
    if end < 0:
        return None
    if end > _SMALL_ROOM:  # one copy out, not two (a slice, then its bytes): 60 KB cost 20 us
        with memoryview(out) as written:
            return bytes(written[:end])
    return bytes(out[:end])


_SMALL_ROOM: Final = 4096  # the scratch buffer's size (a message fits); it grows as needed
_SMALL_ROOM_KEPT: Final = 64 * 1024
_BYTE_LOOP: Final = 64  # up to this many bytes, `_put_raw` copies byte by byte
_scratch = bytearray(_SMALL_ROOM)
_scratch_busy = False
_C_DECIMAL_LIMIT: Final = 10**18  # what `_put_decimal` writes with C ints


def _make_room(out: bytearray, needed: int) -> None:
    """Grow `out` (in place) to at least `needed` bytes."""
    out += bytes(max(needed, 2 * len(out)) - len(out))


def _put_decimal(out: bytearray, end: int, value: int) -> int:
    """Write `value` (0 <= value < 10**18) as brine does: ``_INT_L1``, size, decimal digits."""
    size = 1
    scale = 10
    while value >= scale:
        size += 1
        scale *= 10
    if end + 2 + size > len(out):
        _make_room(out, end + 2 + size)
    out[end] = 0x16  # _INT_L1
    out[end + 1] = size
    last = end + 1 + size
    while last > end + 1:  # the digits, last first: a division by a constant each
        out[last] = 0x30 + value % 10  # "0" + the digit
        value //= 10
        last -= 1
    return end + 2 + size


def _put_byte(out: bytearray, end: int, byte: int) -> int:
    if end >= len(out):
        _make_room(out, end + 1)
    out[end] = byte
    return end + 1


def _put_small(out: bytearray, end: int, value: Any, depth: int) -> int:
    """Write `value` at `end`; the new end, or -1 if it is not for this pass."""
    kind = type(value)
    if kind is int:
        if -48 <= value < 160:
            return _put_byte(out, end, value + 0x50)  # the immediate tag
        if 0 <= value < _C_DECIMAL_LIMIT:
            return _put_decimal(out, end, value)  # every message's seq: b"%d" costs ~1,400
        digits = b"%d" % value
        size = len(digits)
        if size >= 256:
            return -1
        end = _put_byte(out, end, 0x16)  # _INT_L1
        end = _put_byte(out, end, size)
        return _put_raw(out, end, digits)
    if kind is tuple:
        count = len(value)
        if count >= 256 or depth >= _SMALL_DEPTH:
            return -1
        if count == 0:
            return _put_byte(out, end, 0x02)  # TAG_EMPTY_TUPLE
        if count <= 4:
            end = _put_byte(out, end, 0x0F + count)  # TAG_TUPLE_1..TAG_TUPLE_4
        else:
            end = _put_byte(out, end, 0x14)  # TAG_TUPLE_L1
            end = _put_byte(out, end, count)
        depth += 1
        for item in value:
            end = _put_small(out, end, item, depth)
            if end < 0:
                return -1
        return end
    if kind is str:
        if len(value) >= _SMALL_BYTES:
            return -1  # its bytes are too: not worth encoding twice
        text = value  # typed `str` when compiled: `encode` is then a C call, not a method lookup
        try:
            raw = text.encode()
        except UnicodeEncodeError:
            return -1
        return _put_small_bytes(out, _put_byte(out, end, 0x08), raw)  # _STR, then its bytes
    if value is None:
        return _put_byte(out, end, 0x00)
    if kind is bytes:
        return _put_small_bytes(out, end, value)
    if kind is bool:
        return _put_byte(out, end, 0x03 if value else 0x04)
    return -1


def _put_small_bytes(out: bytearray, end: int, raw: bytes) -> int:
    size = len(raw)
    if size == 0:
        return _put_byte(out, end, 0x01)  # _EMPTY_BYTES
    if size <= 4:
        end = _put_byte(out, end, 0x09 + size)  # _BYTES_1..
    elif size < 256:
        end = _put_byte(out, end, 0x0E)  # _BYTES_L1
        end = _put_byte(out, end, size)
    elif size < _SMALL_BYTES:
        end = _put_byte(out, end, 0x0F)  # TAG_BYTES_L4, then the size
        end = _put_raw(out, end, I4.pack(size))
    else:
        return -1
    return _put_raw(out, end, raw)


def _put_raw(out: bytearray, end: int, raw: bytes) -> int:
    size = len(raw)
    if end + size > len(out):
        _make_room(out, end + size)
    if size > _BYTE_LOOP:
        out[end : end + size] = raw
        return end + size
    for byte in raw:  # compiled, cheaper than a slice assignment for a few bytes
        out[end] = byte
        end += 1
    return end


def dump(obj: Any, prefix: bytes = b"") -> bytes:
    """Encode a dumpable value; byte-identical to stock rpyc's `brine.dump`.

    `prefix` is put before the encoding in the same buffer (a message type
    byte, without copying the whole message once more).

    Raises:
        TypeError: `obj` is, or contains, a value of a type brine does not take
            (the message names the type).
        ValueError: containers are nested deeper than `DEFAULT_MAX_DEPTH`
            (stock rpyc raises RecursionError near 500); an int has more digits
            than `sys.get_int_max_str_digits()` allows, or a str holds a lone
            surrogate (`UnicodeEncodeError`), as in stock rpyc.
    """
    kind = type(obj)
    if kind is tuple:  # every RPC message
        if _SMALL_PASS:
            small = _dump_small(obj, prefix)
            if small is not None:
                return small
        return _dump_container(obj, prefix)  # type: ignore[return-value]  # whole=True
    encode = _ENCODERS.get(kind)
    if encode is not None:
        return prefix + encode(obj)
    return _dump_container(obj, prefix)  # type: ignore[return-value]


def dump_pieces(container: tuple[Any, ...], prefix: bytes = b"") -> bytes | list[bytes]:
    """`dump` of a tuple, or, if it holds bytes or str values of `SEPARATE_SIZE`
    bytes or more, the encoding as a list of pieces to write in order: such a
    value's bytes are a piece of their own, never copied.

    Raises as `dump` does.
    """
    if _SMALL_PASS and type(container) is tuple:
        small = _dump_small(container, prefix)
        if small is not None:
            return small
    return _dump_container(container, prefix, False)


def dumpable(obj: Any) -> bool:
    """Whether `obj` is of a type `dump` takes; RPyC-compatible.

    Answers as stock rpyc's `brine.dumpable` does, by type only (a huge int or
    a str with a lone surrogate is dumpable but fails in `dump`, as in stock
    rpyc). Where stock rpyc raises RecursionError on deep nesting, this returns
    False past `DEFAULT_MAX_DEPTH` levels, the depth `dump` refuses.
    """
    if type(obj) in SCALAR_TYPES:
        return True
    # Nested containers are walked on an explicit stack, counted as `dump` counts them.
    parents: list[Iterator[Any]] = []
    items: Iterator[Any] = iter((obj,))
    while True:
        for item in items:
            if type(item) in SCALAR_TYPES:
                continue
            members = _members(item)
            if members is None:
                return False
            if not members and type(item) is tuple:
                continue  # () is one tag, not a nesting level
            if len(parents) >= DEFAULT_MAX_DEPTH:
                return False
            parents.append(items)
            items = iter(members)
            break
        else:
            if not parents:
                return True
            items = parents.pop()
