"""grpyc <-> stock rpyc 6.0.2 over TCP, both directions."""

import gc
import os
import signal
import time

import gevent
import gevent.socket
import pytest
import rpyc

import grpyc.factory
from grpyc.service import Service
from tests.interop.conftest import in_os_thread, run_script, start_rpyc_server, stop_process


@pytest.fixture
def to_rpyc(rpyc_server):
    conn = grpyc.factory.connect("127.0.0.1", rpyc_server)
    yield conn
    conn.close()


# ------------------------------------------------- grpyc client -> rpyc server
def test_grpyc_calls_rpyc_root_with_values_and_kwargs(to_rpyc):
    assert to_rpyc.root.echo(42) == 42
    assert to_rpyc.root.add(1, 2, c=3) == 6
    assert to_rpyc.root.echo(("x", b"y", 2.5, None)) == ("x", b"y", 2.5, None)


def test_grpyc_uses_rpyc_netrefs(to_rpyc):
    remote_list = to_rpyc.root.make_list(3, 1, 2)
    assert len(remote_list) == 3
    assert list(remote_list) == [3, 1, 2]
    remote_list.append(4)
    assert remote_list[-1] == 4
    remote_dict = to_rpyc.root.make_dict(a=1)
    assert remote_dict["a"] == 1
    thing = to_rpyc.root.make_thing(7)
    assert thing.get() == 7


def test_rpyc_server_calls_grpyc_callback(to_rpyc):
    assert to_rpyc.root.call(lambda x: x * 3, 5) == 15
    assert to_rpyc.root.length([1, 2, 3, 4]) == 4


def _callbacks_then_unanswered(conn, sleep, calls=20):
    """Call a stock server's `call` with a callback `calls` times (each makes it
    send a DEL when its proxy dies), then ask until none of its requests waits
    for an answer; returns how many waited at the end (0: all answered)."""
    call, unanswered = conn.root.call, conn.root.unanswered  # one request per call
    for n in range(calls):
        assert call(lambda n=n: n) == n
    for _ in range(200):  # bounded: ~2 s
        waiting = unanswered()
        if waiting == 0:
            return 0
        sleep(0.01)
    return waiting


def test_a_stock_servers_dels_are_answered_as_by_a_stock_client(to_rpyc, rpyc_server):
    """grpyc sends a DEL's answer with its next frame (or within 20 ms), not at once:
    the stock server still gets every one, as from a stock client."""

    def stock_client():
        conn = rpyc.connect("127.0.0.1", rpyc_server)
        try:
            return _callbacks_then_unanswered(conn, time.sleep)
        finally:
            conn.close()

    assert in_os_thread(stock_client) == 0
    assert _callbacks_then_unanswered(to_rpyc, gevent.sleep) == 0
    # With nothing more sent, the last answer still goes within the flush delay
    # (else it would go behind the next request, which would count it).
    call, unanswered = to_rpyc.root.call, to_rpyc.root.unanswered
    assert call(lambda: 7) == 7
    gevent.sleep(0.2)
    waiting = unanswered()
    assert waiting == 0


def _same_proxy_while_it_lives(conn):
    """What a client makes of the same remote object sent twice: one proxy while
    the first lives, a new one after it died (stock keeps a weak proxy cache)."""
    root = conn.root
    thing = root.make_thing(3)
    again = root.echo(thing)  # the server sends its own object back
    same = again is thing
    del thing, again
    gc.collect()
    fresh = root.make_thing(4)
    return same, root.echo(fresh) is fresh, type(fresh).__name__


def test_one_proxy_per_remote_object_as_with_a_stock_client(to_rpyc, rpyc_server):
    def stock_client():
        conn = rpyc.connect("127.0.0.1", rpyc_server)
        try:
            return _same_proxy_while_it_lives(conn)
        finally:
            conn.close()

    ours, stocks = _same_proxy_while_it_lives(to_rpyc), in_os_thread(stock_client)
    assert ours == stocks, (ours, stocks)


