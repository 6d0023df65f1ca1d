"""Proxies: operators, classes, isinstance, pickling guards, caching."""

import copy
import pickle

import pytest
import rpyc.core.netref as stock_netref

from grpyc import consts, netref


@pytest.fixture
def client(make_pair):
    _, client = make_pair(server_config={"allow_public_attrs": True})
    return client


def test_builtin_proxy_classes_use_the_names_rpyc_peers_send():
    assert set(stock_netref.builtin_classes_cache) <= set(netref.builtin_classes_cache)


def test_list_proxy_behaves_like_a_list(client):
    items = client.root.make_list(5, 6, 7, 8)
    assert isinstance(items, list)
    assert items.__class__ is list
    assert len(items) == 4
    assert items[1:3] == client.root.make_list(6, 7)
    assert list(items[::2]) == [5, 7]
    items[0] = 50
    assert items[0] == 50
    del items[0]
    assert list(items) == [6, 7, 8]
    assert 7 in items
    assert 70 not in items
    iterator = iter(items)
    assert next(iterator) == 6
    assert list(iterator) == [7, 8]
    assert bool(items) is True
    assert bool(client.root.make_list()) is False


def test_dict_proxy(client):
    mapping = client.root.make_dict(a=1, b=2)
    assert isinstance(mapping, dict)
    assert mapping["a"] == 1
    assert sorted(mapping) == ["a", "b"]
    assert mapping.get("c", 3) == 3
    with pytest.raises(KeyError):
        mapping["zzz"]


def test_numeric_and_reflected_operators(client):
    thing = client.root.make_thing(3)
    value = client.root.make_list(1, 2)
    assert list(value * 2) == [1, 2, 1, 2]
    assert list(2 * value) == [1, 2, 1, 2]
    assert list(value + value) == [1, 2, 1, 2]
    value += client.root.make_list(3)
    assert list(value) == [1, 2, 3]
    assert len(thing) == 3


def test_repr_str_dir_hash_and_doc(client):
    thing = client.root.make_thing(1)
    assert repr(thing).startswith("<tests.services.Thing object")
    assert str(thing) == repr(thing)
    assert "bump" in dir(thing)
    assert thing.__doc__ == "A plain object handed out by reference."
    assert isinstance(hash(thing), int)


def test_unknown_class_resolves_remote_class_and_instancecheck(client):
    thing = client.root.make_thing(1)
    remote_cls = client.root.getattr(thing, "__class__")
    assert isinstance(thing, remote_cls)
    assert not isinstance(client.root.make_list(), remote_cls)
    with pytest.raises(TypeError):
        isinstance(thing, thing)


def test_context_manager_enter_and_exit(client):
    thing = client.root.make_thing(1)
    with thing:
        assert thing.value == 101
    assert thing.value == 1


def test_exceptions_inside_with_reach_remote_exit(client):
    thing = client.root.make_thing(1)
    with pytest.raises(ZeroDivisionError), thing:
        raise ZeroDivisionError
    assert thing.value == 1


def test_call_with_args_and_kwargs(client):
    assert client.root.add(1, b=2, c=3) == 6


def test_pickling_a_proxy_is_refused_without_local_allow_pickle(client):
    thing = client.root.make_thing(1)
    with pytest.raises(ValueError, match="allow_pickle"):
        pickle.dumps(thing)
    with pytest.raises(ValueError, match="allow_pickle"):
        copy.copy(thing)


def test_array_is_refused_without_allow_pickle(make_pair):
    class WithArray:
        def __array__(self, *args):
            return [1]

    from tests.services import TestService

    class ArrayService(TestService):
        def exposed_array_thing(self):
            return WithArray()

    _, client = make_pair(server_service=ArrayService())
    proxy = client.root.array_thing()
    with pytest.raises(ValueError, match="allow_pickle"):
        proxy.__array__()


def test_pickle_roundtrip_when_both_sides_allow(make_pair):
    _, client = make_pair(
        server_config={"allow_pickle": True}, client_config={"allow_pickle": True}
    )
    remote = client.root.make_list(1, 2)
    assert pickle.loads(pickle.dumps(remote)) == [1, 2]


def test_proxy_classes_are_cached_and_unresolved_ones_swapped(client):
    first = client.root.make_thing(1)
    assert type(first) is not netref.UnresolvedNetref
    assert type(first).__name__ == "tests.services.Thing"
    assert type(client.root.make_thing(2)) is type(first)


