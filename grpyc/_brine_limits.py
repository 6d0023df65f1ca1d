"""The limits and the accounting of a brine decode. Private to `grpyc.brine`.

Holds the limits `grpyc.brine` re-exports, `BrineError`, the model of what a
decoded object costs, and `Meter`, which counts that cost during one decode,
enforces the limits and calls the progress hook. Pure code, no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, Protocol

from grpyc._brine_encode import TAG_TUPLE_1

__all__ = [
    "DEFAULT_MAX_FROZENSET_ITEMS",
    "MAX_EQUAL_HASHES",
    "PROGRESS_EVERY",
    "RECURSIVE_LEVELS",
    "UNLIMITED_INT_DIGITS",
    "BrineError",
    "Cursor",
    "Meter",
    "charge",
    "offset",
]

# Items a decoded frozenset may have. Building a set is linear only while the
# items' hashes spread: ints whose probe sequences share a tail make each
# insertion walk past the items placed there before, n*n/20 cheap probes at
# worst (~0.1 s for this many). The constructions tried cost far less (ints
# j << 40, whose first six probes collide: 2.5 ms, tests/test_brine_limits.py).
# Building one frozenset is one C call; a reader yields between them.
DEFAULT_MAX_FROZENSET_ITEMS: Final = 16384

# Items of one frozenset that may share one hash value. Items with equal
# hashes are compared with each other when inserted: n of them cost n*n/2
# comparisons (40,000 ints k * (2**61 - 1), which all hash to 0, take 8 s).
# Distinct honest values share a 64-bit hash almost never (-1 and -2 do).
MAX_EQUAL_HASHES: Final = 16

# The digit limit when `sys.get_int_max_str_digits()` is 0 (unlimited):
# parsing n decimal digits costs ~n*n/10**6 ms (20,000 digits: ~2 ms).
UNLIMITED_INT_DIGITS: Final = 20_000

# Bytes of estimated decoded objects between two calls of `progress`: about
# 1-2 ms of decoding at the slowest measured rate (~6 ns per byte, ints).
PROGRESS_EVERY: Final = 256 * 1024

# Levels decoded by plain recursion, the fastest way in CPython 3.11; deeper
# levels go on an explicit stack, so depth never meets the recursion limit.
# RPC messages nest about 6 levels; 32 costs at most ~64 frames of headroom.
RECURSIVE_LEVELS: Final = 32

_NO_LIMIT: Final = 1 << 62
_MAX_FUEL: Final = (1 << 30) - 1  # a one-digit int: a little faster to add to


class BrineError(ValueError):
    """Bytes that are not a valid brine encoding (PROTOCOL.md section 3), or past a limit."""

    __module__ = "grpyc.brine"  # its public home


# ---------------------------------------------------------------------------
# decoded size
# ---------------------------------------------------------------------------

# What load_measured charges for each object it makes: sys.getsizeof on
# CPython 3.11, 64-bit (GC header included; a container's slots are part of
# its size). Objects the interpreter shares cost nothing: None, bools, ints
# -5..256, empty str/bytes/tuple, 1-char latin-1 strs, 1-byte bytes. load
# shares the immediate ints -48..-6 and the empty frozenset too, so no wire
# byte can decode into a new object of its own.
TUPLE_SIZE: Final = 40  # + 8 per item
SLOT_SIZE: Final = 8
SLICE_SIZE: Final = 56
FLOAT_SIZE: Final = 24
COMPLEX_SIZE: Final = 32
BYTES_SIZE: Final = 33  # + 1 per byte
ASCII_SIZE: Final = 49  # + 1 per char
INT_SIZE: Final = 24  # + 4 per 30 bits
FROZENSET_SIZE: Final = 216  # with up to 4 items; bigger ones are measured once built
# By tag: the size of a tuple of 1..4 items (tags 0x10..0x13).
TUPLE_SIZES: Final = (0,) * TAG_TUPLE_1 + tuple(40 + 8 * n for n in range(1, 5))
# By length in chars (sign included): the size of the largest int that long,
# at most 4 bytes over the real one. Longer ints are measured.
INT_SIZES: Final = tuple(24 + 4 * max(1, (int(n * 3.3219281) + 30) // 30) for n in range(65))


class Cursor(Protocol):
    """A bytes iterator used as a read cursor over the input.

    `next()` is one C call; `__length_hint__` and `__setstate__` read and set
    its position (a position past the end clamps to the end).
    """

    def __next__(self) -> int: ...
    def __length_hint__(self) -> int: ...
    def __setstate__(self, position: int) -> None: ...


def offset(cursor: Cursor, data: bytes) -> int:
    return len(data) - cursor.__length_hint__()


class Meter:
    """The limits and the running cost of one decode.

    Hot paths charge with ``meter.fuel -= cost`` and call `checkpoint` once
    fuel is negative: fuel is what is left until the next decision (a
    `progress` call or the size limit). Work slower than its size says (long
    ints) is a penalty: it brings `progress` sooner but is no memory.
    """

    __slots__ = (
        "_next_progress",
        "_penalty",
        "_progress",
        "_target",
        "fast_depth",
        "fuel",
        "max_depth",
        "max_frozenset_items",
        "max_size",
        "splice_at",
        "splice_value",
    )

    def __init__(
        self,
        max_depth: int,
        max_size: int | None,
        max_frozenset_items: int,
        progress: Callable[[], object] | None,
    ) -> None:
        # Plain tests, not min(): a meter is made per decode. Containers go to
        # _load_nested from fast_depth on.
        self.max_depth = max_depth
        self.fast_depth = max_depth if max_depth < RECURSIVE_LEVELS else RECURSIVE_LEVELS
        if max_size is None:
            max_size = _NO_LIMIT
        self.max_size = max_size
        self.max_frozenset_items = max_frozenset_items
        self._progress = progress
        self._penalty = 0
        next_progress = _NO_LIMIT if progress is None else PROGRESS_EVERY
        self._next_progress = next_progress
        target = next_progress if next_progress < max_size else max_size
        if target > _MAX_FUEL:
            target = _MAX_FUEL
        self._target = self.fuel = target
        # A big bytes value cut out of the input (`grpyc.brine.load_measured`):
        # its bytes belong at offset splice_at; -1 once used, or without one.
        self.splice_at = -1
        self.splice_value: bytes | None = None

    def size(self) -> int:
        """Estimated bytes of the objects decoded so far."""
        return self._target - self.fuel - self._penalty

    def checkpoint(self, cursor: Cursor, data: bytes) -> None:
        """Fuel ran out: enforce the size limit, call `progress` when due, refuel."""
        spent = self._target - self.fuel
        size = spent - self._penalty
        if size > self.max_size:
            raise self._too_big(size, cursor, data)
        if spent >= self._next_progress:
            # Due at every multiple of PROGRESS_EVERY, once after a jump past several.
            self._next_progress += PROGRESS_EVERY
            if self._next_progress <= spent:
                self._next_progress = spent + PROGRESS_EVERY
            self._call_progress()
        self._target = min(self._next_progress, self.max_size + self._penalty, spent + _MAX_FUEL)
        self.fuel = self._target - spent

    def admit(self, cost: int, cursor: Cursor, data: bytes) -> None:
        """Refuse now if `cost` more bytes would pass the limit (before allocating them).

        Callers skip it when ``cost <= fuel``: fuel never exceeds what is left
        under the limit.
        """
        size = self.size() + cost
        if size > self.max_size:
            raise self._too_big(size, cursor, data)

    def penalize(self, work: int, cursor: Cursor, data: bytes) -> None:
        """Count `work` towards the next `progress` call, not towards the size."""
        self._penalty += work
        self.fuel -= work
        if self.fuel < 0:
            self.checkpoint(cursor, data)

    def _too_big(self, size: int, cursor: Cursor, data: bytes) -> BrineError:
        return BrineError(
            f"decoded value of about {size} bytes exceeds max_decoded_size={self.max_size} "
            f"at offset {offset(cursor, data)}"
        )

    def _call_progress(self) -> None:
        assert self._progress is not None
        try:
            self._progress()
        except (StopIteration, IndexError, struct.error) as exc:
            # load reports these as truncated input: the hook's must not pass for it
            raise RuntimeError(f"brine progress hook raised {exc!r}") from exc


def charge(meter: Meter, cost: int, cursor: Cursor, data: bytes) -> None:
    meter.fuel -= cost
    if meter.fuel < 0:
        meter.checkpoint(cursor, data)
