"""grpyc.brine: exact encodings, round trips, and hostile input (PROTOCOL.md section 3).

Stock-rpyc interop lives in tests/interop/test_brine_interop.py, which reuses
CORPUS, canonical and the strategies defined here.
"""

import ast
import contextlib
import enum
import re
import struct
import sys
import time
import tracemalloc
from collections import namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpyc import brine
from grpyc._accel import source_path
from grpyc.brine import DEFAULT_MAX_DEPTH, I4, BrineError, dump, dumpable, load


def value_id(value):
    """A test id from `value`'s repr that every process makes alike (pytest-xdist's
    workers must collect the same ids): no object addresses, and set items in
    sorted order (a set's order follows the process's hash seed)."""
    return _stable_repr(value)[:40]


def _stable_repr(value):
    kind = type(value)
    if kind in (set, frozenset):
        items = ", ".join(sorted(map(_stable_repr, value)))
        return f"{kind.__name__}({{{items}}})" if items else f"{kind.__name__}()"
    if kind is tuple:
        items = ", ".join(map(_stable_repr, value))
        return f"({items},)" if len(value) == 1 else f"({items})"
    if kind is list:
        return f"[{', '.join(map(_stable_repr, value))}]"
    if kind is dict:
        return (
            "{" + ", ".join(f"{_stable_repr(k)}: {_stable_repr(v)}" for k, v in value.items()) + "}"
        )
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def canonical(value):
    """A hashable form that compares floats by bit pattern (NaN-aware, -0.0 apart)."""
    kind = type(value)
    if kind is float:
        return ("float", struct.pack("!d", value))
    if kind is complex:
        return ("complex", struct.pack("!dd", value.real, value.imag))
    if kind is tuple:
        return ("tuple", tuple(canonical(item) for item in value))
    if kind is frozenset:
        return ("frozenset", frozenset(canonical(item) for item in value))
    if kind is slice:
        return ("slice", canonical(value.start), canonical(value.stop), canonical(value.step))
    return (kind.__name__, value)


def nested(depth, leaf=None, wrap=lambda inner: (inner,)):
    value = leaf
    for _ in range(depth):
        value = wrap(value)
    return value


TYPICAL_MESSAGES = [
    (17, (8, (2, ((4, ("mod.Cls", 140234, 140567)), (1, "echo"), (2, ((1, 42),)), (2, ()))))),
    (17, (1, None)),
    (123456, (4, ("builtins.dict", 140234567, 140567890))),
    ("RPYC", "QUERY", ("ECHO",)),
]

# Values at every tag and length boundary of PROTOCOL.md section 3.
CORPUS = [
    None,
    True,
    False,
    NotImplemented,
    Ellipsis,
    *[b"x" * n for n in (0, 1, 2, 3, 4, 5, 255, 256)],
    bytes(range(256)),
    "",
    "a",
    "héllo wörld",
    "日本語 🐍",
    "\x00",
    "s" * 255,
    "é" * 128,
    "long" * 300,
    *[-(10**9), -50, -49, -48, -47, -1, 0, 1, 100, 158, 159, 160, 161, 2**31, 2**64],
    int("9" * 255),
    int("9" * 256),
    -int("9" * 254),
    -int("9" * 255),
    0.0,
    -0.0,
    1.5,
    -2.75e-300,
    5e-324,
    float("inf"),
    float("-inf"),
    float("nan"),
    1 + 2j,
    complex(-0.0, float("nan")),
    complex(float("inf"), -1),
    slice(None),
    slice(1, 2, 3),
    slice(None, -1, None),
    slice("a", (1, 2), b"c"),
    *[tuple(range(n)) for n in (0, 1, 2, 3, 4, 5, 255, 256)],
    (None, True, "x", b"y", 1.0, 2j, ..., NotImplemented),
    ((), ((),), (((),),)),
    nested(40, leaf="deep"),
    frozenset(),
    frozenset({1, 2, 3}),
    frozenset({frozenset(), frozenset({frozenset({"x"})})}),
    frozenset({(1, "a"), (2, (b"b", None))}),
    (frozenset({1}), slice(1, None), (frozenset(),)),
    *TYPICAL_MESSAGES,
]

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.complex_numbers(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.binary(max_size=80)
    | st.sampled_from([NotImplemented, Ellipsis])
)
_hashable = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=6).map(tuple) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)
dumpable_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=6).map(tuple)
        | st.frozensets(_hashable, max_size=4)
        | st.builds(slice, inner, inner, inner)
    ),
    max_leaves=20,
)


@pytest.fixture
def unlimited_int_digits():
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    yield
    sys.set_int_max_str_digits(limit)


