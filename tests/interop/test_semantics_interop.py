"""What RPyC code observes through a connection: grpyc answers as stock rpyc does.

Each probe runs against a stock and a grpyc server, from a stock and a grpyc
client, and the answers are compared with stock-to-stock (drop-in issue,
gaps 2, 6, 7 and 8).
"""

import gc
import inspect
import json
import logging
import pickle
import subprocess
import sys
from typing import ClassVar

import pytest
import rpyc

import grpyc
from grpyc.channel import Channel
from grpyc.protocol import Connection
from grpyc.stream import SocketStream

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def start_server(impl, *flags):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.interop.semantics_peer", impl, *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, int(proc.stdout.readline())


@pytest.fixture(scope="module")
def servers():
    started = {impl: start_server(impl) for impl in ("stock", "grpyc")}
    yield {impl: port for impl, (_proc, port) in started.items()}
    for proc, _port in started.values():
        proc.kill()
        proc.wait()
        proc.stdout.close()


CLIENTS = {"stock": rpyc, "grpyc": grpyc}


def connect(client, port, **config):
    return CLIENTS[client].connect("127.0.0.1", port, config={"allow_pickle": False, **config})


def outcome(func):
    try:
        return ("value", func())
    except Exception as exc:
        return ("raises", type(exc).__name__)


def attribute_probes(conn):
    holder = conn.root.holder()
    manager = conn.root.manager()

    def with_block():
        try:
            with manager:
                raise KeyError("inside")
        except KeyError:
            return manager.seen

    return {
        "hasattr_unexposed": hasattr(conn.root, "exposed_nothing"),
        "hasattr_private_method": hasattr(holder, "_private"),
        "broken_property": outcome(lambda: holder.broken),
        "ismethod_remote_method": inspect.ismethod(holder.method),
        "method_call": holder.method(),
        "with_remote_manager": outcome(with_block),
        "class_of_list": conn.root.data().__class__ is list,
        "module_type_repr": repr(type(conn.root.module())).replace(
            "grpyc.netref", "rpyc.core.netref"
        ),
        "pickled_value": outcome(lambda: pickle.loads(pickle.dumps(conn.root.data()))),
        "close_request": outcome(lambda: conn.sync_request(rpyc.core.consts.HANDLE_CLOSE)),
    }


@pytest.mark.parametrize("server", ["stock", "grpyc"])
@pytest.mark.parametrize("client", ["stock", "grpyc"])
def test_attribute_semantics_are_rpyc_s(servers, server, client):
    expected = {
        "hasattr_unexposed": False,
        "hasattr_private_method": False,
        "broken_property": ("raises", "AttributeError"),
        "ismethod_remote_method": True,  # as stock: the proxy's class is the local method type
        "method_call": 7,
        "with_remote_manager": ("value", True),
        "class_of_list": True,
        "module_type_repr": "<netref class 'rpyc.core.netref.unittest'>",
        # The server allows pickle: a client may pickle its proxies (allow_pickle
        # on the client side only matters where peer bytes are unpickled at once).
        "pickled_value": ("value", [1, 2, 3]),
        "close_request": ("raises", "EOFError"),
    }
    conn = connect(client, servers[server])
    try:
        assert attribute_probes(conn) == expected
    finally:
        conn.close()


def missing_attribute_probes(conn):
    """What a caller sees of three reads of an attribute the peer lacks, and
    how many times the peer looked it up for them."""
    holder = conn.root.holder()
    seen = {
        "hasattr": hasattr(holder, "counted_miss"),
        "default": getattr(holder, "counted_miss", "default"),
        "read": outcome(lambda: holder.counted_miss),
    }
    return seen, holder.misses


MISSING_SEEN = {"hasattr": False, "default": "default", "read": ["raises", "AttributeError"]}