PATCHED_PROBES = """
from gevent import monkey
monkey.patch_all()
import sys, time
import grpyc.factory
from tests.interop.test_connection_interop import (
    _callbacks_then_unanswered, _same_proxy_while_it_lives)
conn = grpyc.factory.connect("127.0.0.1", int(sys.argv[1]))
waiting = _callbacks_then_unanswered(conn, time.sleep)
call, unanswered = conn.root.call, conn.root.unanswered
assert call(lambda: 7) == 7
time.sleep(0.2)  # patched: the hub runs, the deferred answer's timer fires
print(waiting, unanswered(), _same_proxy_while_it_lives(conn))
conn.close()
"""


def test_the_dels_and_proxy_probes_agree_with_stock_under_patch_all(rpyc_server):
    """The two probes above in a process under `gevent.monkey.patch_all()`."""
    output = run_script(PATCHED_PROBES, rpyc_server)
    assert output.split() == ["0", "0", "(True,", "True,", "'__main__.Thing')"]


def test_nested_callbacks_with_rpyc_server(to_rpyc):
    root = to_rpyc.root

    def callback(depth):
        return root.bounce(callback, depth)

    assert root.bounce(callback, 20) == 20


def test_rpyc_exception_reaches_grpyc_with_traceback(to_rpyc):
    with pytest.raises(ValueError, match="boom") as info:
        to_rpyc.root.fail()
    assert "exposed_fail" in str(info.value)


def test_grpyc_async_request_and_ping_to_rpyc(to_rpyc):
    from grpyc import consts

    result = to_rpyc.async_request(consts.HANDLE_CALLATTR, to_rpyc.root, "add", (2, 3), ())
    assert result.value == 5
    to_rpyc.ping()
    assert to_rpyc.root.ping_peer() is True


def test_rpyc_policy_refuses_private_attribute(to_rpyc):
    thing = to_rpyc.root.make_thing(1)
    with pytest.raises(AttributeError):
        thing._secret


def test_grpyc_close_is_answered_by_rpyc(rpyc_server):
    conn = grpyc.factory.connect("127.0.0.1", rpyc_server)
    assert conn.root.echo(1) == 1
    started = time.monotonic()
    conn.close()
    assert conn.closed
    assert time.monotonic() - started < 2


def test_killed_rpyc_server_fails_pending_calls_fast():
    proc, port = start_rpyc_server()
    try:
        conn = grpyc.factory.connect("127.0.0.1", port)
        root = conn.root

        def attempt():
            try:
                return root.sleep(10)
            except EOFError as exc:
                return exc

        calls = [gevent.spawn(attempt) for _ in range(5)]
        gevent.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        started = time.monotonic()
        gevent.joinall(calls, timeout=5)
        assert all(isinstance(call.value, EOFError) for call in calls)
        assert time.monotonic() - started < 1
    finally:
        proc.kill()
        stop_process(proc)


# ------------------------------------------------- rpyc client -> grpyc server
class ClientSide(rpyc.Service):
    def exposed_triple(self, value):
        return value * 3


def _rpyc_client_session(port):
    conn = rpyc.connect("127.0.0.1", port, service=ClientSide, config={"allow_public_attrs": True})
    try:
        root = conn.root
        out = {
            "echo": root.echo(42),
            "add": root.add(1, 2, c=3),
            "list": list(root.make_list(1, 2, 3)),
            "len": len(root.make_list(1, 2)),
            "dict": root.make_dict(a=1)["a"],
            "thing": root.make_thing(9).get(),
            "callback": root.call(conn.root.echo, 5),
            "local_ref": root.length([1, 2, 3]),
            "bounce": root.bounce(lambda depth: root.bounce(lambda d: 0, depth), 3),
        }
        try:
            root.fail()
        except ValueError as exc:
            out["error"] = str(exc)
        try:
            root.make_thing(1)._secret
        except AttributeError:
            out["policy"] = "refused"
        res = conn.async_request(rpyc.core.consts.HANDLE_CALLATTR, root, "add", (4, 5), ())
        out["async"] = res.value
        conn.ping()
        out["ping"] = True
        return out
    finally:
        conn.close()


def test_rpyc_client_against_grpyc_server(grpyc_server):
    out = in_os_thread(_rpyc_client_session, grpyc_server.port)
    deadline = time.monotonic() + 5
    while grpyc_server.clients and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert not grpyc_server.clients  # the stock client's close() closed our side
    assert out["echo"] == 42
    assert out["add"] == 6
    assert out["list"] == [1, 2, 3]
    assert out["len"] == 2
    assert out["dict"] == 1
    assert out["thing"] == 9
    assert out["callback"] == 5
    assert out["local_ref"] == 3
    assert out["bounce"] == 2
    assert out["error"].startswith("boom")
    assert "exposed_fail" in out["error"]
    assert out["policy"] == "refused"
    assert out["async"] == 9
    assert out["ping"] is True


