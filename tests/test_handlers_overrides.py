"""grpyc._handlers.type_override: a type's own ``_rpyc_*`` accessors, found as stock finds them.

Immutable types (builtins) are remembered as having none; what is remembered
must hold for every override name, not only the one asked first.
"""

import pytest

from grpyc import _handlers


class SetterOnly:
    """A type with its own ``_rpyc_setattr`` and no ``_rpyc_getattr``."""

    def __init__(self):
        self.seen = []

    def _rpyc_setattr(self, name, value):
        self.seen.append((name, value))


@pytest.fixture
def heap_types_count_as_immutable(monkeypatch):
    # Py_TPFLAGS_BASETYPE (set on object and on classes of Python code) stands
    # in for Py_TPFLAGS_IMMUTABLETYPE: Python code cannot make an immutable
    # type, and these types must reach the cache.
    monkeypatch.setattr(_handlers, "_IMMUTABLE_TYPE", 1 << 10)
    monkeypatch.setattr(_handlers, "_known_plain", set())


def test_a_type_asked_for_one_override_keeps_its_other_ones(heap_types_count_as_immutable):
    assert _handlers.type_override(SetterOnly, "_rpyc_getattr") is None
    assert _handlers.type_override(SetterOnly, "_rpyc_setattr") is SetterOnly._rpyc_setattr
    assert SetterOnly not in _handlers._known_plain


def test_a_type_without_overrides_is_remembered(heap_types_count_as_immutable):
    class Plain:
        pass

    for name in _handlers._OVERRIDE_NAMES:
        assert _handlers.type_override(Plain, name) is None
    assert Plain in _handlers._known_plain


def _set_after_a_read(conn):
    """What a SetterOnly object on the other side of `conn` saw of a read then a write."""
    obj = conn.modules[__name__].SetterOnly()
    assert list(obj.seen) == []  # a GETATTR first: the type is looked at for _rpyc_getattr
    obj.value = 5  # then SETATTR: the type's own setter takes it
    return [tuple(item) for item in obj.seen]


def test_setattr_after_getattr_goes_to_the_types_own_setter_as_in_stock(
    heap_types_count_as_immutable,
):
    import rpyc

    from grpyc import classic

    grpyc_conn, stock_conn = classic.connect_thread(), rpyc.classic.connect_thread()
    try:
        assert _set_after_a_read(grpyc_conn) == _set_after_a_read(stock_conn) == [("value", 5)]
    finally:
        grpyc_conn.close()
        stock_conn.close()