@pytest.mark.parametrize("server", ["stock", "grpyc"])
@pytest.mark.parametrize("client", ["stock", "grpyc"])
def test_a_missing_attribute_is_asked_for_once(servers, server, client):
    """Stock's proxy asks the peer twice for an attribute it lacks (its
    ``__getattr__`` repeats the GETATTR that ``__getattribute__`` sent);
    grpyc's asks once and raises the peer's answer (docs/semantics.md,
    "Attribute access"). What the caller sees is the same."""
    conn = connect(client, servers[server])
    try:
        seen, lookups = _as_json(missing_attribute_probes(conn))
    finally:
        conn.close()
    assert seen == MISSING_SEEN
    assert lookups == (6 if client == "stock" else 3)


_MISSING_PATCHED = """
from gevent import monkey

monkey.patch_all()
import json, sys
import grpyc
from tests.interop.test_semantics_interop import missing_attribute_probes

conn = grpyc.connect("127.0.0.1", int(sys.argv[1]))
print(json.dumps(missing_attribute_probes(conn)))
"""


@pytest.mark.parametrize("server", ["stock", "grpyc"])
def test_a_missing_attribute_is_asked_for_once_under_patch_all_and_from_threads(servers, server):
    """The same probe from a grpyc client under patch_all() and from a plain
    OS thread: the caller sees what stock's caller sees, the peer looks once."""
    import threading

    done = subprocess.run(
        [sys.executable, "-c", _MISSING_PATCHED, str(servers[server])],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout) == [MISSING_SEEN, 3]
    from_thread = []

    def probe():
        conn = connect("grpyc", servers[server])
        try:
            from_thread.append(_as_json(missing_attribute_probes(conn)))
        finally:
            conn.close()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join(timeout=60)
    assert from_thread == [[MISSING_SEEN, 3]]


class _Local:
    """An object of the client's own, sent to the server by reference."""


def _exported(conn):
    """How many objects of ours the peer holds references to (stock's table or ours)."""
    table = conn._local_objects
    return len(table._dict) if hasattr(table, "_dict") else len(table)


def reference_probes(conn):
    """What a client counts of one remote object received again and again (one
    proxy, one more reference each time, released together by one DEL), and
    whether the server lets go of an object of ours it echoed back."""

    def refcount(proxy):
        return object.__getattribute__(proxy, "____refcount__")

    module = conn.root.module  # the same remote object on every call
    first = module()
    counts = [refcount(first)]
    second = module()
    counts.append(refcount(first))
    same_proxy = second is first
    del first, second
    gc.collect()
    counts.append(refcount(module()))  # a new proxy: its DEL released the three
    mine = _Local()
    echoed_is_mine = conn.root.sleep_then(0, mine) is mine
    for _ in range(100):  # bounded: the peer's DEL comes with a later frame
        if _exported(conn) == 0:
            break
        conn.root.data()
    return {
        "refcounts": counts,
        "same_proxy": same_proxy,
        "echoed_is_mine": echoed_is_mine,
        "exported_after_release": _exported(conn),
    }


@pytest.mark.parametrize("server", ["stock", "grpyc"])
@pytest.mark.parametrize("client", ["stock", "grpyc"])
def test_reference_counting_is_rpyc_s(servers, server, client):
    conn = connect(client, servers[server])
    try:
        assert reference_probes(conn) == {
            "refcounts": [1, 2, 1],
            "same_proxy": True,
            "echoed_is_mine": True,
            "exported_after_release": 0,
        }
    finally:
        conn.close()


def special_method_probes(conn):
    """Python's special methods on proxies of two remote classes (grpyc's proxy
    classes share their forwarding functions): each reaches its own object."""
    holder, manager, data = conn.root.holder(), conn.root.manager(), conn.root.data()

    def formatted(proxy):
        return format(proxy, "").split(" object at ")[0]

    return {
        "format_holder": formatted(holder),
        "format_manager": formatted(manager),
        "len_data": len(data),
        "sizeof": outcome(lambda: sys.getsizeof(holder) > 0),  # refused by the policy
    }


