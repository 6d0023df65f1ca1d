"""Brine: the codec for immutable values of the RPyC 6 wire format (PROTOCOL.md section 3).

Owns the mapping between dumpable values and their bytes, nothing else: framing
is `channel`'s, boxing and messages are `protocol`'s. Pure code, no I/O.

Invariants:

- `dump` output is byte-identical to stock rpyc 6's `rpyc.core.brine.dump`, and
  `load` accepts everything stock rpyc dumps.
- Only exactly the types of PROTOCOL.md section 3 are dumpable: a subclass of
  int, str, tuple, ... is not (it travels by reference).
- `load` treats its input as hostile: any malformed input raises `BrineError`
  and nothing else; it allocates nothing that the input's length does not pay
  for; nesting is bounded by `max_depth` and never by the interpreter's
  recursion limit.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterator
from struct import Struct
from types import EllipsisType, NoneType, NotImplementedType
from typing import Any, Final, Protocol

__all__ = [
    "C16",
    "DEFAULT_MAX_DEPTH",
    "F8",
    "I1",
    "I4",
    "BrineError",
    "dump",
    "dumpable",
    "load",
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
_EMPTY_TUPLE = 0x02
_STR = 0x08
_BYTES_1 = 0x0A  # 0x0a..0x0d: bytes of length 1..4
_BYTES_L1 = 0x0E
_BYTES_L4 = 0x0F
_TUPLE_1 = 0x10  # 0x10..0x13: tuple of 1..4 items
_TUPLE_4 = 0x13
_TUPLE_L1 = 0x14
_TUPLE_L4 = 0x15
_INT_L1 = 0x16
_INT_L4 = 0x17
_FLOAT = 0x18
_SLICE = 0x19
_FROZENSET = 0x1A
_COMPLEX = 0x1B
_IMM_FIRST = 0x20  # 0x20..0xef: the int tag - 0x50
_IMM_END = 0xF0
_IMM_BIAS = 0x50
_IMM_MIN = _IMM_FIRST - _IMM_BIAS
_IMM_STOP = _IMM_END - _IMM_BIAS

# Values of the one-byte tags 0x00..0x06.
_SINGLETONS: Final = (None, b"", (), True, False, NotImplemented, Ellipsis)

_SIMPLE_TYPES: Final = frozenset(
    {NoneType, bool, int, float, complex, bytes, str, NotImplementedType, EllipsisType}
)


class BrineError(ValueError):
    """Bytes that are not a valid brine encoding (PROTOCOL.md section 3)."""


# ---------------------------------------------------------------------------
# dump
# ---------------------------------------------------------------------------

# Encoded headers for every length below 256, so the hot path is one index.
_IMM_INTS: Final = tuple(bytes([v + _IMM_BIAS]) for v in range(_IMM_MIN, _IMM_STOP))
_BYTES_HEADS: Final = (
    bytes([_EMPTY_BYTES]),
    *(bytes([_BYTES_1 + n - 1]) if n <= 4 else bytes([_BYTES_L1, n]) for n in range(1, 256)),
)
_STR_HEADS: Final = tuple(bytes([_STR]) + head for head in _BYTES_HEADS)
_TUPLE_HEADS: Final = (
    bytes([_EMPTY_TUPLE]),
    *(bytes([_TUPLE_1 + n - 1]) if n <= 4 else bytes([_TUPLE_L1, n]) for n in range(1, 256)),
)
_INT_HEADS: Final = tuple(bytes([_INT_L1, n]) for n in range(256))


def _bytes_head(size: int) -> bytes:
    return _BYTES_HEADS[size] if size < 256 else bytes([_BYTES_L4]) + I4.pack(size)


def _tuple_head(count: int) -> bytes:
    return _TUPLE_HEADS[count] if count < 256 else bytes([_TUPLE_L4]) + I4.pack(count)


def _encode_int(value: int) -> bytes:
    if _IMM_MIN <= value < _IMM_STOP:
        return _IMM_INTS[value - _IMM_MIN]
    # Raises ValueError past sys.get_int_max_str_digits(), as stock rpyc does.
    digits = b"%d" % value
    size = len(digits)
    if size < 256:
        return _INT_HEADS[size] + digits
    return bytes([_INT_L4]) + I4.pack(size) + digits


def _encode_bytes(value: bytes) -> bytes:
    return _bytes_head(len(value)) + value


def _str_head(size: int) -> bytes:
    return _STR_HEADS[size] if size < 256 else bytes([_STR, _BYTES_L4]) + I4.pack(size)


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
        return container
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


def _dump_container(container: Any, prefix: bytes = b"") -> bytes:
    """Encode a tuple, frozenset or slice, walking nested ones on an explicit stack."""
    out: list[bytes] = [prefix] if prefix else []
    append = out.append
    done = bytearray()
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
                append(raw)
            elif item is None:
                append(b"\x00")
            elif kind is bytes:
                append(_bytes_head(len(item)))
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
                if done:
                    done += b"".join(out)
                    return bytes(done)
                return b"".join(out)
            items = parents.pop()


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
        return _dump_container(obj, prefix)
    encode = _ENCODERS.get(kind)
    if encode is not None:
        return prefix + encode(obj)
    return _dump_container(obj, prefix)


def dumpable(obj: Any) -> bool:
    """Whether `obj` is of a type `dump` takes; RPyC-compatible.

    Answers as stock rpyc's `brine.dumpable` does, by type only (a huge int or
    a str with a lone surrogate is dumpable but fails in `dump`, as in stock
    rpyc). Where stock rpyc raises RecursionError on deep nesting, this returns
    False past `DEFAULT_MAX_DEPTH` levels, the depth `dump` refuses.
    """
    if type(obj) in _SIMPLE_TYPES:
        return True
    # Nested containers are walked on an explicit stack, counted as `dump` counts them.
    parents: list[Iterator[Any]] = []
    items: Iterator[Any] = iter((obj,))
    while True:
        for item in items:
            if type(item) in _SIMPLE_TYPES:
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


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------

# Levels decoded by plain recursion, the fastest way in CPython 3.11; deeper
# levels go on an explicit stack, so depth never meets the recursion limit.
# RPC messages nest about 6 levels; 32 costs at most ~64 frames of headroom.
_RECURSIVE_LEVELS: Final = 32


class _Cursor(Protocol):
    """A bytes iterator used as a read cursor over the input.

    `next()` is one C call; `__length_hint__` and `__setstate__` read and set
    its position (a position past the end clamps to the end).
    """

    def __next__(self) -> int: ...
    def __length_hint__(self) -> int: ...
    def __setstate__(self, position: int) -> None: ...


def _offset(cursor: _Cursor, data: bytes) -> int:
    return len(data) - cursor.__length_hint__()


def _unpack(fields: Struct, cursor: _Cursor, data: bytes) -> tuple[Any, ...]:
    start = len(data) - cursor.__length_hint__()
    values = fields.unpack_from(data, start)  # struct.error when short: load reports truncation
    cursor.__setstate__(start + fields.size)
    return values


def _read_bytes(tag: int, cursor: _Cursor, data: bytes) -> bytes:
    """The payload of a bytes value whose tag was just read (inside a str, too)."""
    start = len(data) - cursor.__length_hint__()
    if 0x0A <= tag <= 0x0D:  # 1..4 bytes
        size = tag - 0x09
    elif tag == 0x0E:  # 1-byte length; IndexError when short: load reports truncation
        size = data[start]
        start += 1
    elif tag == _BYTES_L4:  # struct.error when short: load reports truncation
        (size,) = I4.unpack_from(data, start)
        start += 4
    elif tag == _EMPTY_BYTES:
        return b""
    else:
        raise BrineError(f"str at offset {start - 2} holds tag 0x{tag:02x}, not bytes")
    # Checked before slicing: a declared length never allocates past the input.
    end = start + size
    if end > len(data):
        raise _past_end(size, start, data)
    cursor.__setstate__(end)
    return data[start:end]


def _past_end(size: int, start: int, data: bytes) -> BrineError:
    return BrineError(
        f"value of {size} bytes at offset {start} runs past the end of {len(data)} bytes of input"
    )


def _make_frozenset(items: list[Any]) -> frozenset[Any]:
    try:
        return frozenset(items)
    except TypeError as exc:  # a slice, or a tuple holding one
        raise BrineError(f"frozenset item is not hashable: {exc}") from None


def _make_slice(items: list[Any]) -> slice:
    return slice(*items)


def _open(
    tag: int, cursor: _Cursor, data: bytes, depth: int, max_depth: int
) -> tuple[int, Callable[[list[Any]], Any]]:
    """Read a container header: its item count and what builds it from its items.

    `depth` containers enclose this one.
    """
    if depth >= max_depth:
        raise BrineError(
            f"containers nested deeper than max_depth={max_depth} "
            f"at offset {_offset(cursor, data) - 1}"
        )
    if _TUPLE_1 <= tag <= _TUPLE_4:
        return tag - _TUPLE_1 + 1, tuple
    if tag == _SLICE:
        inner = next(cursor)
        if inner != _TUPLE_1 + 2:
            raise BrineError(f"slice holds tag 0x{inner:02x}, not a 3-tuple")
        return 3, _make_slice
    if tag == _FROZENSET:
        inner = next(cursor)
        if inner == _EMPTY_TUPLE:
            return 0, _make_frozenset
        if not _TUPLE_1 <= inner <= _TUPLE_L4:
            raise BrineError(f"frozenset holds tag 0x{inner:02x}, not a tuple")
        count, _ = _open(inner, cursor, data, depth, max_depth)
        return count, _make_frozenset
    count = next(cursor) if tag == _TUPLE_L1 else _unpack(I4, cursor, data)[0]
    # Every item takes at least one byte: refuse a count the input cannot hold.
    remaining = cursor.__length_hint__()
    if count > remaining:
        raise BrineError(f"tuple of {count} items declared with only {remaining} bytes left")
    return count, tuple


def _is_container(tag: int) -> bool:
    return _TUPLE_1 <= tag <= _TUPLE_L4 or tag in (_SLICE, _FROZENSET)


def _load_nested(tag: int, cursor: _Cursor, data: bytes, depth: int, max_depth: int) -> Any:
    """Decode a container on an explicit stack: any depth, no recursion."""
    parents: list[tuple[list[Any], int, Callable[[list[Any]], Any]]] = []
    count, build = _open(tag, cursor, data, depth, max_depth)
    items: list[Any] = []
    while True:
        if len(items) < count:
            tag = next(cursor)
            if _is_container(tag):
                parents.append((items, count, build))
                count, build = _open(tag, cursor, data, depth + len(parents), max_depth)
                items = []
            else:
                items.append(_load_value(tag, cursor, data, depth, max_depth))
            continue
        value = build(items)
        if not parents:
            return value
        items, count, build = parents.pop()
        items.append(value)


def _load_items(count: int, cursor: _Cursor, data: bytes, depth: int, max_depth: int) -> list[Any]:
    items = []
    for _ in range(count):
        items.append(_load_value(next(cursor), cursor, data, depth, max_depth))
    return items


def _load_value(tag: int, cursor: _Cursor, data: bytes, depth: int, max_depth: int) -> Any:
    """Decode the value whose tag was just read; `depth` containers enclose it."""
    # Branches in order of frequency in RPC messages. No comprehension here: it
    # would turn the arguments into cells, paid on every call.
    if tag >= 0x20:  # 0x20..0xef: an immediate int
        if tag < 0xF0:
            return tag - 0x50
    elif 0x10 <= tag <= 0x13:  # tuple of 1..4 items
        if depth >= _RECURSIVE_LEVELS or depth >= max_depth:
            return _load_nested(tag, cursor, data, depth, max_depth)
        depth += 1
        first = _load_value(next(cursor), cursor, data, depth, max_depth)
        if tag == 0x10:
            return (first,)
        second = _load_value(next(cursor), cursor, data, depth, max_depth)
        if tag == 0x11:
            return (first, second)
        third = _load_value(next(cursor), cursor, data, depth, max_depth)
        if tag == 0x12:
            return (first, second, third)
        return (first, second, third, _load_value(next(cursor), cursor, data, depth, max_depth))
    elif tag == 0x08:  # str: the encoding of its UTF-8 bytes follows
        raw = _read_bytes(next(cursor), cursor, data)
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise BrineError(f"str of {len(raw)} bytes is not valid UTF-8: {exc.reason}") from None
    elif tag == 0x16 or tag == 0x17:  # int: 1- or 4-byte length, decimal digits
        # Read as _read_bytes reads bytes tagged 0x0e or 0x0f, inline: every
        # message past the 160th has an int seq, every id pack two big ints.
        start = len(data) - cursor.__length_hint__()
        if tag == 0x16:
            size = data[start]
            start += 1
        else:
            (size,) = I4.unpack_from(data, start)
            start += 4
        end = start + size
        if end > len(data):
            raise _past_end(size, start, data)
        cursor.__setstate__(end)
        digits = data[start:end]
        # Exactly what stock rpyc writes (str(int)); int() alone would also
        # take "+1", " 1", "1_0".
        if not (digits.isdigit() or (digits[:1] == b"-" and digits[1:].isdigit())):
            raise BrineError(f"int digits {digits[:40]!r} are not -?[0-9]+")
        try:
            return int(digits)
        except ValueError:
            # Over the int/str conversion limit, which keeps parsing linear.
            raise BrineError(
                f"int of {len(digits)} digits exceeds sys.get_int_max_str_digits()="
                f"{sys.get_int_max_str_digits()}"
            ) from None
    elif tag <= 0x06:  # None, b"", (), True, False, NotImplemented, Ellipsis
        return _SINGLETONS[tag]
    elif 0x0A <= tag <= 0x0F:  # bytes
        return _read_bytes(tag, cursor, data)
    elif _is_container(tag):
        if depth >= _RECURSIVE_LEVELS:
            return _load_nested(tag, cursor, data, depth, max_depth)
        count, build = _open(tag, cursor, data, depth, max_depth)
        return build(_load_items(count, cursor, data, depth + 1, max_depth))
    elif tag == _FLOAT:
        return _unpack(F8, cursor, data)[0]
    elif tag == _COMPLEX:
        return complex(*_unpack(C16, cursor, data))
    raise BrineError(f"unknown tag 0x{tag:02x} at offset {_offset(cursor, data) - 1}")


def load(
    data: bytes | bytearray | memoryview, max_depth: int = DEFAULT_MAX_DEPTH, *, start: int = 0
) -> Any:
    """Decode one brine value that fills `data` exactly; RPyC-compatible.

    Stricter than stock rpyc, which ignores trailing bytes, recurses without
    bound and lets other exceptions escape on malformed input.

    Args:
        data: the encoding of exactly one value.
        max_depth: how deeply tuples, frozensets and slices may nest: 1
            allows a flat tuple, 0 only scalars (`()` is one tag, a scalar).
        start: offset of the value in `data` (saves copying a message's body
            out of its frame).

    Raises:
        BrineError: `data` is not exactly one valid encoding: unknown tag,
            truncated, a length past the end, nesting deeper than `max_depth`,
            trailing bytes, invalid UTF-8, malformed int digits, unhashable
            frozenset items.
        TypeError: `data` is not bytes, bytearray or memoryview.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"load takes bytes, bytearray or memoryview, not {type(data).__name__}")
        data = bytes(data)
    cursor: _Cursor = iter(data)  # type: ignore[assignment]  # Iterator lacks the two dunders
    if start:
        if not 0 <= start < len(data):
            raise BrineError(f"start={start} is outside the {len(data)} bytes of input")
        cursor.__setstate__(start)
    try:
        value = _load_value(next(cursor), cursor, data, 0, max_depth)
    except (StopIteration, IndexError, struct.error):
        raise BrineError(f"truncated: {len(data)} bytes of input end inside a value") from None
    trailing = cursor.__length_hint__()
    if trailing:
        raise BrineError(
            f"{trailing} trailing bytes after a value of {len(data) - trailing - start} bytes"
        )
    return value