def test_grpyc_server_calls_rpyc_client_service(grpyc_server):
    calls = []

    class Recorder(Service):
        def on_connect(self, conn):
            calls.append(conn)

    def session(port):
        conn = rpyc.connect("127.0.0.1", port, service=ClientSide)
        try:
            # the server-side connection calls back into our service
            return conn.root.call(conn.root.echo, 11)
        finally:
            conn.close()

    assert in_os_thread(session, grpyc_server.port) == 11


def test_grpyc_server_closes_rpyc_client(grpyc_server):
    def session(port):
        conn = rpyc.connect("127.0.0.1", port)
        conn.root.echo(1)
        return conn

    conn = in_os_thread(session, grpyc_server.port)
    deadline = time.monotonic() + 5
    while not grpyc_server.clients and time.monotonic() < deadline:
        gevent.sleep(0.01)
    for server_conn in list(grpyc_server.clients):
        server_conn.close()

    def closed_seen(conn):
        try:
            conn.root.echo(2)
        except EOFError:
            return "eof"
        return "open"

    assert in_os_thread(closed_seen, conn) == "eof"


def _callback_chain(connect, port, depth, on_level=None):
    """A chain of `depth` nested callbacks from the calling (plain) thread:
    bounce(d) calls back cb(d-1), which calls bounce(d-1), ...; the depth
    reached, or the name of what stopped it. `on_level()` runs at each level."""
    conn = connect("127.0.0.1", port)
    try:
        bounce = conn.root.bounce

        def callback(level):
            if on_level is not None:
                on_level()
            return bounce(callback, level)

        try:
            return bounce(callback, depth)
        except RecursionError as exc:
            return type(exc).__name__
    finally:
        conn.close()


def test_a_callback_chain_from_a_plain_thread_goes_deeper_than_stocks(grpyc_server):
    """From a plain OS thread, stock's client runs out of recursion near 87
    levels; grpyc's goes on (docs/semantics.md). Short chains: the same."""
    port = grpyc_server.port
    assert in_os_thread(_callback_chain, rpyc.connect, port, 40) == 40
    assert in_os_thread(_callback_chain, grpyc.factory.connect, port, 40) == 40
    assert in_os_thread(_callback_chain, rpyc.connect, port, 300) == "RecursionError"
    assert in_os_thread(_callback_chain, grpyc.factory.connect, port, 300, timeout=60) == 300


def test_a_chain_from_a_plain_thread_starts_a_bounded_number_of_threads(grpyc_server, monkeypatch):
    """A peer that answers every callback with another one cannot make a plain
    thread start threads without end: past `_MAX_CHAIN_THREADS` the levels stay
    in their thread (where the recursion limit ends a chain, as in stock)."""
    from grpyc import _threadhub

    def os_threads():
        return len(os.listdir("/proc/self/task"))  # `threading` does not see raw threads

    monkeypatch.setattr(_threadhub, "_LEVELS_PER_THREAD", 8)
    monkeypatch.setattr(_threadhub, "_MAX_CHAIN_THREADS", 2)
    threads_seen = []

    def count_threads():
        threads_seen.append(os_threads())

    # 8 levels in the calling thread, 8 in each of the two others, the other 36
    # in the last one (without the cap: 7 threads). Deeper, the last thread
    # meets the recursion limit (slow to unwind here, so not run).
    port = grpyc_server.port
    assert in_os_thread(_callback_chain, grpyc.factory.connect, port, 60, count_threads) == 60
    base = threads_seen[0]  # at the first level: no thread of the chain yet
    assert max(threads_seen) - base <= 2, (base, max(threads_seen))


def _dels_answered(port):
    """A stock client drops 30 proxies at once (a DEL each, written as they die)
    and then only reads: how many of its requests still wait for an answer
    (stock keeps them in `_request_callbacks`) once the answers had time to come."""
    conn = rpyc.connect("127.0.0.1", port)
    try:
        make_thing = conn.root.make_thing
        things = [make_thing(i) for i in range(30)]
        del things
        gc.collect()
        for _ in range(200):  # bounded: ~2 s
            conn.poll_all(0.01)  # reads what came, sends nothing
            if not conn._request_callbacks:
                return 0
        return len(conn._request_callbacks)
    finally:
        conn.close()