@pytest.mark.parametrize("server", ["stock", "grpyc"])
def test_special_methods_of_proxies_are_stocks(servers, server):
    stock = _stock_client_probes(servers[server], "special_methods")
    assert stock["format_holder"].endswith("Holder") and stock["len_data"] > 0
    for _ in range(2):  # a second connection: its proxy classes share the functions
        conn = connect("grpyc", servers[server])
        try:
            assert _as_json(special_method_probes(conn)) == stock
        finally:
            conn.close()


def method_doc_probes(conn):
    """Docstrings a client sees: of special methods on the proxy's class (from
    the server's INSPECT answer) and of methods read from the proxy itself
    (GETATTR of the bound method, then of its ``__doc__``)."""
    holder, data = conn.root.holder(), conn.root.data()
    return {
        "special": {
            name: getattr(type(data), name).__doc__
            for name in ("__len__", "__getitem__", "__contains__")
        },
        "read": {
            name: getattr(holder, name).__doc__
            for name in ("method", "documented", "indented", "inherited")
        },
    }


def inspect_answer_probes(conn):
    """The server's INSPECT answer as a stock client keeps it: every method of
    the class, with its docstring cleaned (own, inherited, builtin)."""
    holder, data = conn.root.holder(), conn.root.data()
    names = {
        "holder": (holder, ("method", "documented", "indented", "inherited")),
        "data": (data, ("append", "__len__", "sort")),
        "root": (conn.root, ("exposed_holder",)),
    }
    return {
        label: {name: getattr(type(proxy), name).__doc__ for name in method_names}
        for label, (proxy, method_names) in names.items()
    }


def test_inspect_answers_are_stocks_also_the_second_time(servers):
    """A stock client sees the same INSPECT answers from both servers, also on
    a second connection (grpyc keeps cleaned docstrings and which types are
    routines between them)."""
    seen = {}
    for server in ("stock", "grpyc"):
        for attempt in range(2):
            conn = connect("stock", servers[server])
            try:
                seen[server, attempt] = _as_json(inspect_answer_probes(conn))
            finally:
                conn.close()
    expected = seen["stock", 0]
    assert expected["holder"]["indented"] == "First line.\n\n    Indented further,\nand back."
    assert expected["holder"]["documented"].startswith("Overridden below")
    assert expected["data"]["append"].startswith("Append object")
    assert all(answer == expected for answer in seen.values())


@pytest.mark.parametrize("server", ["stock", "grpyc"])
def test_proxy_classes_hold_special_methods_only_as_semantics_md_says(servers, server):
    """grpyc's proxy classes define only special methods (docs/semantics.md,
    "Proxy classes"); a method read from the proxy is stock's."""
    stock = _stock_client_probes(servers[server], "method_docs")
    assert stock["special"]["__len__"] == "Return len(self)."
    for _ in range(2):
        conn = connect("grpyc", servers[server])
        try:
            assert _as_json(method_doc_probes(conn)) == stock
            holder = conn.root.holder()
            with pytest.raises(AttributeError):
                type(holder).method  # stock's class has it
            assert holder.method() == 7
        finally:
            conn.close()


PROBES = {
    "attributes": attribute_probes,
    "method_docs": method_doc_probes,
    "references": reference_probes,
    "special_methods": special_method_probes,
}


def _as_json(probes):
    return json.loads(json.dumps(probes))


def _stock_client_probes(port, probes):
    conn = connect("stock", port)
    try:
        return _as_json(PROBES[probes](conn))
    finally:
        conn.close()


_PROBES_PATCHED = """
from gevent import monkey

monkey.patch_all()
import json, sys
import grpyc
from tests.interop.test_semantics_interop import PROBES

conn = grpyc.connect("127.0.0.1", int(sys.argv[1]))
print(json.dumps(PROBES[sys.argv[2]](conn)))
"""


