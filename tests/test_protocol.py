"""Connection behaviour over a socketpair: calls, references, errors, lifecycle."""

import gc
import os
import threading
import time

import gevent
import pytest
from gevent.event import Event

from grpyc import consts
from grpyc.async_ import AsyncResult, AsyncResultTimeout
from grpyc.protocol import DEFAULT_CONFIG, Connection, PingError, check_attr
from grpyc.service import Service
from tests.services import TestService, Thing
from tests.test_faults import wait_until


def outcome_of(func, *args):
    """Run ``func(*args)``; return its value or the exception it raised."""
    try:
        return func(*args)
    except Exception as exc:
        return exc


SEED_KEYS = {
    "allow_all_attrs": False,
    "allow_delattr": False,
    "allow_exposed_attrs": True,
    "allow_getattr": True,
    "allow_pickle": False,
    "allow_public_attrs": False,
    "allow_safe_attrs": True,
    "allow_setattr": False,
    "before_closed": None,
    "bind_threads": False,
    "close_catchall": False,
    "connid": None,
    "credentials": None,
    "endpoints": None,
    "exposed_prefix": "exposed_",
    "import_custom_exceptions": False,
    "include_local_traceback": True,
    "include_local_version": True,
    "instantiate_custom_exceptions": False,
    "instantiate_oldstyle_exceptions": False,
    "log_exceptions": True,
    "logger": None,
    "propagate_KeyboardInterrupt_locally": True,
    "propagate_SystemExit_locally": False,
    "sync_request_timeout": 30,
}


def test_default_config_has_every_seed_key_and_default():
    for key, value in SEED_KEYS.items():
        assert DEFAULT_CONFIG[key] == value, key
    assert {"__eq__", "__iter__", "__next__", "__format__", "next"} <= DEFAULT_CONFIG["safe_attrs"]
    assert len(DEFAULT_CONFIG["safe_attrs"]) == 80  # the seed document lists 80


def test_root_call_with_values_and_kwargs(pair):
    _, client = pair
    assert client.root.echo(42) == 42
    assert client.root.add(1, 2, c=3) == 6
    assert client.root.echo(("a", b"b", 1.5, None, (1, 2))) == ("a", b"b", 1.5, None, (1, 2))


def test_exact_rpyc_method_lookup_switch(make_pair):
    _, client = make_pair(client_config={"local_method_lookup": False})
    method = client.root.echo
    assert type(method).__name__ == "builtins.method"
    assert method(7) == 7


def test_netref_to_remote_list_and_dict(make_pair):
    _, client = make_pair(server_config={"allow_public_attrs": True})
    remote_list = client.root.make_list(3, 1, 2)
    assert len(remote_list) == 3
    assert remote_list[0] == 3
    assert list(remote_list) == [3, 1, 2]
    assert 2 in remote_list
    remote_list.append(9)
    assert remote_list[-1] == 9
    assert isinstance(remote_list, list)
    remote_dict = client.root.make_dict(a=1)
    remote_dict["b"] = 2
    assert sorted(remote_dict.keys()) == ["a", "b"]
    assert remote_dict["b"] == 2


def test_netref_to_remote_object_and_operators(make_pair):
    _, client = make_pair(server_config={"allow_public_attrs": True})
    thing = client.root.make_thing(5)
    assert thing.get() == 5
    assert len(thing) == 5
    with thing as entered:
        assert entered.get() == 105
    assert thing.get() == 5
    assert "Thing" in repr(thing)
    remote_list = client.root.make_list(1, 2)
    assert list(remote_list * 2) == [1, 2, 1, 2]
    assert remote_list == remote_list
    assert hash(client.root.echo(("x", 1))) == hash(("x", 1))


def test_local_object_travels_by_reference_and_back(pair):
    _, client = pair
    local = [1, 2, 3]
    assert client.root.length(local) == 3
    assert client.root.echo(local) is local


def test_callback_runs_on_the_client(pair):
    _, client = pair
    seen = []

    def callback(value):
        seen.append(value)
        return value * 2

    assert client.root.call(callback, 21) == 42
    assert seen == [21]


def test_remote_exception_carries_remote_traceback(pair):
    _, client = pair
    with pytest.raises(ValueError, match="boom") as info:
        client.root.fail()
    assert "exposed_fail" in str(info.value)
    with pytest.raises(KeyError):
        client.root.raise_key()