def peak_allocation(func):
    """Bytes at the peak of traced allocations while func runs."""
    tracemalloc.start()
    try:
        func()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# ------------------------------------------------------------ exact encodings


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, b"\x00"),
        (b"", b"\x01"),
        ((), b"\x02"),
        (True, b"\x03"),
        (False, b"\x04"),
        (NotImplemented, b"\x05"),
        (Ellipsis, b"\x06"),
        ("", b"\x08\x01"),
        ("é", b"\x08\x0b\xc3\xa9"),
        (b"a", b"\x0aa"),
        (b"abcd", b"\x0dabcd"),
        (b"abcde", b"\x0e\x05abcde"),
        (b"x" * 255, b"\x0e\xff" + b"x" * 255),
        (b"x" * 256, b"\x0f\x00\x00\x01\x00" + b"x" * 256),
        ("y" * 256, b"\x08\x0f\x00\x00\x01\x00" + b"y" * 256),
        ((1,), b"\x10\x51"),
        ((1, 2, 3, 4), b"\x13\x51\x52\x53\x54"),
        (tuple([None] * 5), b"\x14\x05" + b"\x00" * 5),
        (tuple([None] * 256), b"\x15\x00\x00\x01\x00" + b"\x00" * 256),
        (-48, b"\x20"),
        (0, b"\x50"),
        (159, b"\xef"),
        (-49, b"\x16\x03-49"),
        (160, b"\x16\x03160"),
        (int("9" * 255), b"\x16\xff" + b"9" * 255),
        (int("9" * 256), b"\x17\x00\x00\x01\x00" + b"9" * 256),
        (1.0, b"\x18\x3f\xf0\x00\x00\x00\x00\x00\x00"),
        (-0.0, b"\x18\x80" + b"\x00" * 7),
        (slice(1, None, 2), b"\x19\x12\x51\x00\x52"),
        (frozenset(), b"\x1a\x02"),
        (frozenset({7}), b"\x1a\x10\x57"),
        (1 + 2j, b"\x1b\x3f\xf0" + b"\x00" * 6 + b"\x40" + b"\x00" * 7),
    ],
)
def test_encoding_follows_the_tag_table(value, encoded):
    assert dump(value) == encoded
    assert canonical(load(encoded)) == canonical(value)


def test_struct_helpers_are_big_endian():
    assert brine.I1.pack(255) == b"\xff"
    assert I4.pack(1) == b"\x00\x00\x00\x01"
    assert brine.F8.pack(1.0) == b"\x3f\xf0" + b"\x00" * 6
    assert brine.C16.unpack(brine.C16.pack(1.0, -2.0)) == (1.0, -2.0)


def test_public_names():
    assert sorted(brine.__all__) == sorted(
        [
            *("BrineError", "C16", "DEFAULT_MAX_DEPTH", "F8", "I1", "I4", "dump", "dumpable"),
            *("load", "load_measured", "DEFAULT_MAX_FROZENSET_ITEMS", "MAX_EQUAL_HASHES"),
            *("PROGRESS_EVERY", "UNLIMITED_INT_DIGITS", "SCALAR_TYPES"),
            # big values kept apart (vectored writes, spliced reads)
            *("SEPARATE_SIZE", "SPLICE_SCAN", "big_value_at", "dump_pieces"),
        ]
    )
    assert issubclass(BrineError, ValueError)
    assert BrineError.__module__ == "grpyc.brine"
    # The types taken whole: one value of each is dumpable, a container is not one.
    samples = [None, True, 1, 1.5, 2j, b"b", "s", NotImplemented, ...]
    assert {type(value) for value in samples} == brine.SCALAR_TYPES
    assert all(brine.dumpable(value) for value in samples)
    assert not {tuple, frozenset, slice} & brine.SCALAR_TYPES
    assert DEFAULT_MAX_DEPTH == 1000


