"""grpyc.brine's bounds on a decode: work, decoded size, and the progress hook.

Hostile inputs are raw bytes. Timing bounds are generous (the machine is
shared); the pacing of `progress` is checked by counting calls, which does
not depend on the machine.
"""

import gc
import itertools
import sys
import time
import tracemalloc

import pytest

from grpyc import brine
from grpyc.brine import (
    DEFAULT_MAX_FROZENSET_ITEMS,
    I4,
    MAX_EQUAL_HASHES,
    PROGRESS_EVERY,
    UNLIMITED_INT_DIGITS,
    BrineError,
    dump,
    load,
    load_measured,
)

HASH_MODULUS = 2**61 - 1  # hash(k * HASH_MODULUS) == 0 for every int k


def big_tuple(item_encoding, count):
    """A tuple of `count` copies of one encoded item (4-byte count form)."""
    return b"\x15" + I4.pack(count) + item_encoding * count


def frozenset_of(items):
    """The encoding of a frozenset of `items`, without building the set here."""
    return b"\x1a" + dump(tuple(items))


def traced(func):
    """(result, bytes still allocated after func, peak bytes while it ran)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = func()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, current - before, peak - before


# ------------------------------------------------------------ decode cost


def test_a_megabyte_of_colliding_frozenset_items_is_refused_at_once():
    # 40,000 ints that all hash to 0 (finding 3: 8 s in the reader, O(n*n)).
    hostile = frozenset_of(k * HASH_MODULUS for k in range(1, 40_001))
    assert len(hostile) > 990_000
    started = time.perf_counter()
    with pytest.raises(BrineError, match="frozenset of 40000 items at offset 6 exceeds "):
        load(hostile)
    with pytest.raises(BrineError, match=f"max_frozenset_items={DEFAULT_MAX_FROZENSET_ITEMS}"):
        load(hostile)
    with pytest.raises(BrineError, match="has more than MAX_EQUAL_HASHES=16 items with one hash"):
        load(hostile, max_frozenset_items=10**6)
    assert time.perf_counter() - started < 1.0


def test_frozensets_up_to_the_equal_hash_bound_load():
    allowed = [k * HASH_MODULUS for k in range(1, MAX_EQUAL_HASHES + 1)]
    assert load(frozenset_of(allowed)) == frozenset(allowed)
    # Groups of 16 spread over many hashes are honest enough and stay linear.
    grouped = [k * HASH_MODULUS + g for g in range(1000) for k in range(1, 17)]
    assert len(load(frozenset_of(grouped))) == 16_000
    with pytest.raises(BrineError, match="more than MAX_EQUAL_HASHES=16 items with one hash"):
        load(frozenset_of([*allowed, 17 * HASH_MODULUS]))
    # -1 and -2 share a hash: equal hashes are counted, not equal values.
    assert load(frozenset_of([-1, -2])) == frozenset({-1, -2})


def test_max_frozenset_items_is_exact():
    assert len(load(frozenset_of(range(DEFAULT_MAX_FROZENSET_ITEMS)))) == 16384
    with pytest.raises(BrineError, match="frozenset of 16385 items at offset 6 exceeds"):
        load(frozenset_of(range(DEFAULT_MAX_FROZENSET_ITEMS + 1)))
    assert len(load(frozenset_of(range(20)), max_frozenset_items=20)) == 20
    with pytest.raises(BrineError, match="frozenset of 21 items at offset 3 exceeds max_fr"):
        load(frozenset_of(range(21)), max_frozenset_items=20)


def test_ints_whose_first_probes_collide_build_a_frozenset_fast():
    # Distinct hashes equal in their low 40 bits share the first six probes.
    items = [j << 40 for j in range(1, DEFAULT_MAX_FROZENSET_ITEMS + 1)]
    encoded = frozenset_of(items)
    started = time.perf_counter()
    assert len(load(encoded)) == DEFAULT_MAX_FROZENSET_ITEMS
    assert time.perf_counter() - started < 0.25  # measured: ~10 ms


def test_unhashable_frozenset_items_are_refused_past_the_hash_check_too():
    items = b"".join([dump(n) for n in range(20)] + [dump(slice(1, 2, 3))])
    with pytest.raises(BrineError, match="frozenset item is not hashable"):
        load(b"\x1a\x14" + bytes([21]) + items)


def test_int_digits_are_bounded_even_when_the_interpreter_limit_is_off(unlimited_int_digits):
    assert sys.get_int_max_str_digits() == 0
    digits = b"7" * UNLIMITED_INT_DIGITS
    assert load(b"\x17" + I4.pack(len(digits)) + digits) == int(digits)
    hostile = b"7" * (16 * 1024 * 1024)  # parsing would take hours
    started = time.perf_counter()
    with pytest.raises(BrineError, match=r"int of 16777216 digits at offset 5 exceeds .*=20000"):
        load(b"\x17" + I4.pack(len(hostile)) + hostile)
    assert time.perf_counter() - started < 0.5


@pytest.fixture
def unlimited_int_digits():
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    yield
    sys.set_int_max_str_digits(limit)


# ------------------------------------------------------------ progress


def hostile_frames():
    """Worst cases by family, about 1 MB each: (name, encoding, work bound)."""
    d4300 = b"\x17" + I4.pack(4300) + b"9" * 4300
    grouped = frozenset_of(k * HASH_MODULUS + g for g in range(1000) for k in range(1, 17))
    return [
        ("immediate ints", big_tuple(b"\x20", 1_000_000)),
        ("1-tuple chains", big_tuple(b"\x10" * 19 + b"\x00", 50_000)),
        ("4300-digit ints", big_tuple(d4300, 240)),
        ("2-char strs", big_tuple(b"\x08\x0bab", 250_000)),
        ("floats", big_tuple(dump(1.5), 110_000)),
        ("equal-hash groups", big_tuple(grouped, 4)),
        ("boxed ints", big_tuple(dump((1, 10**6)), 150_000)),
    ]


@pytest.mark.parametrize(("name", "encoded"), hostile_frames(), ids=lambda v: str(v)[:20])
def test_progress_is_called_after_every_bounded_piece_of_work(name, encoded):
    calls = []
    # Timed without the cyclic GC, whose passes over the whole process heap
    # (the test suite's too) are not the decoder's work.
    gc.disable()
    try:
        started = time.perf_counter()
        value, size = load_measured(encoded, progress=lambda: calls.append(time.perf_counter()))
        marks = [started, *calls, time.perf_counter()]
    finally:
        gc.enable()
    assert len(encoded) > 900_000
    # Deterministic: a call at each multiple of PROGRESS_EVERY bytes of objects;
    # one per frozenset, whose size comes at once (one C call builds it).
    minimum = 4 if name == "equal-hash groups" else size // PROGRESS_EVERY - 1
    assert len(calls) >= minimum
    assert len(calls) >= 4
    # Measured 1-3 ms apart (p50); the bound leaves room for a loaded machine.
    assert max(b - a for a, b in itertools.pairwise(marks)) < 0.25
    assert type(value) is tuple


def test_long_ints_bring_progress_sooner_than_their_size_alone():
    d4300 = b"\x17" + I4.pack(4300) + b"9" * 4300
    calls = []
    _, size = load_measured(big_tuple(d4300, 240), progress=lambda: calls.append(1))
    assert size < 2 * PROGRESS_EVERY  # 240 ints of 1.8 KiB: about 440 KiB
    assert len(calls) >= 15  # ~18 KiB of work each: 240 * 18 KiB / 256 KiB


def test_progress_is_not_called_for_small_values():
    calls = []
    assert load_measured(dump((1, "x" * 1000)), progress=lambda: calls.append(1))[0][0] == 1
    assert calls == []


class AbortError(Exception):
    pass


def test_progress_may_abort_the_decode():
    def hook():
        raise AbortError("stop")

    with pytest.raises(AbortError, match="stop"):
        load_measured(big_tuple(b"\x20", 1_000_000), progress=hook)


def test_a_progress_error_cannot_pass_for_truncated_input():
    def hook():
        raise IndexError("oops")

    with pytest.raises(RuntimeError, match="brine progress hook raised IndexError"):
        load_measured(big_tuple(b"\x20", 1_000_000), progress=hook)


# ------------------------------------------------------------ decoded size

MEASURED_CORPUS = {
    "immediate ints": tuple(range(-48, 160)) * 500,
    "ints": tuple(range(1000, 101_000)),
    "big ints": tuple(10**40 + i for i in range(20_000)),
    "negative ints": tuple(-(10**12) - i for i in range(20_000)),
    "floats": tuple(i / 7 for i in range(50_000)),
    "complex": tuple(complex(i, i) for i in range(20_000)),
    "ascii strs": tuple(f"name{i}" for i in range(30_000)),
    "latin-1 strs": tuple(f"é{i}" for i in range(30_000)),
    "cjk strs": tuple(f"日本{i}" for i in range(30_000)),
    "astral strs": tuple(f"🐍{i}" for i in range(30_000)),
    "bytes": tuple(b"x" * (i % 50 + 2) for i in range(30_000)),
    "one big str": "x" * 1_000_000,
    "one big bytes": b"y" * 1_000_000,
    "nested tuples": tuple(((i,), (i, i), (i, i, i)) for i in range(300, 10_300)),
    "frozensets": tuple(frozenset(range(i, i + 20)) for i in range(2000)),
    "slices": tuple(slice(i, i + 1000, 2) for i in range(10_000)),
    "rpc messages": tuple(
        (i, (8, (2, ((4, ("mod.Cls", 140234 + i, 140567)), (1, "echo"), (2, ((1, i),)), (2, ())))))
        for i in range(3000)
    ),
}


@pytest.mark.parametrize("name", sorted(MEASURED_CORPUS))
def test_decoded_size_estimate_matches_tracemalloc(name):
    encoded = dump(MEASURED_CORPUS[name])
    (value, estimate), kept, _ = traced(lambda: load_measured(encoded))
    assert value == MEASURED_CORPUS[name]
    # Measured: within 0.1% (the estimate counts what sys.getsizeof counts).
    assert 0.98 * kept <= estimate <= 1.02 * kept, (estimate, kept)


def test_load_measured_counts_nothing_for_shared_objects():
    for value in (None, True, (), b"", "", b"x", "x", 7, -48, 256, frozenset(), ...):
        assert load_measured(dump(value)) == (value, 0)
    assert load_measured(dump((1,))) == ((1,), 48)
    assert load_measured(dump((1, 2.0))) == ((1, 2.0), 56 + 24)


def test_one_byte_ints_decode_to_shared_objects():
    # finding 4: each 0x20..0x2a byte used to become a new 28-byte int.
    assert load(b"\x20") is load(b"\x20") == -48
    assert load(b"\x1a\x02") is load(b"\x1a\x02") == frozenset()
    encoded = big_tuple(b"\x20", 100_000)
    _, kept, _ = traced(lambda: load(encoded))
    # The tuple's slots, nothing per item (a new int each would be 2.8 MB). The
    # 4 KiB is what else the interpreter may allocate meanwhile: one CI run kept
    # 801,038 bytes against a 1,000-byte allowance.
    assert kept < 8 * 100_000 + 4096


def test_max_decoded_size_is_exact():
    encoded = dump(tuple(range(1000, 2000)))
    value, size = load_measured(encoded)
    assert size == 40 + 8 * 1000 + 28 * 1000
    assert load_measured(encoded, max_decoded_size=size) == (value, size)
    with pytest.raises(BrineError, match=f"exceeds max_decoded_size={size - 1} at offset"):
        load_measured(encoded, max_decoded_size=size - 1)


@pytest.mark.parametrize(
    ("hostile", "message"),
    [
        (big_tuple(b"\x10" * 19 + b"\x00", 200_000), "decoded value of about"),
        (big_tuple(b"\x20", 4_000_000), r"about 32000040 bytes exceeds max_decoded_size"),
        (b"\x0f" + I4.pack(8_000_000) + b"b" * 8_000_000, "about 8000033 bytes exceeds max_"),
        (b"\x08\x0f" + I4.pack(8_000_000) + b"s" * 8_000_000, "about 8000049 bytes exceeds max"),
        (frozenset_of(range(100_000)), "about 3200216 bytes exceeds max_decoded_size"),
    ],
    ids=["tuple-chains", "big-tuple", "bytes", "str", "frozenset"],
)
def test_max_decoded_size_stops_before_allocating_much(hostile, message):
    limit = 1024 * 1024
    errors = []

    def attempt():
        try:
            load_measured(hostile, max_decoded_size=limit, max_frozenset_items=10**6)
        except BrineError as exc:
            errors.append(exc)

    _, _, peak = traced(attempt)
    assert len(errors) == 1
    assert message in str(errors[0])
    assert f"max_decoded_size={limit}" in str(errors[0])
    # What was decoded before the refusal, plus item lists in flight.
    assert peak < 3 * limit


def test_load_keeps_its_rpyc_signature():
    data = b"\x01" + dump((7, ("x", 1)))
    assert load(data, 5, start=1) == (7, ("x", 1))
    with pytest.raises(BrineError, match="max_depth=1 at offset 3"):
        load(data, 1, start=1)
    assert brine.load_measured(data, 5, start=1) == ((7, ("x", 1)), 56 + 56)