def test_async_request_delivers_value(pair):
    _, client = pair
    result = client.async_request(consts.HANDLE_CALLATTR, client.root, "echo", (5,), ())
    assert isinstance(result, AsyncResult)
    assert result.value == 5
    assert result.ready and not result.error


def test_async_results_are_gevent_waitable(pair):
    _, client = pair
    root = client.root
    results = [
        client.async_request(consts.HANDLE_CALLATTR, root, "sleep", (t,), ()) for t in (0.2, 0.01)
    ]
    done = gevent.wait(results, count=1, timeout=5)
    assert done == [results[1]]
    assert results[1].value == 0.01


def test_async_result_expiry(pair):
    _, client = pair
    result = client.async_request(
        consts.HANDLE_CALLATTR, client.root, "sleep", (1,), (), timeout=0.05
    )
    with pytest.raises(AsyncResultTimeout):
        result.value
    assert result.expired


def test_ping_echoes(pair):
    _, client = pair
    client.ping()
    client.ping(b"data", timeout=2)


def test_ping_mismatch_raises_ping_error(make_pair):
    class Twisted(Connection):
        def _try_ping_inline(self, *args):
            return False

        def _handle_ping(self, data):
            return "something else"

    class TwistedService(TestService):
        _protocol = Twisted

    _, client = make_pair(server_service=TwistedService())
    with pytest.raises(PingError, match="mismatch"):
        client.ping("hello")


def test_ping_raises_eof_when_peer_is_gone(pair):
    server, client = pair
    server._hub.shutdown(EOFError("gone"))
    with pytest.raises(EOFError):
        client.ping(timeout=2)


def test_close_from_client_closes_both_sides(pair):
    server, client = pair
    client.close()
    assert client.closed
    assert server._hub.wait_closed(timeout=5)
    assert server.closed
    with pytest.raises(EOFError):
        client.root.echo(1)


def test_close_from_server_fails_client_calls_with_eof(pair):
    server, client = pair
    root = client.root
    call = gevent.spawn(outcome_of, root.sleep, 5)
    gevent.sleep(0.05)
    server.close()
    assert isinstance(call.get(timeout=1), EOFError)


def test_private_attribute_is_refused(pair):
    _, client = pair
    thing = client.root.make_thing(1)
    with pytest.raises(AttributeError, match="_secret"):
        thing._secret
    with pytest.raises(AttributeError, match="_secret"):
        client.sync_request(consts.HANDLE_GETATTR, thing, "_secret")
    with pytest.raises(AttributeError, match="allow_delattr"):
        del thing.value


def test_setattr_refused_by_default(pair):
    _, client = pair
    thing = client.root.make_thing(1)
    with pytest.raises(AttributeError, match="allow_setattr"):
        thing.value = 3


def test_check_attr_maps_exposed_names():
    class Obj:
        def exposed_run(self):
            return 1

    config = dict(DEFAULT_CONFIG)
    assert check_attr(config, Obj(), "run", "allow_getattr") == "exposed_run"
    assert check_attr(config, Obj(), "__len__", "allow_getattr") == "__len__"
    with pytest.raises(AttributeError):
        check_attr(config, Obj(), "secret", "allow_getattr")
    public = {**config, "allow_public_attrs": True}
    assert check_attr(public, Obj(), "secret", "allow_getattr") == "secret"


def test_200_greenlets_share_one_connection(pair):
    _, client = pair
    root = client.root
    jobs = [gevent.spawn(root.add, i, 1000) for i in range(200)]
    gevent.joinall(jobs, timeout=20, raise_error=True)
    assert [job.value for job in jobs] == [i + 1000 for i in range(200)]


def test_ten_sleeping_calls_overlap(pair):
    _, client = pair
    root = client.root
    started = time.monotonic()
    jobs = [gevent.spawn(root.sleep, 0.2) for _ in range(10)]
    gevent.joinall(jobs, timeout=5, raise_error=True)
    assert time.monotonic() - started < 0.8


def test_slow_handler_does_not_delay_fast_one(pair):
    _, client = pair
    root = client.root
    slow = gevent.spawn(root.sleep, 1.0)
    gevent.sleep(0)
    started = time.monotonic()
    assert root.echo(1) == 1
    assert time.monotonic() - started < 0.5
    slow.kill()


