"""grpyc.helpers over real connections: async_, timed, buffiter, restricted,
BgServingThread, classpartial, exposed and service."""

import gc

import gevent
import gevent.event
import pytest

from grpyc import consts, factory
from grpyc.async_ import AsyncResult, AsyncResultTimeout
from grpyc.helpers import (
    BgServingThread,
    async_,
    buffiter,
    classpartial,
    exposed,
    restricted,
    service,
    timed,
)
from grpyc.netref import BaseNetref, syncreq
from grpyc.server import Server
from grpyc.service import Service

# The configuration SlaveService turns on: restricted() must hold even then.
PERMISSIVE = {
    "allow_all_attrs": True,
    "allow_pickle": True,
    "allow_setattr": True,
    "allow_delattr": True,
}


# ----------------------------------------------------------------- async_
def test_async_call_returns_async_result_with_value(pair):
    _, client = pair
    add = async_(client.root.add)
    result = add(1, 2, c=3)
    assert isinstance(result, AsyncResult)
    assert result.value == 6
    assert result.ready
    assert not result.error


def test_async_call_of_remote_function_proxy(pair):
    _, client = pair
    bump = client.root.getattr(client.root.make_thing(3), "bump")
    assert isinstance(bump, BaseNetref)
    assert async_(bump)(by=2).value == 5


def test_async_error_is_raised_from_value(pair):
    _, client = pair
    result = async_(client.root.fail)("bad news")
    result.wait()
    assert result.error
    with pytest.raises(ValueError, match="bad news"):
        result.value


def test_async_calls_run_concurrently(pair):
    _, client = pair
    sleep = async_(client.root.sleep)
    results = [sleep(0.2) for _ in range(5)]
    with gevent.Timeout(0.9):
        assert [r.value for r in results] == [0.2] * 5


def test_async_wrapper_is_cached_per_proxy(pair):
    _, client = pair
    echo = client.root.echo
    wrapper = async_(echo)
    assert async_(echo) is wrapper
    assert async_(wrapper) is wrapper
    assert repr(wrapper).startswith("async_(")


def test_async_cache_entry_dies_with_its_wrapper(pair):
    from grpyc import helpers

    _, client = pair
    echo = client.root.echo
    key = id(async_(echo))
    gc.collect()
    assert key not in helpers._async_wrappers
    assert id(echo) not in helpers._async_wrappers


def test_async_refuses_local_callable():
    with pytest.raises(TypeError, match="must be a Netref"):
        async_(len)


def test_async_refuses_non_callable_proxy(pair):
    _, client = pair
    thing = client.root.make_thing(1)
    with pytest.raises(TypeError, match="must be callable"):
        async_(thing)


# ------------------------------------------------------------------ timed
def test_timed_call_within_timeout_returns_value(pair):
    _, client = pair
    add = timed(client.root.add, 5)
    assert add(2, 3).value == 5
    assert repr(add).startswith("timed(") and repr(add).endswith(", 5)")


def test_timed_call_expires(pair):
    _, client = pair
    sleep = timed(client.root.sleep, 0.05)
    result = sleep(10)
    with gevent.Timeout(2), pytest.raises(AsyncResultTimeout, match="expired"):
        result.value
    assert result.expired


def test_timed_refuses_local_callable():
    with pytest.raises(TypeError, match="must be a Netref"):
        timed(print, 1)


# --------------------------------------------------------------- buffiter
def _count_buffiter_requests(monkeypatch, conn):
    counts = []
    original = conn.sync_request

    def counting(handler, *args):
        if handler == consts.HANDLE_BUFFITER:
            counts.append(args[1])
        return original(handler, *args)

    monkeypatch.setattr(conn, "sync_request", counting)
    return counts


def test_buffiter_fetches_in_growing_chunks(pair, monkeypatch):
    _, client = pair
    remote_list = client.root.make_list(*range(100))
    counts = _count_buffiter_requests(monkeypatch, client)
    assert list(buffiter(remote_list, chunk=3, max_chunk=20, factor=2)) == list(range(100))
    assert counts == [3, 6, 12, 20, 20, 20, 20, 20]


def test_buffiter_of_empty_remote_iterable(pair, monkeypatch):
    _, client = pair
    remote_list = client.root.make_list()
    counts = _count_buffiter_requests(monkeypatch, client)
    assert list(buffiter(remote_list)) == []
    assert counts == [10]


def test_buffiter_iterates_local_iterable_directly():
    assert list(buffiter(iter("abc"))) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factor": 0}, "factor must be >= 1, got 0"),
        ({"chunk": 0}, "chunk and max_chunk must be >= 1, got 0 and 1000"),
        ({"max_chunk": 0}, "chunk and max_chunk must be >= 1, got 10 and 0"),
    ],
)
def test_buffiter_refuses_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        buffiter([1], **kwargs)


