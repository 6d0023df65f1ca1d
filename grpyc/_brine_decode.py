"""Brine decoding: bytes to values, with bounded cost (PROTOCOL.md section 3).

Private to `grpyc.brine`, which documents the public functions built on
`decode`. Pure code, no I/O.

How it works: one handler per tag, looked up in `_HANDLERS` and called as
``handler(tag, cursor, data, depth, meter)``; tuples up to 32 levels deep
recurse, deeper ones go on an explicit stack (`_load_nested`). Every handler
charges what it makes to the `grpyc._brine_limits.Meter`, which enforces the
limits and calls the progress hook.
"""

from __future__ import annotations

import operator
import struct
import sys
from collections.abc import Callable
from sys import getsizeof as _getsizeof
from typing import Any, Final

from grpyc._brine_encode import (
    C16,
    DEFAULT_MAX_DEPTH,
    F8,
    I4,
    TAG_BYTES_L4,
    TAG_EMPTY_TUPLE,
    TAG_FROZENSET,
    TAG_IMM_FIRST,
    TAG_IMM_MIN,
    TAG_IMM_STOP,
    TAG_SLICE,
    TAG_TUPLE_1,
    TAG_TUPLE_4,
    TAG_TUPLE_L1,
    TAG_TUPLE_L4,
)
from grpyc._brine_limits import (
    ASCII_SIZE,
    BYTES_SIZE,
    COMPLEX_SIZE,
    DEFAULT_MAX_FROZENSET_ITEMS,
    FLOAT_SIZE,
    FROZENSET_SIZE,
    INT_SIZE,
    INT_SIZES,
    MAX_EQUAL_HASHES,
    SLICE_SIZE,
    SLOT_SIZE,
    TUPLE_SIZE,
    TUPLE_SIZES,
    UNLIMITED_INT_DIGITS,
    BrineError,
    Cursor,
    Meter,
    charge,
    offset,
)

__all__ = ["IMM_VALUES", "LONG_INT_DIGITS", "SINGLETONS", "UNMETERED", "decode"]

# Items of a big container decoded between two charges for their slots.
_CHUNK: Final = 1024
# Ints longer than this (in chars) are parsed and measured apart.
LONG_INT_DIGITS: Final = 64

# Values of the one-byte tags 0x00..0x06.
SINGLETONS: Final = (None, b"", (), True, False, NotImplemented, Ellipsis)
# Indexed by tag: the ints of the immediate tags 0x20..0xef, made once.
IMM_VALUES: Final[tuple[Any, ...]] = (None,) * TAG_IMM_FIRST + tuple(
    range(TAG_IMM_MIN, TAG_IMM_STOP)
)
_EMPTY_FROZENSET: Final[frozenset[Any]] = frozenset()


# ---------------------------------------------------------------------------
# handlers: handler(tag, cursor, data, depth, meter), `depth` containers around
# ---------------------------------------------------------------------------
# Scalars are charged without a check: they are small (a big str or bytes is
# admitted before it is copied) and the next container checks.


def _unpack(fields: struct.Struct, cursor: Cursor, data: bytes) -> tuple[Any, ...]:
    start = len(data) - cursor.__length_hint__()
    values = fields.unpack_from(data, start)  # struct.error when short: load reports truncation
    cursor.__setstate__(start + fields.size)
    return values


def _past_end(size: int, start: int, data: bytes) -> BrineError:
    return BrineError(
        f"value of {size} bytes at offset {start} runs past the end of {len(data)} bytes of input"
    )