def test_nested_callbacks_depth_100(make_pair):
    box = {}

    class Client(Service):
        def exposed_again(self, depth):
            return box["root"].bounce(box["callback"], depth)

    _, client = make_pair(client_service=Client())
    box["root"] = client.root

    def callback(depth):
        return box["root"].bounce(callback, depth)

    box["callback"] = callback
    assert client.root.bounce(callback, 100) == 100


def test_timed_out_call_reply_is_dropped(make_pair):
    _, client = make_pair(client_config={"sync_request_timeout": 0.05})
    root = client.root
    with pytest.raises(AsyncResultTimeout):
        root.sleep(0.3)
    assert not client._hub.pending
    gevent.sleep(0.4)
    assert root.echo("after") == "after"
    assert root.add(2, 3) == 5


def test_exported_objects_released_when_proxies_die(pair):
    server, client = pair
    root = client.root
    things = [root.make_thing(i) for i in range(50)]
    assert len(server._local_objects) >= 50
    del things
    gc.collect()
    assert root.echo(1) == 1
    deadline = time.monotonic() + 5
    while len(server._local_objects) > 1 and time.monotonic() < deadline:
        server._hub.wait_frame(0.1)
    assert len(server._local_objects) == 1  # only the root service remains


def test_a_dead_proxy_is_released_without_other_traffic(pair):
    # No further call carries the DEL: the deferred flush writes it on its own.
    from grpyc._writer import DEFERRED_FLUSH_DELAY

    server, client = pair
    thing = client.root.make_thing(1)
    exported = len(server._local_objects)
    del thing
    gc.collect()
    started = time.monotonic()
    while len(server._local_objects) == exported and time.monotonic() - started < 5:
        gevent.sleep(0.001)
    assert len(server._local_objects) < exported
    assert time.monotonic() - started < DEFERRED_FLUSH_DELAY + 0.5


def test_a_dead_proxy_rides_with_the_next_request(pair, monkeypatch):
    # The DEL goes out in the same write as the next request, not on its own.
    _server, client = pair
    root = client.root
    thing = root.make_thing(1)
    writes = []
    channel = client._hub._writer._channel
    real_send, real_send_many = channel.send, channel.send_many
    monkeypatch.setattr(channel, "send", lambda data: (writes.append(1), real_send(data))[1])
    monkeypatch.setattr(
        channel, "send_many", lambda frames: (writes.append(len(frames)), real_send_many(frames))[1]
    )
    del thing
    gc.collect()
    assert root.echo(7) == 7
    assert writes[0] >= 2  # the request and the DELs, one write


def test_a_dead_proxy_waits_across_turns_of_the_loop_for_a_request(pair, monkeypatch):
    # While DEFERRED_FLUSH_DELAY lasts, a DEL waits for a frame to ride with,
    # also after the loop has turned and after an earlier wait has ended. A
    # reused libev timer used to fire at once from the second DEL on: every
    # DEL went alone, from a greenlet of its own (one per S6 callback call).
    import grpyc._writer

    delay = 0.2
    monkeypatch.setattr(grpyc._writer, "DEFERRED_FLUSH_DELAY", delay)
    _server, client = pair
    root = client.root
    channel = client._hub._writer._channel
    real_send, real_send_many = channel.send, channel.send_many
    writes = []
    monkeypatch.setattr(channel, "send", lambda data: (writes.append(1), real_send(data))[1])
    monkeypatch.setattr(
        channel, "send_many", lambda frames: (writes.append(len(frames)), real_send_many(frames))[1]
    )
    for _ in range(3):
        thing = root.make_thing(1)
        del thing
        gc.collect()
        writes.clear()
        gevent.sleep(0.01)  # turns of the loop, with the DEL waiting
        assert writes == []
        assert root.echo(7) == 7
        assert writes[0] >= 2  # the request and the DEL, one write
        gevent.sleep(1.5 * delay)  # the wait ends; the next DEL starts another


def test_mass_proxy_deletion_under_full_socket_buffer(pair):
    server, client = pair
    root = client.root
    payload = os.urandom(4 << 20)  # incompressible: fills both socket buffers
    things = [root.make_thing(i) for i in range(2000)]
    blocker = gevent.spawn(root.echo, payload)  # fills buffers while DELs queue
    del things
    gc.collect()
    assert blocker.get(timeout=10) == payload
    assert root.echo(2) == 2
    assert not client.closed and not server.closed


