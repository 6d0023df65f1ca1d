"""Brine decoding of small inputs in one pass (PROTOCOL.md section 3).

Private to `grpyc.brine`. Most messages are a few dozen bytes of small
tuples, ints and strs; decoded through `grpyc._brine_decode`'s handler
table, each value costs a Python-level call. `decode_small` takes the common
values of an input of up to `SMALL_INPUT` bytes in one pass, typed C when
compiled (`_brine_small.pxd`), and leaves anything else, and every error, to
`_brine_decode.decode`: what it returns is exactly what `decode` returns,
with the same charge. Pure code, no I/O.
"""

from __future__ import annotations

from typing import Any, Final

from grpyc._brine_decode import IMM_VALUES, LONG_INT_DIGITS, SINGLETONS
from grpyc._brine_encode import TAG_IMM_FIRST, TAG_TUPLE_1, TAG_TUPLE_L1
from grpyc._brine_limits import (
    BYTES_SIZE,
    INT_SIZES,
    PROGRESS_EVERY,
    RECURSIVE_LEVELS,
    SLOT_SIZE,
    TUPLE_SIZE,
)

__all__ = ["SMALL_INPUT", "decode_small"]

# Inputs up to this many bytes try `decode_small` first: a message carrying
# a str or bytes of up to 64 KiB (a ping's 520 characters, a traceback, a
# page of text), which the table decodes at ~25 us more a message on a shared
# CPU (bench.cpu --op medium). It gives up once its charge passes
# PROGRESS_EVERY (the table takes over, and makes the `progress` calls due).
# It pays only compiled (typed by _brine_small.pxd: 0.82 us for a call
# request, 2.6 through the table); run as Python it is 2.5x slower than the
# table, so the pure-Python build leaves every input to the table (0).
SMALL_INPUT: Final = 0 if __file__.endswith(".py") else 64 * 1024
_SMALL_SKIP: Final = object()  # what `_small_value` returns when `decode` must take over
# Up to this many chars (sign included), an int is parsed without a bytes slice.
_SMALL_INT_DIGITS: Final = 18
# Module copies of imported constants: the compiled build makes them C globals.
_S_IMM_VALUES: Final = IMM_VALUES
_S_SINGLETONS: Final = SINGLETONS
_S_LONG_INT_DIGITS: Final = LONG_INT_DIGITS
_S_TUPLE_1: Final = TAG_TUPLE_1
_S_TUPLE_L1: Final = TAG_TUPLE_L1
_S_IMM_FIRST: Final = TAG_IMM_FIRST
_S_TUPLE_SIZE: Final = TUPLE_SIZE
_S_SLOT_SIZE: Final = SLOT_SIZE
_S_BYTES_SIZE: Final = BYTES_SIZE
_S_INT_SIZES: Final = INT_SIZES
_S_PROGRESS_EVERY: Final = PROGRESS_EVERY


class _SmallReader:
    """The input of one `decode_small`, how far it got, and what it charged."""

    def __init__(self, data: bytes, pos: int, max_depth: int) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)
        self.max_depth = max_depth
        self.cost = 0


def decode_small(data: bytes, start: int, max_depth: int) -> tuple[Any, int] | None:
    """``(value, charge)`` as `decode` makes them for the value at data[start:].

    None when the input holds anything but the common values (singletons,
    ints of up to 64 digits, short strs and bytes, tuples of up to 255 items
    nested less than `RECURSIVE_LEVELS` deep) or is not exactly one valid
    encoding: `decode` takes it then, and raises its errors.
    """
    depth = max_depth if max_depth < RECURSIVE_LEVELS else RECURSIVE_LEVELS
    reader = _SmallReader(data, start, depth)
    value = _small_value(reader, 0)
    if value is _SMALL_SKIP or reader.pos != reader.end or reader.cost > _S_PROGRESS_EVERY:
        return None
    return value, reader.cost


def _small_value(reader: _SmallReader, depth: int) -> Any:
    data = reader.data
    pos = reader.pos
    if pos >= reader.end:
        return _SMALL_SKIP
    tag = data[pos]
    pos += 1
    if tag >= _S_IMM_FIRST:
        if tag >= 0xF0:
            return _SMALL_SKIP
        reader.pos = pos
        return _S_IMM_VALUES[tag]
    if tag <= 0x06:
        reader.pos = pos
        return _S_SINGLETONS[tag]
    if _S_TUPLE_1 <= tag <= _S_TUPLE_L1:
        return _small_tuple(reader, tag, pos, depth)
    if tag == 0x16:
        return _small_int(reader, pos)
    if tag == 0x08:
        return _small_str(reader, pos)
    if 0x0A <= tag <= 0x0F:
        return _small_bytes(reader, tag, pos)
    return _SMALL_SKIP