def test_a_stock_clients_dels_are_answered_by_a_grpyc_server_as_by_a_stock_one(
    rpyc_server, grpyc_server
):
    """The DELs come in a batch and nothing else follows them: a grpyc server
    answers them all on its own (its deferred flush), as a stock server does."""
    assert in_os_thread(_dels_answered, rpyc_server) == 0
    assert in_os_thread(_dels_answered, grpyc_server.port) == 0


PATCHED_DELS = """
from gevent import monkey
monkey.patch_all()
import sys, gevent
from grpyc.server import Server
from tests.services import TestService
from tests.interop.test_connection_interop import _dels_answered
server = Server(TestService, hostname="127.0.0.1", port=0)
server.listen()
gevent.spawn(server.start)
threadpool = gevent.get_hub().threadpool
ours = threadpool.spawn(_dels_answered, server.port).get(timeout=20)
stocks = threadpool.spawn(_dels_answered, int(sys.argv[1])).get(timeout=20)
print(ours, stocks)
server.close()
"""


def test_a_patched_grpyc_server_answers_a_stock_clients_dels_as_a_stock_one(rpyc_server):
    """The probe above with the grpyc server in a process under `patch_all()`."""
    assert run_script(PATCHED_DELS, rpyc_server).split() == ["0", "0"]


# ------------------------------------------- big values, both ways (S4 path)
def _big_values():
    rng = __import__("random").Random(4)
    big = rng.randbytes(3 * 1024 * 1024 + 7)
    text = "grpyc é " * 60_000  # 540 KB of UTF-8, not ASCII
    return big, text


def _big_value_probe(conn):
    """What a connection makes of big bytes and str values, sent and received."""
    big, text = _big_values()
    root = conn.root
    return (
        root.echo(big) == big,
        root.echo(text) == text,
        # A big value inside a tuple, with items after it (the cut is mid-message).
        root.echo((1, big, "after", (2, text))) == (1, big, "after", (2, text)),
        # The server calls back with a big argument: a big request to the client.
        root.call(lambda data: len(data), big) == len(big),
        root.call(lambda data: data[::-1], big) == big[::-1],
        root.echo(big[: 64 * 1024]) == big[: 64 * 1024],
        # Over and over: the receive buffers grow, and a big body is read
        # with a low-water mark (grpyc on Linux, `SocketStream.read_body_into`).
        all(root.echo(big) == big for _ in range(6)),
        all(root.call(lambda data: data[::-1], big) == big[::-1] for _ in range(3)),
    )


def test_big_values_cross_both_ways_as_between_stock_peers(rpyc_server, grpyc_server):
    def stock_client(port):
        conn = rpyc.connect("127.0.0.1", port)
        try:
            return _big_value_probe(conn)
        finally:
            conn.close()

    stock_to_stock = in_os_thread(stock_client, rpyc_server, timeout=60)
    stock_to_grpyc = in_os_thread(stock_client, grpyc_server.port, timeout=60)
    conn = grpyc.factory.connect("127.0.0.1", rpyc_server)
    try:
        grpyc_to_stock = _big_value_probe(conn)
    finally:
        conn.close()
    assert stock_to_stock == (True,) * 8
    assert stock_to_grpyc == stock_to_stock
    assert grpyc_to_stock == stock_to_stock


PATCHED_BIG_VALUES = """
from gevent import monkey
monkey.patch_all()
import sys
import grpyc.factory
from tests.interop.test_connection_interop import _big_value_probe
conn = grpyc.factory.connect("127.0.0.1", int(sys.argv[1]))
print(_big_value_probe(conn))
conn.close()
"""


def test_big_values_from_plain_threads_and_under_patch_all_as_from_stock(rpyc_server):
    """A big frame is read in one fill on a gevent socket (`Stream.read_ready`) and
    as before on a plain one: the stock client's outcomes either way."""

    def grpyc_in_a_plain_thread():  # no hub in this thread: grpyc's plain-threads mode
        conn = grpyc.factory.connect("127.0.0.1", rpyc_server)
        try:
            return _big_value_probe(conn)
        finally:
            conn.close()

    assert in_os_thread(grpyc_in_a_plain_thread, timeout=60) == (True,) * 8
    assert run_script(PATCHED_BIG_VALUES, rpyc_server).strip() == str((True,) * 8)