def _count_writes(conn):
    """The writes `conn` makes from now on: the number of frames in each."""
    channel = conn._channel
    writes = []
    send, send_many = channel.send, channel.send_many

    def counting_send(payload):
        writes.append(1)
        return send(payload)

    def counting_send_many(payloads):
        writes.append(len(payloads))
        return send_many(payloads)

    channel.send, channel.send_many = counting_send, counting_send_many
    return writes


def test_a_dels_answer_goes_with_the_next_frame(pair):
    """The peer's DEL of a callback comes with its answer; the DEL's own answer,
    which nobody waits for, goes out with the next request: a callback call
    costs the caller two writes, not three (and the peer one wake-up less)."""
    _server, client = pair
    call = client.root.call

    def callback():
        return 1

    assert call(callback) == 1
    writes = _count_writes(client)
    calls = 20
    for _ in range(calls):
        assert call(callback) == 1
    assert len(writes) == 2 * calls  # the request and the callback's answer
    assert sum(writes) - len(writes) >= calls - 1  # the DELs' answers rode along
    assert wait_until(lambda: not client._local_objects, timeout=2)  # every DEL came
    # The last answer has no next frame to ride with: the flush timer sends it
    # (whether it is still waiting now depends on how fast this machine is).
    assert wait_until(lambda: not client._hub._writer._later, timeout=2)


def test_answers_to_a_batch_of_dels_alone_are_written_by_the_deferred_flush(pair):
    """DELs that arrive together, with no request behind them, are answered
    while the reader has its writer corked for the batch: the answers still
    go out, with the deferred flush (no frame of ours comes to carry them)."""
    from grpyc._writer import DEFERRED_FLUSH_DELAY

    server, client = pair
    make_thing = client.root.make_thing  # held: no DEL of its own
    things = [make_thing(i) for i in range(3)]
    exported = len(server._local_objects)
    writes = _count_writes(server)
    del things
    gc.collect()  # three DELs, one write from the client's deferred flush
    started = time.monotonic()
    assert wait_until(lambda: len(server._local_objects) == exported - 3, timeout=5)
    assert wait_until(lambda: sum(writes) == 3, timeout=5)  # the three answers
    assert time.monotonic() - started < DEFERRED_FLUSH_DELAY + 1
    assert not server._hub._writer._later


def test_a_dels_answer_waits_for_nothing_outside_gevent():
    """A connection of plain threads has no timer to bound the wait: it answers at once."""
    from grpyc._threadhub import ThreadHub

    sent = []
    hub = ThreadHub.__new__(ThreadHub)
    hub.send_nowait = sent.append  # type: ignore[method-assign]
    ThreadHub.send_later(hub, b"answer")
    assert sent == [b"answer"]


def test_on_disconnect_runs_exactly_once(make_pair):
    calls = []
    closed = Event()

    class Watcher(TestService):
        def on_disconnect(self, conn):
            calls.append(conn)
            closed.set()

    server, client = make_pair(server_service=Watcher())
    client.root.echo(1)
    client.close()
    assert closed.wait(5)
    server.close()
    server._hub.shutdown(EOFError("again"))
    assert len(calls) == 1


def test_exports_released_on_close(pair):
    server, client = pair
    keep = client.root.make_thing(1)
    assert server._local_objects
    client.close()
    assert server._hub.wait_closed(5)
    assert server._local_objects == {}
    del keep


def test_call_from_foreign_os_thread(pair):
    _, client = pair
    root = client.root
    outcome = []

    def worker():
        try:
            outcome.append(root.add(20, 22))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        gevent.sleep(0.01)  # keep this hub running so it can serve the thread's call
    thread.join(1)
    assert outcome == [42]


def test_serve_and_poll_report_each_message_the_reader_handled(pair):
    server, client = pair
    echo = client.root.echo  # held: its DEL would be one more message
    assert echo(1) == 1  # GETROOT, GETATTR, CALL at the server
    reported = 0
    while reported < 100 and server.poll(0):
        reported += 1
    assert 3 <= reported < 100
    assert server.poll(0) is False
    assert server.poll_all(0.05) is False
    caller = gevent.spawn(echo, 2)
    assert server.serve(2) is True  # a message arriving while it waits
    assert caller.get(timeout=2) == 2


