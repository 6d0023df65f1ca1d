"""Faults: peers killed mid-call, mid-frame, mid-callback; partitions; busy peers.

The killed peer runs in a subprocess (tests/hostile/peer_proc.py or
server_proc.py) and gets SIGKILL at the moment under test. The surviving side
must fail every waiter at once with `EOFError`, run ``on_disconnect`` exactly
once, free what it exported to the dead peer, and leave no greenlet behind.

A network partition (no FIN, no RST) is a TCP proxy in this process that stops
forwarding; keepalive pings must find the dead peer within
``keepalive_interval + keepalive_timeout`` (plus the watchdog's tick of half
the interval), and must not declare a merely busy peer dead as long as
``keepalive_timeout`` is longer than the peer stays busy.
"""

import gc
import os
import signal
import sys
import time
from pathlib import Path
from typing import ClassVar

import gevent
import gevent.subprocess
import pytest
from gevent import socket
from gevent.event import Event

import grpyc
from grpyc import consts
from grpyc.server import Server
from grpyc.service import Service
from tests.hostile.conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
FAST = 1.0  # seconds within which the survivor must notice a killed peer


def live_greenlets():
    """Live greenlets, not counting the hub's parked pool readers (a cache, `_readers`)."""
    from grpyc._readers import ReaderPool

    # type(), not isinstance(): a proxy left over from a closed connection
    # would ask its peer for __class__ and raise EOFError.
    live = sum(
        1 for obj in gc.get_objects() if issubclass(type(obj), gevent.Greenlet) and not obj.dead
    )
    return live - ReaderPool.for_hub(gevent.get_hub()).idle


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.01)
    return True


class Box:
    def __init__(self, value):
        self.value = value

    def exposed_get(self):
        return self.value


class FaultService(Service):
    """Records what the server side sees when its peer dies."""

    disconnects: ClassVar[list] = []
    waiter_errors: ClassVar[list] = []
    disconnected: ClassVar[Event] = Event()  # a new one per test

    def on_connect(self, conn):
        self.conn = conn

    def on_disconnect(self, conn):
        FaultService.disconnects.append(conn)
        FaultService.disconnected.set()

    def exposed_make_box(self, value):
        return Box(value)

    def exposed_hold(self, *objects):
        self.held = objects

    def exposed_sleep(self, seconds):
        gevent.sleep(seconds)
        return seconds

    def exposed_echo(self, value):
        return value

    def exposed_call(self, func):
        try:
            return func()
        except BaseException as exc:
            FaultService.waiter_errors.append((type(exc), time.monotonic()))
            raise


@pytest.fixture
def fault_server():
    FaultService.disconnects = []
    FaultService.waiter_errors = []
    FaultService.disconnected = Event()
    server = Server(FaultService, hostname="127.0.0.1", port=0)
    server.listen()
    yield server
    server.close()


class Peer:
    """A `tests.hostile.peer_proc` subprocess, read without blocking the hub."""

    def __init__(self, mode, port=None):
        args = [sys.executable, "-m", "tests.hostile.peer_proc", mode]
        if port is not None:
            args.append(str(port))
        self.proc = gevent.subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=gevent.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def read_line(self, timeout=10):
        with gevent.Timeout(timeout, AssertionError("the peer process said nothing")):
            return self.proc.stdout.readline().decode().strip()

    def kill(self):
        """SIGKILL; returns the moment it was sent."""
        killed_at = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        return killed_at

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def peers():
    started = []

    def start(mode, port=None):
        peer = Peer(mode, port)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.close()


def only_connection(server):
    assert wait_until(lambda: len(server.clients) == 1, 5)
    return next(iter(server.clients))