def _timeout_after_a_call_probe(connect, pause):
    """(outcome, seconds) of a call that outlasts sync_request_timeout, made
    0.3 s after a quick call (whose deadline was earlier)."""
    conn = connect("127.0.0.1", config={"sync_request_timeout": 0.5})
    try:
        conn.root.echo(1)
        pause(0.3)
        started = time.monotonic()
        try:
            conn.root.sleep(1.5)
            outcome = "returned"
        except TimeoutError:  # stock's AsyncResultTimeout; grpyc's is a subclass
            outcome = "timeout"
        return outcome, time.monotonic() - started
    finally:
        conn.close()


def test_a_timeout_counts_from_its_own_call_as_with_stock(rpyc_server):
    """grpyc keeps its deadline timer armed from call to call (`ReadBaton._sleep_until`)."""

    def stock(host, config):
        return rpyc.connect(host, rpyc_server, config=config)

    def ours(host, config):
        return grpyc.factory.connect(host, rpyc_server, config=config)

    stock_outcome, stock_took = in_os_thread(_timeout_after_a_call_probe, stock, time.sleep)
    our_outcome, our_took = _timeout_after_a_call_probe(ours, gevent.sleep)
    assert stock_outcome == our_outcome == "timeout"
    assert 0.45 <= stock_took < 1.2
    assert 0.45 <= our_took < 1.2


# ---------------------------------------------- a ping nobody answers, both ways
def _silent_peer():
    """A TCP peer that reads everything and never answers (port, closer)."""
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    held = []

    def swallow(sock):
        while sock.recv(65536):
            pass

    readers = []

    def accept_and_swallow():
        while True:
            sock, _ = listener.accept()
            held.append(sock)
            readers.append(gevent.spawn(swallow, sock))

    acceptor = gevent.spawn(accept_and_swallow)

    def close():
        gevent.killall([acceptor, *readers])
        for sock in held:
            sock.close()
        listener.close()

    return listener.getsockname()[1], close


def _ping_outcome(connect, port, opened):
    conn = connect("127.0.0.1", port)
    opened.append(conn)  # closed once the peer is gone: RPyC's close waits for an answer
    began = time.monotonic()
    try:
        conn.ping(timeout=0.3)
    except Exception as exc:
        return type(exc).__name__, str(exc), time.monotonic() - began
    return "no error", "", time.monotonic() - began


def test_a_ping_nobody_answers_times_out_as_stocks_does():
    port, close_peer = _silent_peer()
    opened = []
    try:
        ours = in_os_thread(_ping_outcome, grpyc.factory.connect, port, opened)
        stock = in_os_thread(_ping_outcome, rpyc.connect, port, opened)
        gevent_ours = _ping_outcome(grpyc.factory.connect, port, opened)  # a greenlet caller
    finally:
        close_peer()
        for conn in opened:
            in_os_thread(conn.close)
    assert ours[:2] == stock[:2] == gevent_ours[:2] == ("TimeoutError", "result expired")
    for outcome in (ours, stock, gevent_ours):
        assert 0.25 <= outcome[2] < 3, outcome


PATCHED_SILENT_PINGS = """
from gevent import monkey
monkey.patch_all()
import socket, threading, time
import rpyc
import grpyc.factory

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4)
held = []

def accept():
    while True:
        held.append(listener.accept()[0])  # read by nobody, answered never

threading.Thread(target=accept, daemon=True).start()
port = listener.getsockname()[1]
for connect in (grpyc.factory.connect, rpyc.connect):
    conn = connect("127.0.0.1", port)
    began = time.monotonic()
    try:
        conn.ping(timeout=0.3)
        outcome = "no error"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    print(outcome, 0.25 <= time.monotonic() - began < 3)
for sock in held:
    sock.close()  # RPyC's close waits for an answer: the peer goes first
"""


def test_a_ping_nobody_answers_times_out_as_stocks_does_under_patch_all():
    lines = run_script(PATCHED_SILENT_PINGS).splitlines()
    assert lines == ["TimeoutError: result expired True"] * 2, lines