def test_serve_all_returns_when_peer_closes(pair):
    server, client = pair
    waiter = gevent.spawn(server.serve_all)
    gevent.sleep(0)
    client.close()
    waiter.get(timeout=5)
    assert server.closed


def test_too_many_requests_get_error_replies(make_pair):
    _, client = make_pair(server_config={"max_concurrent_requests": 2, "max_queued_requests": 2})
    root = client.root
    sleep = root.sleep
    jobs = [gevent.spawn(outcome_of, sleep, 0.3) for _ in range(8)]
    gevent.joinall(jobs, timeout=5)
    errors = [job.value for job in jobs if isinstance(job.value, Exception)]
    assert len(errors) == 4
    assert all("too many requests" in str(err) for err in errors)
    assert root.echo(3) == 3


def test_serialize_requests_runs_one_at_a_time_but_admits_nested(make_pair):
    _, client = make_pair(server_config={"serialize_requests": True})
    root = client.root
    started = time.monotonic()
    jobs = [gevent.spawn(root.sleep, 0.1) for _ in range(3)]
    gevent.joinall(jobs, timeout=5, raise_error=True)
    assert time.monotonic() - started >= 0.3
    assert root.bounce(lambda depth: root.bounce(lambda d: 0, depth), 3) == 2


def test_thing_class_is_cached_per_remote_class(pair):
    _, client = pair
    first = client.root.make_thing(1)
    second = client.root.make_thing(2)
    assert type(first) is type(second)
    assert isinstance(Thing(), type(first)._local_class)


def test_frame_limits_from_config_reach_the_channel(make_pair):
    server, client = make_pair(
        server_config={"max_frame_size": 4096, "max_decompressed_size": 8192, "compression": False}
    )
    assert server._channel.max_frame_size == 4096
    assert server._channel.max_decompressed_size == 8192
    assert server._channel.compress is False
    assert client.root.echo(b"x" * 1000) == b"x" * 1000
    with pytest.raises(EOFError):
        client.root.echo(os.urandom(10000))
    assert server._hub.wait_closed(5)

    from gevent import socket

    from grpyc.channel import Channel
    from grpyc.stream import SocketStream

    ours, theirs = socket.socketpair()
    channel = Channel(SocketStream(ours))
    with pytest.raises(ValueError, match="max_frame_size"):
        Connection(TestService(), channel, {"max_frame_size": -1})
    assert channel.closed
    theirs.close()


def test_callback_chain_deeper_than_max_concurrent_requests(make_pair):
    box = {}
    _, client = make_pair(
        server_config={"max_concurrent_requests": 8}, client_config={"max_concurrent_requests": 8}
    )
    box["root"] = client.root

    def callback(depth):
        return box["root"].bounce(callback, depth)

    assert client.root.bounce(callback, 60) == 60


def test_callback_chain_1000_deep_with_defaults(pair):
    _, client = pair
    root = client.root

    def callback(depth):
        return root.bounce(callback, depth)

    assert root.bounce(callback, 1000) == 1000


class _BounceService(Service):
    def exposed_bounce(self, callback, depth):
        if depth <= 0:
            raise ValueError("bottom of the chain")
        return callback(depth - 1) + 1


def test_an_error_unwinding_a_deep_callback_chain_carries_a_bounded_traceback(make_pair):
    """Each hop nests the tracebacks below it: without a cap the text (and the
    time to unwind) grows with the square of the depth (depth 200: 600 KB)."""
    from grpyc import vinegar

    _, client = make_pair(server_service=_BounceService())
    bounce = client.root.bounce

    def callback(level):
        return bounce(callback, level)

    with pytest.raises(ValueError, match="bottom of the chain") as caught:
        bounce(callback, 200)
    text = str(caught.value)
    assert len(text) < vinegar.MAX_TRACEBACK_CHARS + 2000
    assert "bottom of the chain" in text  # the innermost error is kept
    assert "characters of nested tracebacks left out" in text


# ------------------------------------------------------------ big values
class _Keeper(TestService):
    def __init__(self):
        super().__init__()
        self.received = []

    def exposed_keep(self, *values):
        self.received.append(values)
        return values