def _imports(module):
    imported = set()
    for node in ast.walk(ast.parse(source_path(module).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    return imported


def test_brine_imports_nothing_but_the_standard_library_basics():
    from grpyc import _brine_decode, _brine_encode, _brine_limits, _brine_small

    basics = {"__future__", "collections.abc", "operator", "struct", "sys", "types", "typing"}
    private = {f"grpyc._brine_{part}" for part in ("decode", "encode", "limits", "small")}
    assert _imports(brine) <= basics | private
    assert _imports(_brine_decode) <= basics | {"grpyc._brine_encode", "grpyc._brine_limits"}
    assert _imports(_brine_small) <= basics | private - {"grpyc._brine_small"}
    assert _imports(_brine_limits) <= basics | {"grpyc._brine_encode"}
    assert _imports(_brine_encode) <= basics


# ------------------------------------------------------------ round trips


@pytest.mark.parametrize("value", CORPUS, ids=value_id)
def test_round_trip(value):
    assert canonical(load(dump(value))) == canonical(value)


@pytest.mark.parametrize("value", CORPUS, ids=value_id)
def test_everything_in_the_corpus_is_dumpable(value):
    assert dumpable(value) is True


def test_big_bytes_round_trip():
    payload = bytes(range(256)) * 4096
    encoded = dump(payload)
    assert encoded[:5] == b"\x0f" + I4.pack(len(payload))
    assert load(encoded) == payload
    assert load(dump((1, payload, "x"))) == (1, payload, "x")


def test_huge_ints_round_trip(unlimited_int_digits):
    for value in (10**5000, -(10**5000), 7**9000):
        digits = str(value).encode()
        assert dump(value) == b"\x17" + I4.pack(len(digits)) + digits
        assert load(dump(value)) == value


def test_dump_of_an_int_past_the_digit_limit_fails_as_in_python():
    with pytest.raises(ValueError, match="Exceeds the limit"):
        dump(10**5000)


def test_bool_is_not_encoded_as_int():
    assert dump((True, 1, False, 0)) == b"\x13\x03\x51\x04\x50"
    assert [type(item) for item in load(b"\x13\x03\x51\x04\x50")] == [bool, int, bool, int]


@pytest.mark.parametrize("data_type", [bytes, bytearray, memoryview])
def test_load_takes_any_bytes_like_buffer(data_type):
    encoded = dump(TYPICAL_MESSAGES[0])
    assert load(data_type(encoded)) == TYPICAL_MESSAGES[0]
    assert load(memoryview(b"\x01" + encoded)[1:]) == TYPICAL_MESSAGES[0]


@pytest.mark.parametrize("bad_input", ["\x00", 3, None, [0]])
def test_load_rejects_non_buffers(bad_input):
    with pytest.raises(TypeError, match="load takes bytes, bytearray or memoryview"):
        load(bad_input)


def test_containers_past_the_recursive_levels_round_trip():
    mixed = nested(
        120, leaf=(1.5, "leaf"), wrap=lambda inner: (inner, frozenset({len(str(inner))}), 3)
    )
    with_slices = nested(90, leaf=None, wrap=lambda inner: slice(inner, "s", None))
    with_sets = nested(90, leaf=frozenset(), wrap=lambda inner: frozenset({inner, 1}))
    long_tuples = nested(60, leaf=0, wrap=lambda inner: (inner, *range(300)))
    for value in (mixed, with_slices, with_sets, long_tuples):
        assert canonical(load(dump(value))) == canonical(value)


# ------------------------------------------------------------ dumpable / dump errors


class MyInt(int):
    pass


class MyStr(str):
    pass


class MyTuple(tuple):
    __slots__ = ()


class MyFrozenset(frozenset):
    pass


class Color(enum.IntEnum):
    RED = 1


Point = namedtuple("Point", "x y")

NOT_DUMPABLE = [
    MyInt(1),
    MyStr("a"),
    MyTuple((1,)),
    MyFrozenset({1}),
    Color.RED,
    Point(1, 2),
    bytearray(b"x"),
    memoryview(b"x"),
    [1],
    {1: 2},
    {1},
    object(),
    int,
    (1, [2]),
    ((1, (2, object())),),
    frozenset({MyInt(3)}),
    frozenset({(1, MyStr("x"))}),
    slice(1, [2], None),
    slice(None, None, (MyInt(1),)),
]


@pytest.mark.parametrize("value", NOT_DUMPABLE, ids=lambda value: type(value).__name__)
def test_only_exact_types_are_dumpable(value):
    assert dumpable(value) is False


@pytest.mark.parametrize("value", NOT_DUMPABLE, ids=lambda value: type(value).__name__)
def test_dump_of_a_non_dumpable_value_names_its_type(value):
    with pytest.raises(TypeError, match=r"cannot dump [\w.]+: brine takes only"):
        dump(value)


def test_dump_type_error_names_the_offending_type():
    with pytest.raises(TypeError, match=r"cannot dump tests\.test_brine\.MyInt:"):
        dump((1, (2, MyInt(3))))
    with pytest.raises(TypeError, match=r"cannot dump builtins\.list:"):
        dump((None, [1]))


def test_dumpable_answers_by_type_even_where_dump_then_fails():
    assert dumpable(10**5000) is True
    assert dumpable("\ud800") is True
    with pytest.raises(UnicodeEncodeError):
        dump("\ud800")


def test_nesting_up_to_the_default_max_depth_is_dumpable_and_loads():
    for wrap in (lambda inner: (inner,), lambda inner: frozenset({inner})):
        deepest = nested(DEFAULT_MAX_DEPTH, leaf=1, wrap=wrap)
        assert dumpable(deepest) is True
        encoded = dump(deepest)
        assert dump(load(encoded)) == encoded
    slices = nested(DEFAULT_MAX_DEPTH, leaf=1, wrap=lambda inner: slice(inner))
    assert dump(load(dump(slices))) == dump(slices)


@pytest.mark.parametrize(
    "too_deep",
    [
        nested(DEFAULT_MAX_DEPTH + 1),
        nested(DEFAULT_MAX_DEPTH + 1, wrap=lambda inner: slice(inner)),
        nested(DEFAULT_MAX_DEPTH, leaf=frozenset()),
        nested(DEFAULT_MAX_DEPTH, leaf=slice(None)),
    ],
    ids=["tuples", "slices", "tuples-then-empty-frozenset", "tuples-then-slice"],
)
def test_nesting_past_the_default_max_depth_is_refused_by_dump_and_dumpable(too_deep):
    assert dumpable(too_deep) is False
    with pytest.raises(ValueError, match=r"nested deeper than DEFAULT_MAX_DEPTH=1000"):
        dump(too_deep)


def test_empty_tuple_is_not_a_nesting_level():
    value = nested(DEFAULT_MAX_DEPTH, leaf=())
    assert dumpable(value) is True
    assert dump(load(dump(value))) == dump(value)


def test_dump_of_deep_nesting_fails_fast_without_recursion():
    value = nested(200_000)
    started = time.perf_counter()
    with pytest.raises(ValueError, match="DEFAULT_MAX_DEPTH=1000"):
        dump(value)
    assert dumpable(value) is False
    assert time.perf_counter() - started < 1.0


def _frames_in_use():
    frame, count = sys._getframe(), 0
    while frame is not None:
        frame, count = frame.f_back, count + 1
    return count


def _with_frames_left(frames_left, func):
    """Call func with only about `frames_left` frames below the recursion limit."""

    def descend(levels):
        return func() if levels <= 0 else descend(levels - 1)

    return descend(sys.getrecursionlimit() - _frames_in_use() - frames_left)


def test_dump_and_load_need_few_frames_whatever_the_depth():
    deep = nested(DEFAULT_MAX_DEPTH, leaf="x")
    encoded = b"\x10" * 5000 + b"\x50"

    def run():
        return dump(deep), dumpable(deep), load(encoded, max_depth=5000)

    dumped, is_dumpable, loaded = _with_frames_left(100, run)
    assert dumped == b"\x10" * DEFAULT_MAX_DEPTH + b"\x08\x0ax"
    assert is_dumpable is True
    for _ in range(5000):
        (loaded,) = loaded
    assert loaded == 0


# ------------------------------------------------------------ hostile input

UNKNOWN_TAGS = [0x07, 0x09, 0x1C, 0x1D, 0x1E, 0x1F, *range(0xF0, 0x100)]


@pytest.mark.parametrize("tag", UNKNOWN_TAGS, ids=hex)
def test_unknown_tags_are_refused(tag):
    with pytest.raises(BrineError, match=f"unknown tag 0x{tag:02x} at offset 0"):
        load(bytes([tag]))
    with pytest.raises(BrineError, match=f"unknown tag 0x{tag:02x} at offset 3"):
        load(bytes([0x11, 0x50, 0x10, tag]))


def test_empty_input_is_truncated():
    with pytest.raises(BrineError, match="truncated: 0 bytes"):
        load(b"")


SMALL_ENCODINGS = [dump(value) for value in CORPUS if len(dump(value)) < 3000]


def test_every_truncation_of_every_encoding_is_refused():
    checked = 0
    for encoded in SMALL_ENCODINGS:
        for end in range(len(encoded)):
            with pytest.raises(BrineError, match=r"truncated|runs past the end|declared with only"):
                load(encoded[:end])
            checked += 1
    assert checked > 5000


def test_truncations_of_big_encodings_are_refused():
    for value in (b"z" * 100_000, "long str " * 10_000, tuple(range(5000)), 10**4000):
        encoded = dump(value)
        for end in [*range(8), *range(len(encoded) - 8, len(encoded))]:
            with pytest.raises(BrineError):
                load(encoded[:end])


@pytest.mark.parametrize("trailer", [b"\x00", b"\x50\x50", b"garbage"])
def test_trailing_bytes_are_refused(trailer):
    for encoded in SMALL_ENCODINGS:
        with pytest.raises(BrineError, match=f"{len(trailer)} trailing bytes after a value"):
            load(encoded + trailer)


FOUR_GIB = 2**32 - 1


@pytest.mark.parametrize(
    ("hostile", "message"),
    [
        (b"\x0f" + I4.pack(FOUR_GIB) + b"abcde", "value of 4294967295 bytes at offset 5"),
        (b"\x08\x0f" + I4.pack(FOUR_GIB) + b"abcd", "value of 4294967295 bytes at offset 6"),
        (b"\x17" + I4.pack(FOUR_GIB) + b"12345", "value of 4294967295 bytes at offset 5"),
        (b"\x15" + I4.pack(FOUR_GIB) + b"\x00" * 5, "tuple of 4294967295 items declared"),
        (b"\x1a\x15" + I4.pack(FOUR_GIB) + b"\x00" * 4, "tuple of 4294967295 items declared"),
        (b"\x14\xff" + b"\x00" * 10, "tuple of 255 items declared with only 10 bytes left"),
        (b"\x0e\xff" + b"\x00" * 4, "value of 255 bytes at offset 2 runs past the end of 6"),
        (b"\x16\x09" + b"1234", "value of 9 bytes at offset 2"),
    ],
)
def test_absurd_lengths_fail_before_allocating(hostile, message):
    errors = []

    def attempt():
        try:
            load(hostile)
        except BrineError as exc:
            errors.append(exc)

    assert peak_allocation(attempt) < 16 * 1024
    assert len(errors) == 1
    assert message in str(errors[0])


@pytest.mark.parametrize(
    "opener",
    [b"\x10", b"\x11\x00", b"\x14\x01", b"\x15\x00\x00\x00\x01", b"\x19\x12", b"\x1a\x10"],
    ids=["tuple1", "tuple2", "tuple-l1", "tuple-l4", "slice", "frozenset"],
)
def test_a_million_levels_of_nesting_fail_fast(opener):
    hostile = opener * 10**6 + b"\x00" * (3 * 10**6)
    started = time.perf_counter()
    with pytest.raises(BrineError, match=r"nested deeper than max_depth=1000 at offset \d+"):
        load(hostile)
    assert time.perf_counter() - started < 1.0


def test_max_depth_bounds_nesting_exactly():
    assert load(b"\x50", max_depth=0) == 0
    with pytest.raises(BrineError, match="max_depth=0 at offset 0"):
        load(b"\x10\x50", max_depth=0)
    assert load(b"\x10" * 3 + b"\x50", max_depth=3) == (((0,),),)
    with pytest.raises(BrineError, match="max_depth=3 at offset 3"):
        load(b"\x10" * 4 + b"\x50", max_depth=3)
    with pytest.raises(BrineError, match="max_depth=3 at offset 4"):
        load(b"\x10\x10\x1a\x10\x10\x50", max_depth=3)
    assert load(b"\x10" * 1000 + b"\x50") is not None
    with pytest.raises(BrineError, match="max_depth=1000 at offset 1000"):
        load(b"\x10" * 1001 + b"\x50")


def test_load_goes_deeper_than_the_recursion_limit_when_allowed():
    depth = 3 * sys.getrecursionlimit()
    value = load(b"\x11\x50" * depth + b"\x00", max_depth=depth)
    for _ in range(depth):
        assert value[0] == 0
        value = value[1]
    assert value is None


@pytest.mark.parametrize(
    "hostile",
    [b"\x08\x0b\xff\xfe", b"\x08\x0c\xed\xa0\x80", b"\x08\x0a\x80", b"\x10\x08\x0e\x05abc\xc3("],
)
def test_invalid_utf8_is_refused(hostile):
    with pytest.raises(BrineError, match=r"str of \d+ bytes is not valid UTF-8"):
        load(hostile)


@pytest.mark.parametrize("inner", [b"\x00", b"\x08\x01", b"\x50", b"\x10\x0a", b"\x02"])
def test_str_must_hold_bytes(inner):
    with pytest.raises(BrineError, match=r"str at offset 0 holds tag 0x.., not bytes"):
        load(b"\x08" + inner)


@pytest.mark.parametrize(
    "digits", [b"", b"-", b"+1", b" 1", b"1 ", b"1_0", b"0x10", b"1.5", b"\xd9\xa3", b"1e3", b"--1"]
)
def test_malformed_int_digits_are_refused(digits):
    with pytest.raises(BrineError, match=r"int digits .* are not -\?\[0-9\]\+"):
        load(b"\x16" + bytes([len(digits)]) + digits)
    with pytest.raises(BrineError, match=r"int digits .* are not -\?\[0-9\]\+"):
        load(b"\x17" + I4.pack(len(digits)) + digits)


def test_int_digits_past_the_interpreter_limit_are_refused():
    digits = b"7" * (sys.get_int_max_str_digits() + 1)
    message = r"int of 4301 digits at offset 5 exceeds sys.get_int_max_str_digits\(\)=4300"
    with pytest.raises(BrineError, match=message):
        load(b"\x17" + I4.pack(len(digits)) + digits)
    assert load(b"\x17" + I4.pack(4301) + b"-" + digits[:-1]) == -int(digits[:-1])


def test_leading_zeros_and_minus_zero_load_like_stock_rpyc():
    assert load(b"\x16\x03007") == 7
    assert load(b"\x16\x02-0") == 0


@pytest.mark.parametrize(
    ("hostile", "message"),
    [
        (b"\x19\x11\x50\x50", "slice holds tag 0x11, not a 3-tuple"),
        (b"\x19\x0d\x50\x50\x50\x50", "slice holds tag 0x0d, not a 3-tuple"),
        (b"\x1a\x00", "frozenset holds tag 0x00, not a tuple"),
        (b"\x1a\x08\x01", "frozenset holds tag 0x08, not a tuple"),
        (b"\x1a\x10\x19\x12\x00\x00\x00", "frozenset item is not hashable"),
        (b"\x1a\x10\x10\x19\x12\x00\x00\x00", "frozenset item is not hashable"),
    ],
)
def test_malformed_slices_and_frozensets_are_refused(hostile, message):
    with pytest.raises(BrineError, match=message):
        load(hostile)


def test_non_canonical_but_unambiguous_forms_load():
    assert load(b"\x14\x00") == ()
    assert load(b"\x14\x02\x50\x51") == (0, 1)
    assert load(b"\x15\x00\x00\x00\x01\x50") == (0,)
    assert load(b"\x0e\x00") == b""
    assert load(b"\x0f\x00\x00\x00\x02ab") == b"ab"
    assert load(b"\x1a\x14\x02\x51\x51") == frozenset({1})


# ---------------------------------- the one-pass encoder, run as its Python source


def _pure_brine_encode():
    """`grpyc._brine_encode` loaded from its ``.py``: the one-pass encoder is a C
    function in the compiled build, and the pure build never calls it."""
    import importlib.util

    from grpyc import _brine_encode

    spec = importlib.util.spec_from_file_location("_pure_brine_encode", source_path(_brine_encode))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PURE_ENCODE = _pure_brine_encode()


@settings(max_examples=150, deadline=None)
@given(dumpable_values)
def test_one_pass_encoder_source_writes_what_the_loop_writes(value):
    message = (7, value, "name")
    small = PURE_ENCODE._dump_small(message, b"\x01")
    loop = PURE_ENCODE._dump_container(message, b"\x01")
    assert small is None or small == loop


@pytest.mark.parametrize(
    "message",
    [
        (1, 2),
        (7, ("name", b"raw", None, True, False, 10**17, 10**18 - 1, 10**18, -48, 159, 160)),
        ((), ("é" * 40, b"b" * 65, "s" * 300)),  # past the byte-by-byte copy
        (-(10**20), tuple(range(10))),
    ],
)
def test_one_pass_encoder_source_takes_a_message_of_small_values(message):
    assert PURE_ENCODE._dump_small(message, b"\x01") == PURE_ENCODE._dump_container(
        message, b"\x01"
    )


def test_one_pass_encoder_source_grows_its_scratch_and_does_not_keep_a_big_one():
    module = PURE_ENCODE
    big = ("s" * 5000, b"b" * 60_000, b"c" * 60_000, 10**18 - 1, 10**17, 160)  # past 64 KiB
    assert module._dump_small(big, b"") == module._dump_container(big, b"")
    assert len(module._scratch) == module._SMALL_ROOM  # the grown buffer was let go
    module._scratch_busy = True  # as if re-entered: a buffer of its own
    try:
        assert module._dump_small((1, "x"), b"\x02") == module._dump_container((1, "x"), b"\x02")
    finally:
        module._scratch_busy = False
    assert module._dump_small((1, object()), b"") is None  # left to the loop


@pytest.mark.parametrize("build", ["compiled-or-pure", "python-source"])
def test_dump_from_many_threads_at_once_gives_each_its_own_bytes(build):
    # The one-pass encoder writes into one scratch buffer per process. As
    # Python source, threads switch inside it (every microsecond here): the
    # second one in must get a buffer of its own; compiled, nothing in it
    # may let another thread in.
    import threading

    if build == "python-source":
        encoder = PURE_ENCODE

        def encode(message):
            return encoder._dump_small(message, b"")
    else:
        encode = dump
    messages = [(seq, (2, ("name", "x" * (seq * 40), 10**17 + seq))) for seq in range(8)]
    expected = [dump(message) for message in messages]
    wrong: list[int] = []

    def encode_often(index: int) -> None:
        for _ in range(1000):
            if encode(messages[index]) != expected[index]:
                wrong.append(index)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=encode_often, args=(i,)) for i in range(len(messages))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == []


# ------------------------------------------------------------ hypothesis


@settings(max_examples=150, deadline=None)
@given(dumpable_values)
def test_any_dumpable_value_round_trips(value):
    assert dumpable(value) is True
    assert canonical(load(dump(value))) == canonical(value)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_load_of_arbitrary_bytes_raises_only_brine_error(data):
    with contextlib.suppress(BrineError):
        load(data)


@st.composite
def mutated_encodings(draw):
    encoded = bytearray(dump(draw(dumpable_values)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(encoded)))
        action = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        byte = draw(st.integers(0, 255))
        if action == "replace" and at < len(encoded):
            encoded[at] = byte
        elif action == "insert":
            encoded.insert(at, byte)
        elif action == "delete" and at < len(encoded):
            del encoded[at]
        elif action == "cut":
            del encoded[at:]
    return bytes(encoded)


@settings(max_examples=150, deadline=None)
@given(mutated_encodings())
def test_load_of_mutated_encodings_raises_only_brine_error(data):
    try:
        value = load(data)
    except BrineError:
        return
    assert canonical(load(dump(value))) == canonical(value)


def test_load_from_an_offset_skips_the_prefix():
    data = b"\x01" + brine.dump((7, ("x", 1)))
    assert brine.load(data, start=1) == (7, ("x", 1))
    with pytest.raises(brine.BrineError, match="outside"):
        brine.load(data, start=len(data))
    with pytest.raises(brine.BrineError, match="trailing"):
        brine.load(data + b"\x00", start=1)


# ------------------------------------------------ big values kept apart
BIG = bytes(range(256)) * 1024  # 256 KiB


@pytest.mark.parametrize(
    "value",
    [
        (1, BIG),
        (BIG, "x", (2, BIG[:70_000]), frozenset({3})),
        (1, ("é" * 40_000, None), slice(1, 2)),
        (1, 2, BIG[: brine.SEPARATE_SIZE - 1]),
        (),
    ],
)
def test_dump_pieces_joined_is_dump(value):
    pieces = brine.dump_pieces(value, b"\x01")
    joined = pieces if type(pieces) is bytes else b"".join(pieces)
    assert joined == dump(value, b"\x01")


def test_dump_pieces_keeps_big_bytes_uncopied_and_small_messages_joined():
    pieces = brine.dump_pieces((1, BIG, "tail"))
    assert type(pieces) is list
    assert any(piece is BIG for piece in pieces)
    assert brine.dump_pieces((1, BIG[:1000], "tail")) == dump((1, BIG[:1000], "tail"))
    assert type(brine.dump_pieces((1, b"x" * (brine.SEPARATE_SIZE - 1)))) is bytes


def test_dump_pieces_refuses_what_dump_refuses():
    with pytest.raises(TypeError, match="cannot dump"):
        brine.dump_pieces((BIG, object()))


def _cut(encoded, at, size):
    return encoded[:at] + encoded[at + size :], encoded[at : at + size]


def test_big_value_at_finds_the_value_that_goes_on_past_the_prefix():
    encoded = dump((7, "name", BIG, 9), b"\x01")
    at = encoded.index(BIG)
    assert brine.big_value_at(memoryview(encoded)[:1000], len(encoded), 65536) == (at, len(BIG))
    # All of it already here, too small, or not within the scanned head: no guess.
    assert brine.big_value_at(encoded, len(encoded), 65536) is None
    assert brine.big_value_at(encoded[:1000], len(encoded), len(BIG) + 1) is None
    far = dump((b"x" * brine.SPLICE_SCAN, BIG))
    assert brine.big_value_at(far[: brine.SPLICE_SCAN + 100], len(far), 65536) is None


def test_load_measured_uses_the_spliced_buffer_itself():
    value = (7, "name", BIG, (b"after", 9))
    encoded = dump(value, b"\x01")
    at = encoded.index(BIG)
    rest, cut = _cut(encoded, at, len(BIG))
    cut = bytes(bytearray(cut))  # its own object
    decoded, size = brine.load_measured(rest, start=1, splice=(at, cut))
    assert decoded == value
    assert decoded[2] is cut
    assert size == brine.load_measured(encoded, start=1)[1]


def test_load_measured_spliced_str_is_decoded():
    text = "é" * 100_000
    encoded = dump((1, text), b"\x01")
    raw = text.encode()
    at = encoded.index(raw)
    rest, cut = _cut(encoded, at, len(raw))
    assert brine.load_measured(rest, start=1, splice=(at, cut))[0] == (1, text)


def test_a_wrong_splice_guess_decodes_the_input_as_sent():
    # A 4-byte-length header inside another value looks like a big value:
    # no value starts at the cut, so the bytes are put back.
    decoy = b"\x0f" + (300_000).to_bytes(4, "big")
    value = (1, decoy + b"pad", BIG + BIG)
    encoded = dump(value)
    at = encoded.index(decoy) + 5
    rest, cut = _cut(encoded, at, 300_000)
    assert brine.load_measured(rest, splice=(at, cut))[0] == value
    with pytest.raises(BrineError):
        brine.load_measured(rest[:-1], splice=(at, cut))


def test_a_spliced_value_counts_against_max_decoded_size():
    encoded = dump((1, BIG))
    at = encoded.index(BIG)
    rest, cut = _cut(encoded, at, len(BIG))
    with pytest.raises(BrineError, match="max_decoded_size"):
        brine.load_measured(rest, max_decoded_size=100_000, splice=(at, cut))
    assert brine.load_measured(rest, max_decoded_size=400_000, splice=(at, cut))[0] == (1, BIG)


# ------------------------------------------- small inputs: the one-pass decoder

from grpyc._brine_decode import decode  # noqa: E402
from grpyc._brine_limits import DEFAULT_MAX_FROZENSET_ITEMS, Meter  # noqa: E402
from grpyc._brine_small import SMALL_INPUT, decode_small  # noqa: E402


def full_decode(data, max_depth):
    """`decode` through the handler table: ``(value, size)``, or the BrineError it raises."""
    meter = Meter(max_depth, None, DEFAULT_MAX_FROZENSET_ITEMS, None)
    try:
        return decode(data, 0, meter), meter.size()
    except BrineError as exc:
        return exc


def same_objects(a, b):
    """Equal, with the same type at every level (1 == 1.0 == True would not do)."""
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(map(same_objects, a, b))
    return a == b


def assert_small_agrees(data, max_depth):
    small = decode_small(data, 0, max_depth)
    full = full_decode(data, max_depth)
    if small is None:
        return False
    assert not isinstance(full, BrineError), (data, small, full)
    assert small[1] == full[1], data
    assert same_objects(small[0], full[0]), (data, small, full)
    return True


SMALL_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**70), max_value=10**70),
    st.integers(min_value=-300, max_value=300),
    st.text(max_size=40),
    st.text(min_size=250, max_size=1200),  # 4-byte lengths
    st.binary(max_size=300),
    st.floats(allow_nan=False),
    st.just(...),
    st.just(NotImplemented),
)
SMALL_VALUES = st.recursive(
    SMALL_SCALARS, lambda children: st.lists(children, max_size=6).map(tuple), max_leaves=40
)
# Tuples around the one-byte count (tag 0x14 holds up to 255 items).
LONG_TUPLES = st.integers(min_value=5, max_value=300).map(lambda n: tuple(range(n)))


