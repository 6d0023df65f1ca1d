"""Boxing and proxy requests side by side: grpyc does as stock rpyc does."""

import enum
from unittest import mock

import pytest
import rpyc

import grpyc.factory
from grpyc import consts
from tests.interop.conftest import in_os_thread, run_script


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


def _reference_probe(conn):
    """What a client makes of values that cross by reference and by value, both ways."""
    root = conn.root
    remote_list = root.make_list(1, 2)
    thing = root.make_thing(5)
    return (
        root.echo((1, (2, "x"), frozenset({3}), slice(1, 2))),
        root.add(1, b=2, c=3),
        root.call(lambda *numbers: sum(numbers), 1, 2, 3),  # a function goes by reference
        thing.exposed_get(),
        root.echo(remote_list) is remote_list,  # the server's own object comes back as it
        root.length((remote_list, 3)),  # a tuple holding a proxy: by reference, inside
        root.call(len, [1, 2, 3]),  # a builtin and a local list, by reference
        sorted(root.make_dict(a=1).keys()),
    )


PATCHED_REFERENCE_PROBE = """
from gevent import monkey
monkey.patch_all()
import sys
import grpyc.factory
from tests.interop.test_proxies_interop import _reference_probe
conn = grpyc.factory.connect("127.0.0.1", int(sys.argv[1]))
print(repr(_reference_probe(conn)))
conn.close()
"""


def test_references_cross_from_plain_threads_and_under_patch_all_as_from_stock(rpyc_server):
    def probe_with(connect):
        conn = connect("127.0.0.1", rpyc_server)
        try:
            return _reference_probe(conn)
        finally:
            conn.close()

    stock = in_os_thread(probe_with, rpyc.connect, timeout=60)
    assert stock[1:] == (6, 6, 5, True, 2, 3, ["a"])  # what stock makes of it
    assert in_os_thread(probe_with, grpyc.factory.connect, timeout=60) == stock
    assert run_script(PATCHED_REFERENCE_PROBE, rpyc_server).strip() == repr(stock)
