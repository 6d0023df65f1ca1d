"""grpyc.brine against stock rpyc 6.0.2's brine: same bytes, both directions."""

import sys

import pytest
from hypothesis import given, settings
from rpyc.core import brine as stock_brine

from grpyc import brine
from tests.test_brine import (
    CORPUS,
    NOT_DUMPABLE,
    TYPICAL_MESSAGES,
    canonical,
    dumpable_values,
    nested,
    value_id,
)

VALUE_IDS = {"ids": value_id}


@pytest.fixture
def unlimited_int_digits():
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    yield
    sys.set_int_max_str_digits(limit)


@pytest.mark.parametrize("value", CORPUS, **VALUE_IDS)
def test_dump_is_byte_identical_to_stock(value):
    assert brine.dump(value) == stock_brine.dump(value)


@pytest.mark.parametrize("value", CORPUS, **VALUE_IDS)
def test_stock_loads_what_grpyc_dumps(value):
    assert canonical(stock_brine.load(brine.dump(value))) == canonical(value)


@pytest.mark.parametrize("value", CORPUS, **VALUE_IDS)
def test_grpyc_loads_what_stock_dumps(value):
    assert canonical(brine.load(stock_brine.dump(value))) == canonical(value)


@pytest.mark.parametrize("value", [*CORPUS, *NOT_DUMPABLE], **VALUE_IDS)
def test_dumpable_agrees_with_stock(value):
    assert brine.dumpable(value) is stock_brine.dumpable(value)


def test_dumpable_agrees_with_stock_on_values_dump_then_refuses():
    for value in (10**5000, "\ud800", ("ok", "\ud800")):
        assert brine.dumpable(value) is stock_brine.dumpable(value) is True
    with pytest.raises(ValueError, match="Exceeds the limit"):
        stock_brine.dump(10**5000)
    with pytest.raises(ValueError, match="Exceeds the limit"):
        brine.dump(10**5000)
    with pytest.raises(UnicodeEncodeError):
        stock_brine.dump(("ok", "\ud800"))
    with pytest.raises(UnicodeEncodeError):
        brine.dump(("ok", "\ud800"))


@pytest.mark.parametrize("value", NOT_DUMPABLE, **VALUE_IDS)
def test_stock_refuses_to_dump_what_grpyc_refuses(value):
    with pytest.raises(TypeError):
        stock_brine.dump(value)
    with pytest.raises(TypeError):
        brine.dump(value)


def test_huge_ints_cross_both_ways(unlimited_int_digits):
    for value in (10**5000, -(10**5000), 3**20000):
        assert brine.dump(value) == stock_brine.dump(value)
        assert stock_brine.load(brine.dump(value)) == value
        assert brine.load(stock_brine.dump(value)) == value


def test_nesting_stock_can_handle_crosses_both_ways():
    value = nested(400, leaf=("x", 1.5), wrap=lambda inner: (1, inner))
    assert brine.dump(value) == stock_brine.dump(value)
    assert brine.dump(stock_brine.load(brine.dump(value))) == brine.dump(value)
    assert brine.dump(brine.load(stock_brine.dump(value))) == brine.dump(value)


def test_stock_docstring_example_loads():
    encoded = bytes.fromhex(
        "140e0b686557080c6c6c6f580216033930300003061840323333333333331b402a0000"
        "00000000403233333333333319125152531a1255565705"
    )
    expected = stock_brine.load(encoded)
    assert brine.load(encoded) == expected
    assert brine.dump(expected) == stock_brine.dump(expected)


@pytest.mark.parametrize("message", TYPICAL_MESSAGES, **VALUE_IDS)
def test_typical_messages_are_byte_identical(message):
    encoded = stock_brine.dump(message)
    assert brine.dump(message) == encoded
    assert brine.load(encoded) == message


@settings(max_examples=150, deadline=None)
@given(dumpable_values)
def test_any_dumpable_value_crosses_both_ways(value):
    ours = brine.dump(value)
    theirs = stock_brine.dump(value)
    assert ours == theirs
    assert canonical(stock_brine.load(ours)) == canonical(value)
    assert canonical(brine.load(theirs)) == canonical(value)
    assert brine.dumpable(value) is stock_brine.dumpable(value) is True


# ------------------------------------- the one-pass encoder of small tuples

# Around every bound of the one-pass encoder: 256 and 4,096 bytes, 256 digits
# and items, 32 levels.
SMALL_EDGES = [
    ("s" * 255, "s" * 256, "é" * 127, "é" * 128, "", "x"),
    (b"b" * 255, b"b" * 256, b"", b"1234", b"12345"),
    ("s" * 4095, b"b" * 4095, "é" * 2047, "€" * 1365),
    ("s" * 4096,),
    (b"b" * 4096,),
    ("é" * 2048,),  # 4,096 bytes of UTF-8 in 2,048 characters
    ("é" * 4095,),  # under 4,096 characters, 8,190 bytes
    ("s" * 65_535, b"b" * 65_535),
    ("s" * 65_536,),  # SEPARATE_SIZE: a piece of its own in dump_pieces
    (b"b" * 65_536,),
    ("é" * 32_768,),  # 65,536 bytes in 32,768 characters
    (10**254, 10**255, -(10**254), -49, -48, 159, 160, True, False, None),
    (10**17, 10**18 - 1, 10**18, 2**63, 999, 1000, 160),  # C digits up to 10**18
    tuple(range(255)),
    tuple(range(256)),
    (1, 2.5, 3j, frozenset({1}), slice(1, 2), ..., NotImplemented),
    *(nested(depth) for depth in (30, 31, 32, 33, 40)),
]


@pytest.mark.parametrize("value", SMALL_EDGES, ids=value_id)
def test_small_tuples_dump_as_stock_at_every_bound(value):
    assert brine.dump(value) == stock_brine.dump(value)
    pieces = brine.dump_pieces(value, b"\x01")  # from SEPARATE_SIZE on, in pieces
    joined = pieces if type(pieces) is bytes else b"".join(pieces)
    assert joined == b"\x01" + stock_brine.dump(value)


@settings(max_examples=300, deadline=None)
@given(dumpable_values)
def test_small_tuples_dump_as_stock(value):
    wrapped = (7, value, "name")  # a tuple: the one-pass encoder's input
    assert brine.dump(wrapped) == stock_brine.dump(wrapped)


@pytest.mark.parametrize("bad", [object(), [1], "\ud800", 1.5 + 0j, (1, [2])], ids=value_id)
def test_small_tuples_refuse_what_stock_refuses(bad):
    wrapped = (1, ("x", bad))
    assert _dump_outcome(brine.dump, wrapped) == _dump_outcome(stock_brine.dump, wrapped)


def _dump_outcome(dump, value):
    try:
        return dump(value)
    except (TypeError, ValueError) as exc:
        return "refused with TypeError" if isinstance(exc, TypeError) else "refused"