def _load_imm(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> int:
    value: int = IMM_VALUES[tag]  # 0x20..0xef: the int tag - 0x50 (no cast(): a call)
    return value


def _load_singleton(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> Any:
    return SINGLETONS[tag]  # None, b"", (), True, False, NotImplemented, Ellipsis


def _read_bytes(tag: int, cursor: Cursor, data: bytes, meter: Meter, base_size: int) -> bytes:
    """The payload of a bytes value whose tag was just read (inside a str, too).

    The caller charges it. A payload with a 4-byte length is admitted first,
    as ``base_size`` plus its length, so a big one past the limit is never copied.
    """
    start = len(data) - cursor.__length_hint__()
    if 0x0A <= tag <= 0x0D:  # 1..4 bytes
        size = tag - 0x09
    elif tag == 0x0E:  # 1-byte length; IndexError when short: load reports truncation
        size = data[start]
        start += 1
    elif tag == TAG_BYTES_L4:  # struct.error when short: load reports truncation
        (size,) = I4.unpack_from(data, start)
        start += 4
        if start == meter.splice_at:
            return _spliced(size, start, cursor, data, meter, base_size)
        if base_size + size > meter.fuel and start + size <= len(data):
            meter.admit(base_size + size, cursor, data)
    elif tag == 0x01:  # empty bytes
        return b""
    else:
        raise BrineError(f"str at offset {start - 2} holds tag 0x{tag:02x}, not bytes")
    # Checked before slicing: a declared length never allocates past the input.
    end = start + size
    if end > len(data):
        raise _past_end(size, start, data)
    cursor.__setstate__(end)
    return data[start:end]


def _spliced(
    size: int, start: int, cursor: Cursor, data: bytes, meter: Meter, base_size: int
) -> bytes:
    """The value cut out of the input at `start`; the input goes on right there."""
    value = meter.splice_value
    assert value is not None
    if len(value) != size:
        raise BrineError(f"value of {size} bytes at offset {start} was cut as {len(value)} bytes")
    if base_size + size > meter.fuel:
        meter.admit(base_size + size, cursor, data)
    meter.splice_at, meter.splice_value = -1, None
    cursor.__setstate__(start)
    return value


def _load_bytes(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> bytes:
    value = _read_bytes(tag, cursor, data, meter, BYTES_SIZE)
    if tag != 0x0A:  # 1-byte values are shared
        meter.fuel -= BYTES_SIZE + len(value)
    return value


def _load_str(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> str:
    # A big one is admitted as ASCII (the least it can cost) before decoding.
    raw = _read_bytes(next(cursor), cursor, data, meter, ASCII_SIZE)
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise BrineError(f"str of {len(raw)} bytes is not valid UTF-8: {exc.reason}") from None
    if len(raw) > 1:  # "" and 1-byte strs are shared
        meter.fuel -= _getsizeof(text)
    return text


def _load_int(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> int:
    """An int tagged 0x16 or 0x17: a 1- or 4-byte length, then decimal digits."""
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
    if size > LONG_INT_DIGITS:
        return _load_long_int(start, end, cursor, data, meter)
    cursor.__setstate__(end)
    digits = data[start:end]
    # Exactly what stock rpyc writes (str(int)); int() alone would also
    # take "+1", " 1", "1_0".
    if not (digits.isdigit() or (digits[:1] == b"-" and digits[1:].isdigit())):
        raise _bad_digits(digits)
    value = int(digits)  # far below the interpreter's digit limit
    if size > 3 or not -5 <= value <= 256:  # the interpreter shares -5..256
        meter.fuel -= INT_SIZES[size]
    return value


def _bad_digits(digits: bytes) -> BrineError:
    return BrineError(f"int digits {digits[:40]!r} are not -?[0-9]+")


def _load_long_int(start: int, end: int, cursor: Cursor, data: bytes, meter: Meter) -> int:
    """An int of more than LONG_INT_DIGITS chars at data[start:end]."""
    size = end - start
    # Refused before parsing: int() of n digits takes time n*n. A sign is one
    # char more than the digits the limit counts.
    limit = sys.get_int_max_str_digits() or UNLIMITED_INT_DIGITS
    if size > limit + (data[start] == 0x2D):
        raise BrineError(
            f"int of {size} digits at offset {start} exceeds sys.get_int_max_str_digits()="
            f"{limit} (UNLIMITED_INT_DIGITS when 0)"
        )
    cursor.__setstate__(end)
    digits = data[start:end]
    if not (digits.isdigit() or (digits[:1] == b"-" and digits[1:].isdigit())):
        raise _bad_digits(digits)
    value = int(digits)
    meter.fuel -= INT_SIZE + 4 * ((value.bit_length() + 29) // 30)
    meter.penalize(size * size >> 10, cursor, data)
    return value


def _load_float(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> float:
    meter.fuel -= FLOAT_SIZE
    value: float = _unpack(F8, cursor, data)[0]
    return value


def _load_complex(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> complex:
    meter.fuel -= COMPLEX_SIZE
    return complex(*_unpack(C16, cursor, data))


def _unknown_tag(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> Any:
    raise BrineError(f"unknown tag 0x{tag:02x} at offset {offset(cursor, data) - 1}")


def _load_small_tuple(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> Any:
    """A tuple of 1..4 items (tags 0x10..0x13): the hottest path of a load."""
    if depth >= meter.fast_depth:
        return _load_nested(tag, cursor, data, depth, meter)
    meter.fuel -= TUPLE_SIZES[tag]
    if meter.fuel < 0:
        meter.checkpoint(cursor, data)
    depth += 1
    item = next(cursor)
    first = _HANDLERS[item](item, cursor, data, depth, meter)
    if tag == 0x10:
        return (first,)
    item = next(cursor)
    second = _HANDLERS[item](item, cursor, data, depth, meter)
    if tag == 0x11:
        return (first, second)
    item = next(cursor)
    third = _HANDLERS[item](item, cursor, data, depth, meter)
    if tag == 0x12:
        return (first, second, third)
    item = next(cursor)
    return (first, second, third, _HANDLERS[item](item, cursor, data, depth, meter))


def _load_container(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> Any:
    """A tuple with a count, a slice or a frozenset (tags 0x14, 0x15, 0x19, 0x1a)."""
    if depth >= meter.fast_depth:
        return _load_nested(tag, cursor, data, depth, meter)
    count, kind = _open(tag, cursor, data, depth, meter)
    items = _load_items(count, cursor, data, depth + 1, meter)
    return _build(kind, items, cursor, data, meter)


_KIND_TUPLE: Final = 0
_KIND_SLICE: Final = 1
_KIND_FROZENSET: Final = 2


def _tuple_count(tag: int, cursor: Cursor, data: bytes) -> int:
    """Item count of the tuple whose tag (0x10..0x15) was just read."""
    if TAG_TUPLE_1 <= tag <= TAG_TUPLE_4:
        return tag - TAG_TUPLE_1 + 1
    count = next(cursor) if tag == TAG_TUPLE_L1 else _unpack(I4, cursor, data)[0]
    # Every item takes at least one byte: refuse a count the input cannot hold.
    remaining = cursor.__length_hint__()
    if count > remaining:
        raise BrineError(f"tuple of {count} items declared with only {remaining} bytes left")
    return count


def _open(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> tuple[int, int]:
    """Read a container header: its item count and kind; charge all but its slots.

    The slots are charged as the items are decoded, so a big container brings
    `progress` calls.
    """
    if depth >= meter.max_depth:
        raise BrineError(
            f"containers nested deeper than max_depth={meter.max_depth} "
            f"at offset {offset(cursor, data) - 1}"
        )
    if tag == TAG_SLICE:
        inner = next(cursor)
        if inner != TAG_TUPLE_1 + 2:
            raise BrineError(f"slice holds tag 0x{inner:02x}, not a 3-tuple")
        charge(meter, SLICE_SIZE - 3 * SLOT_SIZE, cursor, data)
        return 3, _KIND_SLICE
    if tag == TAG_FROZENSET:
        return _open_frozenset(cursor, data, meter), _KIND_FROZENSET
    count = _tuple_count(tag, cursor, data)
    if TUPLE_SIZE + SLOT_SIZE * count > meter.fuel:
        meter.admit(TUPLE_SIZE + SLOT_SIZE * count, cursor, data)
    charge(meter, TUPLE_SIZE, cursor, data)
    return count, _KIND_TUPLE


def _open_frozenset(cursor: Cursor, data: bytes, meter: Meter) -> int:
    inner = next(cursor)
    if inner == TAG_EMPTY_TUPLE:
        return 0
    if not TAG_TUPLE_1 <= inner <= TAG_TUPLE_L4:
        raise BrineError(f"frozenset holds tag 0x{inner:02x}, not a tuple")
    count = _tuple_count(inner, cursor, data)
    if count > meter.max_frozenset_items:
        raise BrineError(
            f"frozenset of {count} items at offset {offset(cursor, data)} exceeds "
            f"max_frozenset_items={meter.max_frozenset_items}"
        )
    if FROZENSET_SIZE + 4 * SLOT_SIZE * count > meter.fuel:
        meter.admit(FROZENSET_SIZE + 4 * SLOT_SIZE * count, cursor, data)
    return count


def _make_frozenset(items: list[Any], cursor: Cursor, data: bytes, meter: Meter) -> frozenset[Any]:
    if not items:
        return _EMPTY_FROZENSET
    try:
        if len(items) > MAX_EQUAL_HASHES:
            _check_hash_spread(items, cursor, data)
        value = frozenset(items)
    except TypeError as exc:  # a slice, or a tuple holding one
        raise BrineError(f"frozenset item is not hashable: {exc}") from None
    # Its items were charged a slot each; the set's table replaces those.
    charge(meter, _getsizeof(value) - SLOT_SIZE * len(items), cursor, data)
    return value


def _check_hash_spread(items: list[Any], cursor: Cursor, data: bytes) -> None:
    """Refuse items of which more than MAX_EQUAL_HASHES share one hash.

    Sorting finds them in O(n log n) whatever the hashes are; counting them
    in a dict would meet the same collisions it looks for.
    """
    hashes = sorted(map(hash, items))
    # In sorted order, a run longer than the bound has equal ends that far apart.
    if any(map(operator.eq, hashes, hashes[MAX_EQUAL_HASHES:])):
        raise BrineError(
            f"frozenset of {len(items)} items before offset {offset(cursor, data)} has more "
            f"than MAX_EQUAL_HASHES={MAX_EQUAL_HASHES} items with one hash"
        )


def _build(kind: int, items: list[Any], cursor: Cursor, data: bytes, meter: Meter) -> Any:
    if kind == _KIND_TUPLE:
        return tuple(items)
    if kind == _KIND_SLICE:
        return slice(*items)
    return _make_frozenset(items, cursor, data, meter)


def _load_items(count: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> list[Any]:
    items: list[Any] = []
    append = items.append
    handlers = _HANDLERS
    while count:
        chunk = count if count < _CHUNK else _CHUNK
        count -= chunk
        meter.fuel -= SLOT_SIZE * chunk
        if meter.fuel < 0:
            meter.checkpoint(cursor, data)
        for _ in range(chunk):
            tag = next(cursor)
            append(handlers[tag](tag, cursor, data, depth, meter))
    return items


def _load_nested(tag: int, cursor: Cursor, data: bytes, depth: int, meter: Meter) -> Any:
    """Decode a container on an explicit stack: any depth, no recursion."""
    parents: list[tuple[list[Any], int, int]] = []
    count, kind = _open(tag, cursor, data, depth, meter)
    items: list[Any] = []
    while True:
        if len(items) < count:
            charge(meter, SLOT_SIZE, cursor, data)
            tag = next(cursor)
            if TAG_TUPLE_1 <= tag <= TAG_TUPLE_L4 or tag in (TAG_SLICE, TAG_FROZENSET):
                parents.append((items, count, kind))
                count, kind = _open(tag, cursor, data, depth + len(parents), meter)
                items = []
            else:
                items.append(_HANDLERS[tag](tag, cursor, data, depth, meter))
            continue
        value = _build(kind, items, cursor, data, meter)
        if not parents:
            return value
        items, count, kind = parents.pop()
        items.append(value)


_Handler = Callable[[int, Cursor, bytes, int, Meter], Any]


def _handler(tag: int) -> _Handler:
    if tag <= 0x06:
        return _load_singleton
    if tag == 0x08:
        return _load_str
    if 0x0A <= tag <= 0x0F:
        return _load_bytes
    if TAG_TUPLE_1 <= tag <= TAG_TUPLE_4:
        return _load_small_tuple
    if tag in (TAG_TUPLE_L1, TAG_TUPLE_L4, TAG_SLICE, TAG_FROZENSET):
        return _load_container
    if tag in (0x16, 0x17):
        return _load_int
    if tag == 0x18:
        return _load_float
    if tag == 0x1B:
        return _load_complex
    if 0x20 <= tag < 0xF0:
        return _load_imm
    return _unknown_tag


# The decoder of each tag: one index instead of a chain of tests per value.
_HANDLERS: Final[tuple[_Handler, ...]] = tuple(_handler(tag) for tag in range(256))


def decode(data: bytes | bytearray | memoryview, start: int, meter: Meter) -> Any:
    """The value encoded at data[start:], which it must fill exactly (see `grpyc.brine.load`)."""
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"load takes bytes, bytearray or memoryview, not {type(data).__name__}")
        data = bytes(data)
    cursor: Cursor = iter(data)  # type: ignore[assignment]  # Iterator lacks the two dunders
    if start:
        if not 0 <= start < len(data):
            raise BrineError(f"start={start} is outside the {len(data)} bytes of input")
        cursor.__setstate__(start)
    try:
        tag = next(cursor)
        value = _HANDLERS[tag](tag, cursor, data, 0, meter)
    except (StopIteration, IndexError, struct.error):
        raise BrineError(f"truncated: {len(data)} bytes of input end inside a value") from None
    trailing = cursor.__length_hint__()
    if trailing:
        raise BrineError(
            f"{trailing} trailing bytes after a value of {len(data) - trailing - start} bytes"
        )
    if meter.fuel < 0:  # scalars charged since the last check
        meter.checkpoint(cursor, data)
    return value


# load without limits shares one meter: nothing reads its count, and its
# checkpoints only refuel, so concurrent decodes (other greenlets or OS
# threads) may share it.
UNMETERED: Final = Meter(DEFAULT_MAX_DEPTH, None, DEFAULT_MAX_FROZENSET_ITEMS, None)