# ------------------------------------------------------------- restricted
class Secretive:
    def __init__(self):
        self.value = 1
        self.secret = "classified"
        self._private = "private"

    def read(self):
        return "data"

    def write(self, text):
        self.secret = text

    def __call__(self):
        return "called"

    def __len__(self):
        return 3

    def __iter__(self):
        return iter([1, 2, 3])

    def __eq__(self, other):
        return True

    __hash__ = object.__hash__

    def __reduce_ex__(self, proto):
        return (Secretive, ())


class RestrictedService(Service):
    def __init__(self):
        self.obj = Secretive()

    def exposed_get(self):
        return restricted(self.obj, {"read", "value"}, {"value"})

    def exposed_get_readonly(self):
        return restricted(self.obj, ["value"], ())


@pytest.fixture(params=["default", "permissive"])
def restricted_pair(request, make_pair):
    config = PERMISSIVE if request.param == "permissive" else {"allow_public_attrs": True}
    service_instance = RestrictedService()
    _, client = make_pair(server_service=service_instance, server_config=config)
    return service_instance, client


def test_restricted_allows_listed_attributes(restricted_pair):
    server_service, client = restricted_pair
    view = client.root.get()
    assert view.read() == "data"
    assert view.value == 1
    view.value = 5
    assert server_service.obj.value == 5


@pytest.mark.parametrize("name", ["secret", "_private", "write", "_obj", "_attrs", "__dict__"])
def test_restricted_hides_other_attributes(restricted_pair, name):
    _, client = restricted_pair
    view = client.root.get()
    with pytest.raises(AttributeError, match="not one of the readable attributes"):
        syncreq(view, consts.HANDLE_GETATTR, name)


def test_restricted_hides_attributes_from_plain_access(restricted_pair):
    _, client = restricted_pair
    view = client.root.get()
    with pytest.raises(AttributeError, match="'secret' is not one of the readable"):
        view.secret
    with pytest.raises(AttributeError, match="'write' is not one of the readable"):
        view.write("x")


def test_restricted_refuses_callattr_of_its_own_accessors(restricted_pair):
    _, client = restricted_pair
    view = client.root.get()
    with pytest.raises(AttributeError, match="'_rpyc_getattr' is not one of the readable"):
        syncreq(view, consts.HANDLE_CALLATTR, "_rpyc_getattr", ("secret",), ())


def test_restricted_refuses_unlisted_setattr_and_any_delattr(restricted_pair):
    server_service, client = restricted_pair
    view = client.root.get()
    with pytest.raises(AttributeError, match="'secret' is not one of the writable"):
        view.secret = "leaked"
    with pytest.raises(AttributeError, match="'read' is not one of the writable"):
        view.read = None
    with pytest.raises(AttributeError, match="cannot delete 'value'"):
        del view.value
    assert server_service.obj.secret == "classified"
    assert server_service.obj.value == 1


def test_restricted_readonly_view_refuses_all_writes(restricted_pair):
    server_service, client = restricted_pair
    view = client.root.get_readonly()
    assert view.value == 1
    with pytest.raises(AttributeError, match="'value' is not one of the writable"):
        view.value = 2
    assert server_service.obj.value == 1


@pytest.mark.parametrize(
    ("handler", "args", "name"),
    [
        (consts.HANDLE_CALL, ((), ()), "__call__"),
        (consts.HANDLE_REPR, (), "__repr__"),
        (consts.HANDLE_STR, (), "__str__"),
        (consts.HANDLE_HASH, (), "__hash__"),
        (consts.HANDLE_CMP, (1, "__eq__"), "__eq__"),
        (consts.HANDLE_BUFFITER, (5,), "__next__"),
        (consts.HANDLE_CTXEXIT, (None,), "__exit__"),
        # OLDSLICING falls back to the legacy name once the modern one fails.
        (consts.HANDLE_OLDSLICING, ("__getitem__", "__getslice__", 0, 1, ()), "__getslice__"),
    ],
)
def test_restricted_implicit_paths_are_refused(restricted_pair, handler, args, name):
    _, client = restricted_pair
    view = client.root.get()
    with pytest.raises(AttributeError, match=f"'{name}' is not one of the readable"):
        syncreq(view, handler, *args)


def test_restricted_refuses_pickle_even_when_pickle_is_allowed(make_pair):
    _, client = make_pair(server_service=RestrictedService(), server_config=PERMISSIVE)
    view = client.root.get()
    with pytest.raises(AttributeError, match="'__reduce_ex__' is not one of the readable"):
        syncreq(view, consts.HANDLE_PICKLE, 4)


def test_restricted_view_is_not_callable_iterable_or_sized(restricted_pair):
    _, client = restricted_pair
    view = client.root.get()
    with pytest.raises(TypeError):
        view()
    with pytest.raises(TypeError):
        len(view)
    with pytest.raises(TypeError):
        iter(view)


def test_restricted_dir_shows_no_wrapped_names(restricted_pair):
    _, client = restricted_pair
    names = dir(client.root.get())
    assert "secret" not in names
    assert "write" not in names