# ------------------------------------------------- the client dies (server side)
def test_client_killed_mid_call(fault_server, peers):
    baseline = live_greenlets()
    peer = peers("client-call", fault_server.port)
    assert peer.read_line() == "ready"
    conn = only_connection(fault_server)
    # root, box and the bound method being called (RPyC's GETATTR, then CALL)
    # exported; the client's callback and list held as proxies.
    assert len(conn._local_objects) == 3
    assert wait_until(lambda: conn._hub.running_handlers == 1, 2)  # the sleep(3600)
    killed_at = peer.kill()
    assert FaultService.disconnected.wait(FAST)
    assert time.monotonic() - killed_at < FAST
    assert FaultService.disconnects == [conn]
    assert conn._local_objects == {}
    assert conn._hub.running_handlers == 0
    assert wait_until(lambda: live_greenlets() <= baseline, 2), (live_greenlets(), baseline)
    assert fault_server.clients == set()


def test_client_killed_mid_callback(fault_server, peers):
    baseline = live_greenlets()
    peer = peers("client-callback", fault_server.port)
    assert peer.read_line() == "ready"  # the server now waits for the callback
    conn = only_connection(fault_server)
    killed_at = peer.kill()
    assert FaultService.disconnected.wait(FAST)
    # The server's handler, waiting on the dead client, failed at once.
    assert wait_until(lambda: FaultService.waiter_errors, FAST)
    (error_type, failed_at) = FaultService.waiter_errors[0]
    assert error_type is EOFError
    assert failed_at - killed_at < FAST
    assert FaultService.disconnects == [conn]
    assert conn._local_objects == {}
    assert wait_until(lambda: live_greenlets() <= baseline, 2), (live_greenlets(), baseline)


def test_client_killed_mid_frame(fault_server, peers):
    baseline = live_greenlets()
    peer = peers("client-half-frame", fault_server.port)
    assert peer.read_line() == "ready"
    conn = only_connection(fault_server)
    killed_at = peer.kill()
    assert FaultService.disconnected.wait(FAST)
    assert time.monotonic() - killed_at < FAST
    assert FaultService.disconnects == [conn]
    assert isinstance(conn._hub.close_reason, EOFError)
    assert wait_until(lambda: live_greenlets() <= baseline, 2), (live_greenlets(), baseline)


# ------------------------------------------------- the server dies (client side)
class ClientService(Service):
    disconnects: ClassVar[list] = []

    def on_disconnect(self, conn):
        ClientService.disconnects.append(conn)


def test_server_killed_mid_call_and_mid_callback():
    ClientService.disconnects = []
    process = ServerProcess()
    try:
        baseline = live_greenlets()
        conn = grpyc.connect("127.0.0.1", process.port, service=ClientService)
        root = conn.root
        box = root.make_box(3)
        in_callback = Event()

        def hang():
            in_callback.set()
            gevent.sleep(3600)

        calls = [grpyc.async_(root.sleep)(3600) for _ in range(5)]
        callback_call = grpyc.async_(root.call)(hang)
        assert in_callback.wait(5)
        assert len(conn._local_objects) >= 1  # `hang`, held by the server
        killed_at = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        assert gevent.wait([*calls, callback_call], timeout=FAST) == [*calls, callback_call]
        assert time.monotonic() - killed_at < FAST
        for result in [*calls, callback_call]:
            with pytest.raises(EOFError):
                result.value
        with pytest.raises(EOFError):
            box.get()
        assert ClientService.disconnects == [conn]
        assert conn._local_objects == {}
        del box, root, calls, callback_call
        assert wait_until(lambda: live_greenlets() <= baseline, 2), (live_greenlets(), baseline)
    finally:
        process.stop()


def test_server_killed_mid_frame(peers):
    peer = peers("server-half-frame")
    port = int(peer.read_line())
    baseline = live_greenlets()
    conn = grpyc.connect("127.0.0.1", port)
    result = conn.async_request(consts.HANDLE_PING, "x")
    assert peer.read_line() == "ready"  # half of the answer is in our buffers
    killed_at = peer.kill()
    assert gevent.wait([result], timeout=FAST) == [result]
    assert time.monotonic() - killed_at < FAST
    with pytest.raises(EOFError):
        result.value
    assert conn.closed
    assert wait_until(lambda: live_greenlets() <= baseline, 2), (live_greenlets(), baseline)