def test_getattr_on_missing_attribute_raises_attribute_error(client):
    thing = client.root.make_thing(1)
    with pytest.raises(AttributeError):
        thing.no_such_attribute


def test_a_missing_attribute_costs_one_request_and_raises_the_peers_error(make_pair):
    """The GETATTR that failed in ``__getattribute__`` is not sent again by
    the ``__getattr__`` Python calls next (stock sends it twice): the caller
    gets the peer's exception, and no proxy stays held."""

    class Thing:
        reads = 0

        @property
        def missing(self):
            Thing.reads += 1
            raise AttributeError("not here")

    server, client = make_pair(server_config={"allow_public_attrs": True})
    server._local_root.exposed_thing = Thing
    proxy = client.root.thing()
    assert not hasattr(proxy, "missing")
    assert Thing.reads == 1
    with pytest.raises(AttributeError, match="not here") as raised:
        proxy.missing  # the read is the probe
    assert Thing.reads == 2
    assert "Remote Traceback" in str(raised.value)  # the peer's, as stock shows it
    assert netref._just_missed is None
    assert not hasattr(proxy, "other_missing")  # another name: asked for itself
    assert Thing.reads == 2


def test_deleted_attrs_are_absent_locally(client):
    thing = client.root.make_thing(1)
    assert not hasattr(thing, "__array_interface__")
    assert not hasattr(thing, "__array_struct__")


def test_raw_handlers_through_sync_request(client):
    thing = client.root.make_thing(4)
    assert client.sync_request(consts.HANDLE_GETATTR, thing, "value") == 4
    assert client.sync_request(consts.HANDLE_CALLATTR, thing, "bump", (2,), ()) == 6
    assert client.sync_request(consts.HANDLE_BUFFITER, iter(range(3)), 10) == (0, 1, 2)


def test_iterating_a_remote_list_fetches_in_batches(make_pair):
    server, client = make_pair(client_config={"prefetch_iteration": True})
    items = client.root.make_list(*range(3000))
    seen = []
    original = type(server)._handle_buffiter

    def spy(self, obj, count):
        seen.append(count)
        return original(self, obj, count)

    type(server)._HANDLERS[consts.HANDLE_BUFFITER] = spy
    try:
        assert list(items) == list(range(3000))
    finally:
        type(server)._HANDLERS[consts.HANDLE_BUFFITER] = original
    assert seen == [16, 64, 256, 1024, 1024, 1024]


def test_prefetch_iteration_is_off_by_default_one_request_per_item(make_pair):
    _, client = make_pair()
    items = client.root.make_list(1, 2, 3)
    iterator = iter(items)
    assert type(iterator).__name__ == "builtins.list_iterator"
    assert list(iterator) == [1, 2, 3]


def test_proxy_classes_stay_per_connection_and_share_their_forwarding_functions(make_pair):
    # As stock: each connection makes its own proxy class for a remote class.
    # Their forwarding functions depend only on the name and docstring, so
    # the classes share them (fewer objects per connection for the collector).
    server_a, client_a = make_pair()
    server_b, client_b = make_pair()
    class_a, class_b = type(client_a.root), type(client_b.root)
    assert class_a is not class_b
    shared = [name for name in ("__format__", "__sizeof__") if name in class_a.__dict__]
    assert shared
    for name in shared:
        assert class_a.__dict__[name] is class_b.__dict__[name]
    # Each still goes through its own connection to its own object.
    assert format(client_a.root, "") == format(server_a._local_root, "")
    assert format(client_b.root, "") == format(server_b._local_root, "")
    assert format(client_a.root, "") != format(client_b.root, "")


def test_a_peer_varying_its_docstrings_keeps_only_so_many_shared_functions():
    # A hostile peer may answer INSPECT with a new docstring each time: the
    # shared functions are bounded (each holds at most MAX_DOC_LENGTH of doc).
    from grpyc import netref

    for index in range(3 * netref._SHARED_METHODS):
        netref.class_factory(("peer.Thing", 1, 2), [("__len__", f"doc {index} " * 400)])
    assert netref._shared_method.cache_info().currsize <= netref._SHARED_METHODS
    long_doc = "y" * (3 * netref.MAX_DOC_LENGTH)
    cls = netref.class_factory(("peer.Thing", 1, 2), [("__len__", long_doc)])
    assert len(cls.__dict__["__len__"].__doc__) == netref.MAX_DOC_LENGTH
