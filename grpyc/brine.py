"""Brine: the codec for immutable values of the RPyC 6 wire format (PROTOCOL.md section 3).

Owns the mapping between dumpable values and their bytes, nothing else: framing
is `framing`'s, boxing and messages are `protocol`'s. Pure code, no I/O.
The work is done in private modules: `grpyc._brine_encode` (`dump`,
`dumpable`), `grpyc._brine_decode` and `grpyc._brine_limits` (the limits
and the decoded-size accounting); this module is their public face.

Invariants:

- `dump` output is byte-identical to stock rpyc 6's `rpyc.core.brine.dump`, and
  `load` accepts everything stock rpyc dumps, within the limits below.
- `load` treats its input as hostile: any malformed input raises `BrineError`
  and nothing else; it allocates nothing that the input's length does not pay
  for; nesting is bounded by `max_depth` and never by the interpreter's
  recursion limit.
- The work of `load` is linear in its input, up to bounded factors: a
  frozenset is refused when more than `MAX_EQUAL_HASHES` of its items share
  one hash (they would cost a comparison each against each other) or when it
  has more than `max_frozenset_items` items; ints have at most
  `sys.get_int_max_str_digits()` digits (`UNLIMITED_INT_DIGITS` when that is
  0), since parsing decimal digits is quadratic.
- `load_measured` estimates, as it decodes, the memory of the objects it
  makes (see "decoded size" below) and stops with `BrineError` once the
  estimate passes `max_decoded_size`, before allocating a big str, bytes or
  container. `progress` is called after about every `PROGRESS_EVERY` bytes of
  that estimate, so a caller can let others run during a big decode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpyc._brine_decode import UNMETERED, decode
from grpyc._brine_encode import (
    C16,
    DEFAULT_MAX_DEPTH,
    F8,
    I1,
    I4,
    SCALAR_TYPES,
    SEPARATE_SIZE,
    TAG_BYTES_L4,
    dump,
    dump_pieces,
    dumpable,
)
from grpyc._brine_limits import (
    DEFAULT_MAX_FROZENSET_ITEMS,
    MAX_EQUAL_HASHES,
    PROGRESS_EVERY,
    UNLIMITED_INT_DIGITS,
    BrineError,
    Meter,
)
from grpyc._brine_small import SMALL_INPUT, decode_small

__all__ = [
    "C16",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_FROZENSET_ITEMS",
    "F8",
    "I1",
    "I4",
    "MAX_EQUAL_HASHES",
    "PROGRESS_EVERY",
    "SCALAR_TYPES",
    "SEPARATE_SIZE",
    "SPLICE_SCAN",
    "UNLIMITED_INT_DIGITS",
    "BrineError",
    "big_value_at",
    "dump",
    "dump_pieces",
    "dumpable",
    "load",
    "load_measured",
]

# `big_value_at` looks this far for a big value's header: an RPC message has
# a few dozen bytes of seq, handler and boxing before its first argument.
SPLICE_SCAN = 4096


def load(
    data: bytes | bytearray | memoryview,
    max_depth: int = DEFAULT_MAX_DEPTH,
    *,
    start: int = 0,
    max_frozenset_items: int = DEFAULT_MAX_FROZENSET_ITEMS,
) -> Any:
    """Decode one brine value that fills `data` exactly; RPyC-compatible.

    Stricter than stock rpyc, which ignores trailing bytes, recurses without
    bound, lets other exceptions escape on malformed input and has no limits.
    Decodes ints -48..-6 and empty frozensets to shared objects (values are
    immutable: only `is` can tell). `load_measured` also bounds and reports
    the memory of the value.

    Args:
        data: the encoding of exactly one value.
        max_depth: how deeply tuples, frozensets and slices may nest: 1
            allows a flat tuple, 0 only scalars (`()` is one tag, a scalar).
        start: offset of the value in `data` (saves copying a message's body
            out of its frame).
        max_frozenset_items: refuse a frozenset of more items.

    Raises:
        BrineError: `data` is not exactly one valid encoding: unknown tag,
            truncated, a length past the end, nesting deeper than `max_depth`,
            trailing bytes, invalid UTF-8, malformed int digits, unhashable
            frozenset items; or a limit is passed (see the module docstring).
        TypeError: `data` is not bytes, bytearray or memoryview.
    """
    if max_depth == DEFAULT_MAX_DEPTH and max_frozenset_items == DEFAULT_MAX_FROZENSET_ITEMS:
        return decode(data, start, UNMETERED)
    return decode(data, start, Meter(max_depth, None, max_frozenset_items, None))


def load_measured(
    data: bytes | bytearray | memoryview,
    max_depth: int = DEFAULT_MAX_DEPTH,
    *,
    start: int = 0,
    max_decoded_size: int | None = None,
    max_frozenset_items: int = DEFAULT_MAX_FROZENSET_ITEMS,
    progress: Callable[[], object] | None = None,
    splice: tuple[int, bytes] | None = None,
) -> tuple[Any, int]:
    """Decode one brine value that fills `data` exactly, as `load`; also estimate its memory.

    The estimate is what ``sys.getsizeof`` reports for each object made for
    the value (a container's slots are part of its size), with nothing for
    objects the interpreter or `load` shares (None, bools, ints -48..256,
    empty str/bytes/tuple/frozenset, 1-char ASCII strs, 1-byte bytes). It is
    over by at most 4 bytes per int and 74 per other 1-char str; on the corpus
    of tests/test_brine_limits.py it is within 0.1% of what tracemalloc
    traces. Tiny values reuse freed tuples (tracemalloc sees less), and the
    allocator's rounding to 16 bytes is not counted.

    Args:
        data, max_depth, start, max_frozenset_items: as for `load`.
        max_decoded_size: refuse a value whose estimate passes this many
            bytes; None: no limit. Checked before allocating a str, bytes,
            tuple or frozenset that would pass it, at every container and
            after every 1,024 items of one: the small scalars decoded since
            the last check may pass it by their own size.
        progress: called with no arguments, from inside the decode, each
            time the estimate has passed another multiple of `PROGRESS_EVERY`
            bytes (long ints count extra for their parsing time; a frozenset
            counts when built). It may switch greenlets; what it raises ends
            the decode and propagates (StopIteration, IndexError and
            struct.error wrapped in RuntimeError, so they cannot pass for
            truncated input).
        splice: ``(at, value)``: the bytes of one big bytes or str value were
            cut out of `data` at offset `at` (a reader got them into their own
            buffer: `big_value_at`). The value whose bytes start at `at` is
            `value` itself, not a copy. If no value starts there (the cut was
            a guess), `data` is decoded with the bytes put back.

    Returns:
        The value, and the estimate in bytes.

    Raises:
        BrineError: as `load`, or the estimate passes `max_decoded_size`
            (the message names the estimate, the limit and the offset).
        TypeError: `data` is not bytes, bytearray or memoryview.
    """
    if splice is None and type(data) is bytes and start >= 0 and len(data) - start <= SMALL_INPUT:
        small = decode_small(data, start, max_depth)
        if small is not None and (max_decoded_size is None or small[1] <= max_decoded_size):
            return small
    meter = Meter(max_depth, max_decoded_size, max_frozenset_items, progress)
    if splice is not None:
        meter.splice_at, meter.splice_value = splice
        try:
            value = decode(data, start, meter)
        except BrineError:
            if meter.splice_at < 0:
                raise  # the cut value was decoded: the error is the input's
        else:
            if meter.splice_at < 0:
                return value, meter.size()
        # No value starts at the cut: decode the input as it was sent.
        at, cut = splice
        data = bytes(data[:at]) + cut + bytes(data[at:])
        meter = Meter(max_depth, max_decoded_size, max_frozenset_items, progress)
    return decode(data, start, meter), meter.size()


def big_value_at(
    data: bytes | bytearray | memoryview, total: int, min_size: int
) -> tuple[int, int] | None:
    """Where a bytes or str value of `min_size` bytes or more may start: a guess.

    `data` is the first part of an encoding of `total` bytes. Returns the
    offset of the value's first byte and its size, for the first 4-byte-length
    bytes header in the first `SPLICE_SCAN` bytes of `data` whose value fits in
    `total` and goes on past `data`; else None. The header may lie inside
    another value: `load_measured` checks the guess (its `splice`).
    """
    head = bytes(data[:SPLICE_SCAN])
    pos = head.find(TAG_BYTES_L4)
    while 0 <= pos <= len(head) - 5:
        (size,) = I4.unpack_from(head, pos + 1)
        start = pos + 5
        if size >= min_size and len(data) < start + size <= total:
            return start, size
        pos = head.find(TAG_BYTES_L4, pos + 1)
    return None