def _small_tuple(reader: _SmallReader, tag: int, pos: int, depth: int) -> Any:
    if depth >= reader.max_depth:
        return _SMALL_SKIP
    if tag == _S_TUPLE_L1:
        if pos >= reader.end:
            return _SMALL_SKIP
        count = reader.data[pos]
        pos += 1
    else:
        count = tag - _S_TUPLE_1 + 1
    reader.cost += _S_TUPLE_SIZE + _S_SLOT_SIZE * count
    if reader.cost > _S_PROGRESS_EVERY:
        return _SMALL_SKIP  # the table's decode of it calls `progress`
    reader.pos = pos
    if count == 0:
        return ()
    depth += 1
    first = _small_value(reader, depth)
    if first is _SMALL_SKIP:
        return first
    if count == 1:
        return (first,)
    second = _small_value(reader, depth)
    if second is _SMALL_SKIP:
        return second
    if count == 2:
        return (first, second)
    items = [first, second]
    for _ in range(count - 2):
        item = _small_value(reader, depth)
        if item is _SMALL_SKIP:
            return item
        items.append(item)
    return tuple(items)


def _small_int(reader: _SmallReader, pos: int) -> Any:
    if pos >= reader.end:
        return _SMALL_SKIP
    data = reader.data
    size = data[pos]
    pos += 1
    end = pos + size
    if end > reader.end or size > _S_LONG_INT_DIGITS:
        return _SMALL_SKIP
    if size <= _SMALL_INT_DIGITS:
        value = _small_int_digits(data, pos, end)
        if value is None:
            return _SMALL_SKIP
    else:
        digits = data[pos:end]
        if not (digits.isdigit() or (digits[:1] == b"-" and digits[1:].isdigit())):
            return _SMALL_SKIP
        value = int(digits)
    if size > 3 or not -5 <= value <= 256:
        reader.cost += _S_INT_SIZES[size]
    reader.pos = end
    return value


def _small_int_digits(data: bytes, pos: int, end: int) -> int | None:
    """The int of the digits at data[pos:end] (an optional "-", then 1..18
    ASCII digits: what `_load_int` takes), else None."""
    if pos >= end:
        return None  # no digits (and data[pos] may be past the input)
    negative = data[pos] == 0x2D
    if negative:
        pos += 1
    if pos >= end:
        return None
    value = 0
    while pos < end:
        digit = data[pos] - 0x30
        if digit < 0 or digit > 9:
            return None
        value = value * 10 + digit
        pos += 1
    return -value if negative else value


def _small_str(reader: _SmallReader, pos: int) -> Any:
    if pos >= reader.end:
        return _SMALL_SKIP
    data = reader.data
    tag = data[pos]
    pos += 1
    if 0x0A <= tag <= 0x0D:
        size = tag - 0x09
    elif tag == 0x0E and pos < reader.end:
        size = data[pos]
        pos += 1
    elif tag == 0x01:
        size = 0
    elif tag == 0x0F:
        size = _small_size_l4(reader, pos)
        pos += 4
    else:
        return _SMALL_SKIP
    end = pos + size
    if end > reader.end:
        return _SMALL_SKIP
    try:
        text = data[pos:end].decode("utf-8")  # compiled: decoded in place, no slice
    except UnicodeDecodeError:
        return _SMALL_SKIP
    if size > 1:
        # What sys.getsizeof says (a str has no GC header), without its
        # keyword parsing: every request decodes a class name here.
        reader.cost += text.__sizeof__()
    reader.pos = end
    return text


def _small_bytes(reader: _SmallReader, tag: int, pos: int) -> Any:
    data = reader.data
    if tag == 0x0E:
        if pos >= reader.end:
            return _SMALL_SKIP
        size = data[pos]
        pos += 1
    elif tag == 0x0F:
        size = _small_size_l4(reader, pos)
        pos += 4
    else:
        size = tag - 0x09
    end = pos + size
    if end > reader.end:
        return _SMALL_SKIP
    if tag != 0x0A:
        reader.cost += _S_BYTES_SIZE + size
    reader.pos = end
    return data[pos:end]


def _small_size_l4(reader: _SmallReader, pos: int) -> int:
    """The 4-byte big-endian length at data[pos:] (TAG_BYTES_L4: a str or bytes of 256
    bytes or more); past the input, a size that makes the value end past it."""
    if pos + 4 > reader.end:
        return reader.end  # pos + 4 + this > end: the caller skips
    data = reader.data
    size = data[pos]  # a Py_ssize_t when compiled: the shift must not overflow a C int
    return (size << 24) | (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