@pytest.mark.parametrize("probes", sorted(PROBES))
@pytest.mark.parametrize("server", ["stock", "grpyc"])
def test_semantics_under_patch_all_are_stocks(servers, server, probes):
    """The probes from a grpyc client in a process under patch_all(), against
    what a stock client sees of the same server."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBES_PATCHED, str(servers[server]), probes],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout) == _stock_client_probes(servers[server], probes)


@pytest.mark.parametrize("probes", sorted(PROBES))
@pytest.mark.parametrize("server", ["stock", "grpyc"])
def test_semantics_from_a_plain_thread_are_stocks(servers, server, probes):
    """The probes from a plain OS thread, each client making its own
    connection there, as RPyC programs with threads do."""
    import threading

    seen = {}

    def probe(client):
        conn = connect(client, servers[server])
        try:
            seen[client] = _as_json(PROBES[probes](conn))
        finally:
            conn.close()

    for client in ("stock", "grpyc"):
        thread = threading.Thread(target=probe, args=(client,))
        thread.start()
        thread.join(timeout=60)
    assert seen["grpyc"] == seen["stock"]


@pytest.mark.parametrize("client", ["stock", "grpyc"])
def test_repr_without_safe_attrs_works_as_in_rpyc(client):
    answers = {}
    for impl in ("stock", "grpyc"):
        proc, port = start_server(impl, "no-safe-attrs")
        try:
            conn = connect(client, port)
            try:
                answers[impl] = (
                    outcome(lambda c=conn: repr(c.root.data())),
                    outcome(lambda c=conn: str(c.root.data())),
                )
            finally:
                conn.close()
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
    assert answers["grpyc"] == answers["stock"] == (("value", "[1, 2, 3]"), ("value", "[1, 2, 3]"))


class CountingConnection(Connection):
    """RPyC's raw-message entry point, overridden: it sees every message."""

    seen: ClassVar[list] = []

    def _dispatch(self, data):
        CountingConnection.seen.append(data[0])
        return super()._dispatch(data)


class CountingService(grpyc.Service):
    _protocol = CountingConnection


def test_dispatch_sees_every_raw_message(servers):
    CountingConnection.seen = []
    conn = grpyc.connect("127.0.0.1", servers["stock"], service=CountingService)
    try:
        assert conn.root.holder().method() == 7
        # GETROOT, INSPECT of the service class, GETATTR holder, CALL, INSPECT
        # of Holder, GETATTR method, CALL: seven replies, as stock makes them.
        assert CountingConnection.seen.count(2) == 7
        wrapped = []
        original = conn._dispatch
        conn._dispatch = lambda data: (wrapped.append(data[0]), original(data))[1]
        before = len(CountingConnection.seen)
        assert conn.root.holder().method() == 7
        # A wrapper set on the instance sees every message the class sees.
        assert wrapped == CountingConnection.seen[before:]
        assert wrapped.count(2) >= 4
    finally:
        conn.close()


@pytest.mark.parametrize("server", ["stock", "grpyc"])
def test_a_call_after_a_timed_out_call_gets_its_own_reply(servers, server):
    """The late reply to a call that timed out comes just before the next
    call's own (the server sleeps 1.0 s; the first call gives up at 0.6 s, the
    second waits from then until 1.2 s): the next call returns its own value."""

    def probe(client):
        conn = connect(client, servers[server], sync_request_timeout=0.6)
        try:
            sleep_then = conn.root.sleep_then
            return [
                outcome(lambda: sleep_then(1.0, "late")),
                outcome(lambda: sleep_then(0, "next")),
                outcome(lambda: sleep_then(0, "after")),
            ]
        finally:
            conn.close()

    seen = {client: probe(client) for client in ("stock", "grpyc")}
    assert seen["grpyc"] == seen["stock"]
    assert seen["stock"] == [("raises", "TimeoutError"), ("value", "next"), ("value", "after")]


_TIMED_OUT_PROBE_PATCHED = """
from gevent import monkey

monkey.patch_all()
import json, sys
import grpyc

conn = grpyc.connect("127.0.0.1", int(sys.argv[1]), config={"sync_request_timeout": 0.6})
seen = []
for seconds, value in ((1.0, "late"), (0, "next"), (0, "after")):
    try:
        seen.append(["value", conn.root.sleep_then(seconds, value)])
    except Exception as exc:
        seen.append(["raises", type(exc).__name__])
conn.close()
print(json.dumps(seen))
"""