# ------------------------------------------------------------- partitions
class SilentProxy:
    """Forwards TCP both ways until `partition`; then drops everything, keeps sockets open."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.partitioned = False
        self.sockets = []
        self.greenlets = [gevent.spawn(self._accept)]

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, server]
            self.greenlets.append(gevent.spawn(self._pump, client, server))
            self.greenlets.append(gevent.spawn(self._pump, server, client))

    def _pump(self, source, sink):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if not self.partitioned:
                sink.sendall(data)

    def partition(self):
        self.partitioned = True

    def close(self):
        gevent.killall(self.greenlets)
        for sock in [*self.sockets, self.listener]:
            sock.close()


@pytest.fixture
def proxied_server(fault_server):
    proxy = SilentProxy(fault_server.port)
    yield fault_server, proxy
    proxy.close()


def test_partition_is_detected_by_the_clients_keepalive(proxied_server):
    _, proxy = proxied_server
    interval, timeout = 0.3, 0.5
    config = {"keepalive_interval": interval, "keepalive_timeout": timeout}
    conn = grpyc.connect("127.0.0.1", proxy.port, config=config)
    assert conn.root.echo("before") == "before"
    pending = grpyc.async_(conn.root.sleep)(60)
    proxy.partition()
    cut_at = time.monotonic()
    assert gevent.wait([pending], timeout=5) == [pending]
    detected_after = time.monotonic() - cut_at
    with pytest.raises(EOFError, match="keepalive"):
        pending.value
    # Quiet for `interval`, then the ping's `timeout`, checked every interval/2.
    assert detected_after <= interval + timeout + interval / 2 + 0.3
    assert conn.closed


def test_partition_is_detected_by_the_servers_keepalive(fault_server):
    server = Server(
        FaultService,
        hostname="127.0.0.1",
        port=0,
        protocol_config={"keepalive_interval": 0.3, "keepalive_timeout": 0.5},
    )
    server.listen()
    proxy = SilentProxy(server.port)
    try:
        conn = grpyc.connect("127.0.0.1", proxy.port)
        assert conn.root.echo("before") == "before"
        proxy.partition()
        cut_at = time.monotonic()
        assert FaultService.disconnected.wait(5)
        assert time.monotonic() - cut_at <= 0.3 + 0.5 + 0.15 + 0.3
        assert server.clients == set()
        conn._hub.shutdown(EOFError("test done"))
    finally:
        proxy.close()
        server.close()


@pytest.mark.parametrize(
    ("keepalive_timeout", "survives"), [(3.0, True), (0.5, False)], ids=["longer", "shorter"]
)
def test_busy_peer_is_dead_only_when_keepalive_timeout_is_shorter_than_its_busy_time(
    keepalive_timeout, survives
):
    # The server subprocess spins 2 s without yielding: it answers no ping
    # meanwhile. The rule: keepalive_timeout > the longest time a peer's hub
    # can be blocked, or the busy peer is taken for dead.
    process = ServerProcess()
    try:
        config = {"keepalive_interval": 0.3, "keepalive_timeout": keepalive_timeout}
        conn = grpyc.connect("127.0.0.1", process.port, config=config)
        if survives:
            assert conn.root.spin(2.0) == 2.0
            assert conn.root.echo("after") == "after"
            assert not conn.closed
        else:
            with pytest.raises(EOFError, match="keepalive"):
                conn.root.spin(2.0)
        conn.close()
    finally:
        process.stop()


def test_idle_timeout_does_not_cut_a_call_in_flight(make_idle_server):
    conn = grpyc.connect("127.0.0.1", make_idle_server.port)
    try:
        assert conn.root.sleep(1.0) == 1.0
    finally:
        conn.close()


@pytest.fixture
def make_idle_server():
    server = Server(FaultService, hostname="127.0.0.1", port=0, idle_timeout=0.5)
    server.listen()
    yield server
    server.close()
