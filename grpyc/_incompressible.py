# cython: boundscheck=False, wraparound=False
"""Telling, without deflating it, that deflate cannot shrink a sample.

``"auto"`` compression rates a 1 KiB sample of each big payload with zlib
(`grpyc.framing`). For data that does not compress (random bytes, media,
archives) that costs ~13 us, most of it building Huffman trees for nothing.
`cannot_shrink` proves such a verdict for most of those samples in ~2 us;
when it cannot, zlib decides as before, so the verdicts stay zlib's.

The proof: deflate shrinks data by matches, which need a 3-byte sequence
seen before, and by giving bytes codes shorter than 8 bits. With no 3-byte
sequence twice in the sample there is no match, only literals; and no
prefix code spends fewer bits on them in total than their entropy, the
sum of ``-log2(c / n)`` over the bytes, byte ``b`` seen ``c`` times in
``n`` (Shannon). Blocks, stored or fixed, cost more, not less. So if that
sum exceeds the bits allowed, no deflate of the sample fits in them.

Compiled (setup.py), this is C loops over the bytes; as pure Python it is
~100x slower than zlib, so callers use it only when `COMPILED`.
"""

from __future__ import annotations

from array import array
from math import log2

__all__ = ["COMPILED", "LONGEST_SAMPLE", "cannot_shrink"]

# Whether this module runs as a C extension (setup.py, grpyc/_accel.py).
COMPILED = not __file__.endswith(".py")

# The longest sample it rates: `grpyc.framing`'s (it takes 1 KiB).
LONGEST_SAMPLE = 1024

# zlib may end a block early (a 1 KiB sample with the sampling deflater's
# small tables goes out as blocks of 1,023 and 1 byte), and each block has
# a code of its own: split in two, the entropy of the parts can be lower
# than the whole's by at most the bits it takes to say which part each
# byte is in (11.4 for 1,023 + 1). The margin covers that and rounding.
_MARGIN_BITS = 16.0

# Open addressing for the sample's 3-byte sequences: 4x as many slots as
# the longest sample has sequences keeps the probes short; past
# `_PROBES_PER_BYTE` probes a byte on average (data made to collide) it
# gives up and zlib decides.
_SLOTS = 4 * LONGEST_SAMPLE
_SLOT_MASK = _SLOTS - 1
_PROBES_PER_BYTE = 4
_NO_SLOTS = bytes(4 * _SLOTS)
_NO_COUNTS = bytes(4 * 256)

# c * log2(c) for every count a byte can have in a sample.
_C_LOG2_C = array(
    "d", [count * log2(count) if count else 0.0 for count in range(LONGEST_SAMPLE + 1)]
)


def cannot_shrink(sample: memoryview, fraction: float) -> bool:
    """True if no deflate of `sample` (bytes, format "B") can be as small
    as `fraction` of it; False if that may be possible or it cannot tell."""
    length = len(sample)
    if length < 3 or length > LONGEST_SAMPLE or sample.format != "B":
        return False
    data = sample
    if not _no_sequence_twice(data, length):
        return False
    bits_allowed = 8.0 * length * fraction
    return _entropy_bits(data, length) > bits_allowed + _MARGIN_BITS


def _no_sequence_twice(data: memoryview, length: int) -> bool:
    """Whether no 3-byte sequence occurs twice in `data` (False too if it gives up)."""
    slots = array("I", _NO_SLOTS)  # each: a sequence plus one (0: free)
    probes_left = _PROBES_PER_BYTE * length
    sequence = data[0] << 8 | data[1]
    for index in range(2, length):
        sequence = ((sequence << 8) | data[index]) & 0xFFFFFF
        key = sequence + 1
        slot = (sequence ^ (sequence >> 11)) & _SLOT_MASK
        held = slots[slot]
        while held != 0:
            if held == key:
                return False  # deflate may match it
            probes_left -= 1
            if probes_left < 0:
                return False
            slot = (slot + 1) & _SLOT_MASK
            held = slots[slot]
        slots[slot] = key
    return True


def _entropy_bits(data: memoryview, length: int) -> float:
    """The fewest bits any prefix code can spend on the bytes of `data`."""
    counts = array("I", _NO_COUNTS)
    for index in range(length):
        counts[data[index]] += 1
    total = _C_LOG2_C[length]
    for byte in range(256):
        total -= _C_LOG2_C[counts[byte]]
    return total
