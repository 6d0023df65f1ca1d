"""grpyc.boxing: the proxy table (one proxy per remote object while it lives)."""

import gc
import weakref

import pytest

from grpyc import netref
from grpyc.boxing import ProxyTable


class _Conn:
    """What a proxy asks of its connection when it dies."""

    def __init__(self):
        self.released = []

    def release_proxy(self, id_pack, count):
        self.released.append((id_pack, count))


ID_PACK = ("builtins.list", 1234, 5678)


def test_one_proxy_per_object_while_it_lives_then_the_entry_goes():
    table, conn = ProxyTable(max_classes=8), _Conn()
    first = table.proxy_for(conn, ID_PACK)
    assert table.proxy_for(conn, ID_PACK) is first  # counted twice, one object
    assert object.__getattribute__(first, "____refcount__") == 2
    del first
    gc.collect()
    assert table._proxies == {}  # no entry left behind (the table would only grow)
    assert conn.released == [(ID_PACK, 2)]
    assert table.proxy_for(conn, ID_PACK) is not None  # a new one is made


def test_a_dead_proxys_late_callback_leaves_the_newer_proxy_of_its_object():
    """A proxy's weak reference may be cleared after a new proxy of the same
    object took its entry (another thread made one meanwhile): that entry stays."""
    table, conn = ProxyTable(max_classes=8), _Conn()
    old = table.proxy_for(conn, ID_PACK)
    old_ref = table._proxies[ID_PACK]
    newer = netref.UnresolvedNetref(conn, ID_PACK)
    table._proxies[ID_PACK] = newer_ref = weakref.ref(newer)
    old_ref.__callback__(old_ref)  # as the old proxy's death would call it
    assert table._proxies[ID_PACK] is newer_ref
    del old
    gc.collect()
    assert table._proxies[ID_PACK] is newer_ref
    assert table.proxy_for(conn, ID_PACK) is newer


def test_clear_forgets_every_proxy():
    table, conn = ProxyTable(max_classes=8), _Conn()
    keep = table.proxy_for(conn, ID_PACK)
    table.clear()
    assert table._proxies == {}
    assert table.proxy_for(conn, ID_PACK) is not keep


def test_exported_objects_are_found_by_their_id_pack_only():
    from grpyc.boxing import ObjectTable

    table = ObjectTable(max_objects=8)
    thing = object()
    name, class_id, instance_id = table.add(thing)
    assert table.get((name, class_id, instance_id)) is thing
    # What a peer may send instead: another name, the name as bytes, a wrong shape.
    well_shaped = [(name + "x", class_id, instance_id), (name.encode(), class_id, instance_id)]
    for forged in [*well_shaped, (name, class_id), [name, class_id, instance_id], "a str"]:
        with pytest.raises(KeyError):
            table.get(forged)
    assert [table.find(forged) for forged in well_shaped] == [None, None]