@pytest.mark.parametrize("server", ["stock", "grpyc"])
def test_a_call_after_a_timed_out_call_under_patch_all_gets_its_own_reply(servers, server):
    """The same probe from a grpyc client in a process under patch_all(): it sees
    what the stock client sees (the test above checks stock gives these)."""
    done = subprocess.run(
        [sys.executable, "-c", _TIMED_OUT_PROBE_PATCHED, str(servers[server])],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    seen = [tuple(pair) for pair in json.loads(done.stdout)]
    assert seen == [("raises", "TimeoutError"), ("value", "next"), ("value", "after")]


def test_logger_none_logs_nothing_as_in_rpyc(servers, caplog):
    caplog.set_level(logging.DEBUG)
    conn = grpyc.connect("127.0.0.1", servers["stock"], config={"logger": None})
    with pytest.raises(AttributeError):
        conn.root.holder().broken
    conn.abort("test")  # also the path that logs when closing
    assert [r for r in caplog.records if r.name.startswith("grpyc.protocol")] == []


def test_connection_over_a_plain_socket_stream_is_usable_from_any_thread(servers):
    # The channel's stream decides the runtime: built in a thread without a
    # hub, it is a plain stream, served by RPyC's model.
    import threading

    result = {}

    def work():
        stream = SocketStream.connect("127.0.0.1", servers["grpyc"])
        conn = grpyc.connect_channel(Channel(stream))
        result["cooperative"] = conn.cooperative
        result["value"] = list(conn.root.data())
        conn.close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    assert result == {"cooperative": False, "value": [1, 2, 3]}


_THREAD_LOCAL_PROBE = """
import sys
if sys.argv[2] == "patched":
    from gevent import monkey
    monkey.patch_all()
import threading
if sys.argv[1] == "grpyc":
    import grpyc
    grpyc.install_as_rpyc()
import rpyc
from rpyc.utils.server import ThreadedServer

local = threading.local()


class Service(rpyc.Service):
    def exposed_set(self, value):
        local.value = value

    def exposed_get(self):
        return getattr(local, "value", None)


server = ThreadedServer(Service, hostname="127.0.0.1", port=0)
server._start_in_thread()
first = rpyc.connect("127.0.0.1", server.port)
second = rpyc.connect("127.0.0.1", server.port)
first.root.set("first")
print(first.root.get(), second.root.get(), first.root.get())
first.close()
second.close()
server.close()
"""


@pytest.mark.parametrize("patching", ["unpatched", "patched"])
def test_thread_local_state_across_connections_is_as_semantics_md_says(patching):
    """stock ThreadedServer: one thread per connection, so `threading.local`
    is per connection and kept between its requests. A grpyc server without
    monkey patching serves all its connections in one OS thread, so it is
    shared (docs/semantics.md); patched, it follows greenlets and matches
    stock: the pooled reader a request left the value on stays with that
    connection."""
    seen = {}
    for impl in ("stock", "grpyc"):
        result = subprocess.run(
            [sys.executable, "-c", _THREAD_LOCAL_PROBE, impl, patching],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        seen[impl] = result.stdout.split()
    assert seen["stock"] == ["first", "None", "first"]
    expected_grpyc = ["first", "first", "first"] if patching == "unpatched" else seen["stock"]
    assert seen["grpyc"] == expected_grpyc


def call_shape_probes(conn):
    """CALL and CALLATTR requests with every shape of kwargs a peer may send."""
    consts = rpyc.core.consts
    holder = conn.root.holder()
    shapes = {
        "no kwargs": (),
        "kwargs None": None,
        "kwargs pairs": (("unexpected", 1),),
        "kwargs not pairs": (1, 2),
        "kwargs a proxied empty dict": {},
        "kwargs a proxied dict": {"unexpected": 1},
    }
    probes = {}
    for name, kwargs in shapes.items():
        probes[f"CALL {name}"] = outcome(
            lambda kwargs=kwargs: conn.sync_request(consts.HANDLE_CALL, holder.method, (), kwargs)
        )
        probes[f"CALLATTR {name}"] = outcome(
            lambda kwargs=kwargs: conn.sync_request(
                consts.HANDLE_CALLATTR, holder, "method", (), kwargs
            )
        )
    return probes


@pytest.mark.parametrize("client", ["stock", "grpyc"])
def test_call_requests_take_kwargs_as_stock_does(servers, client):
    """The handlers' fast path for calls without keywords answers as stock rpyc does."""
    found = {}
    for server in ("stock", "grpyc"):
        conn = connect(client, servers[server])
        try:
            found[server] = call_shape_probes(conn)
        finally:
            conn.close()
    assert found["grpyc"] == found["stock"]
    assert found["stock"]["CALL no kwargs"] == ("value", 7)
    assert found["stock"]["CALL kwargs pairs"] == ("raises", "TypeError")


_GEVENT_WAIT_PLAIN = """
import json, sys, time
import gevent
import rpyc

conn = rpyc.connect("127.0.0.1", int(sys.argv[1]))  # no gevent hub here yet
runtime = type(getattr(conn, "_hub", None)).__name__
results = [rpyc.async_(conn.root.sleep_then)(0.05 * i, i) for i in range(4)]
began = time.monotonic()
try:
    done = len(gevent.wait(results, timeout=10))
except AttributeError as exc:
    done = "AttributeError"
waited = time.monotonic() - began
late = rpyc.async_(conn.root.sleep_then)(1.0, "late")
late.set_expiry(0.1)
try:
    expired = [r.expired for r in gevent.wait([late], timeout=10)]
except AttributeError:
    expired = "AttributeError"
print(json.dumps({"runtime": runtime, "done": done, "values": [r.value for r in results],
                  "waited_under_5s": waited < 5, "expired": expired}))
"""


@pytest.mark.parametrize("server", ["stock", "grpyc"])
def test_gevent_wait_on_results_of_a_connection_made_outside_gevent(servers, server):
    """A program that connects before it uses gevent (the plain-thread runtime)
    and then waits for results with gevent.wait(): each wait ends when its
    results arrive or expire, with nobody else reading. Stock's AsyncResult has
    no rawlink (docs/semantics.md): the same program gets AttributeError."""
    answers = {}
    for client in ("stock", "grpyc"):
        prelude = "import grpyc; grpyc.install_as_rpyc()\n" if client == "grpyc" else ""
        done = subprocess.run(
            [sys.executable, "-c", prelude + _GEVENT_WAIT_PLAIN, str(servers[server])],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        answers[client] = json.loads(done.stdout)
    assert answers["stock"]["done"] == "AttributeError"
    assert answers["grpyc"] == {
        "runtime": "ThreadHub",
        "done": 4,
        "values": answers["stock"]["values"],  # the same results, however waited for
        "waited_under_5s": True,
        "expired": [True],
    }


_GEVENT_WAIT_AFTER_BLOCKING = """
import json, sys, time
import gevent
import grpyc

conn = grpyc.connect("127.0.0.1", int(sys.argv[1]))  # the plain-thread runtime
gevent.get_hub()
time.sleep(0.5)  # the thread blocks outside gevent: the loop's clock falls behind
slow = grpyc.async_(conn.root.sleep_then)(1.0, "slow")
began = time.monotonic()
done = gevent.wait([slow], timeout=0.3)
print(json.dumps({"done": len(done), "waited": time.monotonic() - began}))
"""


@pytest.mark.parametrize("server", ["stock", "grpyc"])
def test_gevent_wait_times_out_on_time_after_the_thread_blocked(servers, server):
    """gevent.wait()'s timeout on results of the plain-thread runtime runs its
    full length even when the thread blocked outside gevent just before (the
    loop's clock was stale: the timeout fired at once)."""
    done = subprocess.run(
        [sys.executable, "-c", _GEVENT_WAIT_AFTER_BLOCKING, str(servers[server])],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    answer = json.loads(done.stdout)
    assert answer["done"] == 0
    assert answer["waited"] >= 0.25, answer  # done == 0: it did not wait for the reply either