@settings(max_examples=400, deadline=None)
@given(SMALL_VALUES | LONG_TUPLES, st.sampled_from([0, 1, 2, 5, 32, 64]))
def test_the_one_pass_decoder_agrees_with_the_table(value, max_depth):
    data = dump(value)
    if len(data) <= SMALL_INPUT:
        assert_small_agrees(data, max_depth)


@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=1, max_size=80), st.sampled_from([1, 3, 32]))
def test_the_one_pass_decoder_leaves_every_invalid_input_to_the_table(data, max_depth):
    assert_small_agrees(data, max_depth)


@settings(max_examples=400, deadline=None)
@given(SMALL_VALUES, st.data())
def test_a_damaged_encoding_is_never_taken_for_another_value(value, draw):
    data = bytearray(dump(value))
    index = draw.draw(st.integers(min_value=0, max_value=len(data) - 1))
    data[index] = draw.draw(st.integers(min_value=0, max_value=255))
    cut = draw.draw(st.integers(min_value=1, max_value=len(data)))
    assert_small_agrees(bytes(data[:cut]), 32)


# Bytes the decoders treat specially, to make short hostile inputs likely.
TAG_ALPHABET = st.sampled_from(
    [0x00, 0x01, 0x02, 0x08, 0x0A, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x13, 0x14, 0x15, 0x16,
     0x17, 0x18, 0x2D, 0x30, 0x39, 0x80, 0xC3, 0xEF, 0xF0, 0xFF]
)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(st.lists(TAG_ALPHABET, min_size=1, max_size=12).map(bytes))
def test_short_inputs_of_tag_bytes_are_left_to_the_table(data):
    assert_small_agrees(data, 32)


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x00", b"\x11\x16\x00", b"\x16\x01-", b"\x08\x0e", b"\x14", b"\x16",
        b"\x11\x0f\x80\x00\x00\x00",  # a 4-byte length of 2**31: a C int would overflow
        b"\x08\x0f\xff\xff\xff\xff",
    ],
)  # fmt: skip
def test_an_int_or_str_cut_at_the_end_is_a_brine_error(data):
    assert decode_small(data, 0, 32) is None
    with pytest.raises(BrineError):
        brine.load_measured(data)