def test_restricted_view_class_is_named_as_stock_names_it(restricted_pair):
    # The peer sees the view's class (its proxy's name, ``type(view).__name__``).
    import rpyc as stock

    _, client = restricted_pair
    stock_name = type(stock.restricted([], ["append"])).__name__
    assert type(restricted([], ["append"])).__name__ == stock_name == "Restricted"
    proxy_class_name = type(client.root.get()).__name__  # "module.qualname", as stock's
    assert proxy_class_name == f"grpyc.helpers.{stock_name}"


def test_restricted_returned_method_does_not_lead_back_to_the_object(make_pair):
    service_instance = RestrictedService()
    _, client = make_pair(
        server_service=service_instance, server_config={"allow_public_attrs": True}
    )
    read = client.root.get().read
    assert read() == "data"
    with pytest.raises(AttributeError, match="cannot access '__self__'"):
        read.__self__


def test_restricted_works_locally():
    obj = Secretive()
    view = restricted(obj, {"read"}, ())
    assert view.read() == "data"
    with pytest.raises(AttributeError, match="'secret' is not one of the readable"):
        view.secret
    with pytest.raises(AttributeError, match="'read' is not one of the writable"):
        view.read = 1
    assert repr(view).startswith("<restricted Secretive object at 0x")


# -------------------------------------------------------- BgServingThread
def test_bg_serving_thread_leaves_connection_served(pair):
    _, client = pair
    bg = BgServingThread(client)
    assert bg.active
    assert client.root.call(lambda x: x + 1, 1) == 2
    bg.stop()
    assert not bg.active
    assert bg.join(timeout=1)
    assert not client.closed
    assert client.root.echo("still open") == "still open"


def test_bg_serving_thread_calls_back_when_connection_ends(pair):
    server, client = pair
    ended = gevent.event.Event()
    bg = BgServingThread(client, callback=ended.set)
    server.close()
    assert ended.wait(5)
    assert bg.join(timeout=1)
    assert not bg.active
    bg.stop()


def test_bg_serving_thread_join_times_out_while_connection_lives(pair):
    _, client = pair
    bg = BgServingThread(client)
    assert bg.join(timeout=0.01) is False
    bg.stop()
    bg.stop()


# ------------------------------------------------------------ classpartial
class Configured(Service):
    """Docs of Configured."""

    def __init__(self, first, second=0):
        self.args = (first, second)

    def exposed_args(self):
        return self.args


def test_classpartial_binds_constructor_arguments():
    partial_cls = classpartial(Configured, 1, second=2)
    instance = partial_cls()
    assert type(instance) is Configured
    assert instance.args == (1, 2)
    assert partial_cls.__name__ == "Configured"
    assert partial_cls.__doc__ == "Docs of Configured."
    assert partial_cls.get_service_name() == "CONFIGURED"
    assert issubclass(partial_cls, Configured)


def test_classpartial_service_served_per_connection():
    server = Server(classpartial(Configured, "a", second="b"), hostname="127.0.0.1", port=0)
    server.listen()
    try:
        with factory.connect("127.0.0.1", server.port) as first:
            assert first.root.args() == ("a", "b")
            with factory.connect("127.0.0.1", server.port) as second:
                assert second.root.args() == ("a", "b")
    finally:
        server.close()


# ------------------------------------------------------ exposed / service
@service
class Calculator(Service):
    @exposed
    def add(self, a, b):
        return a + b

    @exposed("remote_")
    def sub(self, a, b):
        return a - b

    @staticmethod
    @exposed
    def version():
        return "1.0"

    @exposed
    class Inner:
        @exposed
        def hello(self):
            return "hi"

    def hidden(self):
        return "no"


def test_service_decorator_adds_exposed_aliases():
    assert Calculator.exposed_add is Calculator.add
    assert Calculator.remote_sub is Calculator.sub
    assert not hasattr(Calculator, "exposed_sub")
    assert Calculator.exposed_version() == "1.0"
    assert Calculator().exposed_version() == "1.0"
    assert Calculator.exposed_Inner is Calculator.Inner
    assert Calculator.Inner().exposed_hello() == "hi"
    assert not hasattr(Calculator, "exposed_hidden")


def test_service_decorator_on_subclass_adds_no_double_prefix():
    @service
    class Sub(Calculator):
        pass

    assert Sub.exposed_add is Calculator.add
    assert not hasattr(Sub, "exposed_exposed_add")


def test_exposed_names_reachable_over_connection(make_pair):
    _, client = make_pair(server_service=Calculator())
    assert client.root.add(2, 3) == 5
    assert client.root.version() == "1.0"
    assert client.root.Inner().hello() == "hi"
    with pytest.raises(AttributeError):
        client.root.hidden()


def test_exposed_refuses_non_callable():
    with pytest.raises(TypeError, match="not int"):
        exposed(42)
