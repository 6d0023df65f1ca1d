"""Boxing and proxy requests side by side: grpyc does as stock rpyc does."""

import enum
from unittest import mock

import pytest
import rpyc

from grpyc import consts


class _Color(enum.IntEnum):
    RED = 1


def _shape(boxed):
    """A box with its references blanked (object ids differ between the runs)."""
    label, value = boxed
    if label == consts.LABEL_TUPLE:
        return label, tuple(_shape(item) for item in value)
    if label in (consts.LABEL_LOCAL_REF, consts.LABEL_REMOTE_REF):
        return label, "ref"
    return label, value


def _values(own_proxy, foreign_proxy):
    thing = object()
    return {
        "int": 42,
        "str": "s",
        "None": None,
        "nested tuple": (1, (2, "x"), ()),
        "frozenset": frozenset({1, 2}),
        "slice": slice(1, 2, 3),
        "frozenset of an object": frozenset({thing}),
        "slice of an object": slice(thing),
        "object": thing,
        "int subclass": _Color.RED,
        "tuple with an object": (thing, 1, (2,)),
        "own proxy": own_proxy,
        "request arguments": (own_proxy, (42,), ()),
        "foreign proxy": foreign_proxy,
        # An object that claims a proxy's class (isinstance says yes): by reference.
        "mock of a proxy": mock.Mock(spec=type(own_proxy)),
    }


@pytest.fixture
def stock_pair():
    first, second = rpyc.classic.connect_thread(), rpyc.classic.connect_thread()
    yield first, second
    first.close()
    second.close()


def test_box_labels_every_kind_of_value_as_stock_does(make_pair, stock_pair):
    _, grpyc_conn = make_pair()
    _, other_grpyc_conn = make_pair()
    stock_conn, other_stock_conn = stock_pair
    grpyc_values = _values(grpyc_conn.root, other_grpyc_conn.root)
    stock_values = _values(stock_conn.modules.os, other_stock_conn.modules.os)
    for name, value in grpyc_values.items():
        expected = _shape(stock_conn._box(stock_values[name]))
        assert _shape(grpyc_conn._box(value)) == expected, name


def _requests_seen(conn):
    """The handlers of the requests a proxy of `conn` sends through ``conn.sync_request``."""
    seen = []
    plain = conn.sync_request

    def recording(handler, *args):
        seen.append(handler)
        return plain(handler, *args)

    conn.sync_request = recording
    remote_os = conn.modules.os
    seen.clear()
    remote_os.getpid()  # a method: GETATTR, then CALL of the method's proxy
    remote_os.sep  # an attribute: GETATTR
    return seen


def test_proxy_calls_and_reads_go_through_sync_request_as_in_stock(stock_pair):
    # A wrapper or an override of `sync_request` sees every request a proxy sends.
    from grpyc import classic

    conn = classic.connect_thread()
    try:
        assert _requests_seen(conn) == _requests_seen(stock_pair[0])
    finally:
        conn.close()