def test_rpc_messages_take_the_one_pass_decoder():
    message = (8, (2, ((4, ("mod.Cls", 140234, 140567)), (1, "echo"), (2, ((1, 42),)), (2, ()))))
    assert assert_small_agrees(dump(message), DEFAULT_MAX_DEPTH)
    for common in ((), (1, "x", b"yz", None, True), (-5, 257, 10**20, "é" * 9), ((((1,),),),)):
        assert assert_small_agrees(dump(common), DEFAULT_MAX_DEPTH)


def test_the_one_pass_decoder_leaves_what_it_does_not_take():
    for value in (1.5, 3j, frozenset({1}), slice(1, 2), 10**70):
        assert decode_small(dump((1, value)), 0, DEFAULT_MAX_DEPTH) is None
    assert decode_small(dump(((((1,),),),)), 0, 3) is None  # too deep: the table raises


@pytest.mark.parametrize("size", [255, 256, 300, 1000, 4000, 20_000, 65_000])
def test_messages_with_a_str_or_bytes_of_a_few_kib_take_the_one_pass_decoder(size):
    """A ping's 520 characters, a traceback, a page: 4-byte lengths, up to `SMALL_INPUT`."""
    for value in ("x" * size, b"y" * size, "é" * (size // 2), ("a", b"b" * size, None)):
        data = dump((17, (1, value)))
        if SMALL_INPUT and len(data) > SMALL_INPUT:
            continue  # "é" * 32,500 is 65,000 bytes: too big for it
        if SMALL_INPUT:  # compiled (the pure-Python build leaves every input to the table)
            assert len(data) <= SMALL_INPUT
        assert assert_small_agrees(data, DEFAULT_MAX_DEPTH)


def test_the_one_pass_decoder_leaves_an_input_due_a_progress_call_to_the_table():
    """200 tuples of 200 Nones: 40 KiB of input, ~330 KB of objects by brine's
    estimate, past PROGRESS_EVERY: the table decodes it and calls `progress`."""
    value = tuple((None,) * 200 for _ in range(200))
    data = dump(value)
    assert len(data) <= 64 * 1024
    assert decode_small(data, 0, DEFAULT_MAX_DEPTH) is None
    calls = []
    assert brine.load_measured(data, progress=lambda: calls.append(1))[0] == value
    assert calls  # the table's progress call happened
    smaller = tuple((None,) * 200 for _ in range(150))  # ~247 KB: under it
    assert assert_small_agrees(dump(smaller), DEFAULT_MAX_DEPTH)


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 100])
def test_a_str_or_bytes_cut_inside_its_4_byte_length_or_body_is_left_to_the_table(cut):
    for value in ("x" * 300, b"y" * 300):
        data = dump((1, value))
        assert assert_small_agrees(data[: 3 + cut], 32) is False  # BrineError from the table


def test_small_inputs_keep_max_decoded_size_exact():
    encoded = dump((1000, "name", b"bytes!"))
    value, size = brine.load_measured(encoded)
    assert decode_small(encoded, 0, DEFAULT_MAX_DEPTH) == (value, size)
    assert brine.load_measured(encoded, max_decoded_size=size) == (value, size)
    with pytest.raises(BrineError, match=f"exceeds max_decoded_size={size - 1}"):
        brine.load_measured(encoded, max_decoded_size=size - 1)