def test_big_values_inside_a_message_arrive_whole_and_in_order(make_pair):
    # The server reads the big value into its own buffer (spliced); what
    # comes before and after it in the message must still be where it was.
    service = _Keeper()
    _server, client = make_pair(server_service=service)
    big = os.urandom(3 * 1024 * 1024)
    text = "é" * 200_000
    sent = (b"small", big, "after", (text, 7), big[:70_000])
    assert client.root.keep(*sent) == sent
    assert service.received == [sent]
    assert type(service.received[0][1]) is bytes


def test_an_echo_of_a_big_value_allocates_it_once_per_side(pair):
    # Sent as it is (vectored write), received into its own buffer and
    # decoded as that buffer: a round trip in one process holds ~2 copies at
    # most, where joining and slicing made 6 (and faulted them all in).
    _server, client = pair
    size = 8 * 1024 * 1024
    payload = os.urandom(size)
    echo = client.root.echo
    assert echo(b"warm") == b"warm"
    tracemalloc = __import__("tracemalloc")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert echo(payload) == payload
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * size, f"peak {peak / size:.2f}x the payload"


def test_a_dispatch_wrapper_sees_a_big_message_as_sent(pair):
    # RPyC code may wrap Connection._dispatch to look at raw messages: a big
    # one read in pieces (spliced) reaches it whole.
    server, client = pair
    seen = []
    original = server._dispatch
    server._dispatch = lambda data: (seen.append(bytes(data)), original(data))[1]
    big = os.urandom(2 * 1024 * 1024)
    assert client.root.echo(big) == big
    assert any(big in data and type(data) is bytes for data in seen)


def test_a_connection_subclass_overriding_box_and_unbox_has_them_used_for_requests(make_pair):
    # RPyC's names: a subclass that overrides them sees every request's
    # arguments and answer; the plain class calls its boxer directly.
    from grpyc.protocol import Connection
    from tests.services import TestService

    seen = []

    class Watching(Connection):
        def _unbox(self, package):
            seen.append(("unbox", package))
            return super()._unbox(package)

        def _box(self, obj):
            seen.append(("box", obj))
            return super()._box(obj)

    class WatchedService(TestService):
        _protocol = Watching

    assert Connection._BOXES_ITSELF and not Watching._BOXES_ITSELF
    _server, client = make_pair(server_service=WatchedService())
    assert client.root.echo(41) == 41
    assert ("box", 41) in seen
    assert any(kind == "unbox" for kind, _ in seen)


# Stock's server thread re-raises what it logged: pytest reports that thread.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_grpyc_service_under_a_stock_server_is_refused_in_words():
    # ``import grpyc as rpyc`` then ``from rpyc.utils.server import
    # ThreadedServer`` gets stock's server when stock is installed: it hands
    # our service a stock channel. The server's log says what went wrong.
    import logging

    import rpyc as stock
    from rpyc.utils.server import ThreadedServer as StockServer

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("test-stock-server-with-grpyc-service")
    logger.addHandler(Keep())
    logger.propagate = False
    server = StockServer(TestService, hostname="127.0.0.1", port=0, logger=logger)
    server._listen()
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    try:
        conn = stock.connect("127.0.0.1", server.port)
        with pytest.raises(EOFError):
            conn.root.echo(1)
        wait_until(lambda: any(r.exc_info for r in records), timeout=10)
        for spawned in threading.enumerate():  # it raises after logging: let it end here
            if spawned.name.startswith("RpycSpawnThread"):
                spawned.join(10)
    finally:
        server.close()
        thread.join(10)
    errors = [r.exc_info[1] for r in records if r.exc_info]
    assert type(errors[0]) is TypeError
    assert "needs a grpyc channel, not rpyc.core.channel.Channel" in str(errors[0])


def test_a_ping_that_comes_while_a_caller_reads_for_its_reply_is_answered_at_once(pair):
    # The caller alone on the connection reads its own reply (the lane); a
    # peer's PING meanwhile is answered by it, not after its reply comes.
    server, client = pair
    call = gevent.spawn(client.root.sleep, 1.0)
    assert wait_until(lambda: len(client._hub.pending) == 1, timeout=5)
    started = time.monotonic()
    server.ping("alive", timeout=2)
    assert time.monotonic() - started < 0.5
    assert not call.ready()
    call.get(timeout=5)


def test_a_ping_answered_by_the_background_reader_goes_out_at_once(pair):
    server, _ = pair
    started = time.monotonic()
    for _ in range(50):
        server.ping("alive", timeout=2)
    assert time.monotonic() - started < 2.0
