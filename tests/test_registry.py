"""grpyc.registry: servers, protocol clients and the Redis client, on loopback only."""

import inspect
import logging
import socket
import time

import gevent
import gevent.monkey
import pytest
from gevent import socket as gsocket
from gevent.event import Event

from grpyc import brine, registry
from grpyc.registry import (
    RedisRegistryClient,
    RegistryClient,
    TCPRegistryClient,
    TCPRegistryServer,
    UDPRegistryClient,
    UDPRegistryServer,
)

LOCAL = "127.0.0.1"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class RecordingMixin:
    """Records hook calls; ``changed`` is set on each one."""

    def __init__(self, *args, **kwargs):
        self.added = []
        self.removed = []
        self.changed = Event()
        super().__init__(*args, **kwargs)

    def on_service_added(self, name, addrinfo):
        self.added.append((name, addrinfo))
        self.changed.set()

    def on_service_removed(self, name, addrinfo):
        self.removed.append((name, addrinfo))
        self.changed.set()


class RecordingUDPServer(RecordingMixin, UDPRegistryServer):
    pass


class RecordingTCPServer(RecordingMixin, TCPRegistryServer):
    pass


SERVERS = {"udp": RecordingUDPServer, "tcp": RecordingTCPServer}


def client_for(server, timeout=2):
    if isinstance(server, UDPRegistryServer):
        return UDPRegistryClient(ip=LOCAL, port=server.port, timeout=timeout)
    return TCPRegistryClient(LOCAL, port=server.port, timeout=timeout)


@pytest.fixture
def make_server():
    started = []

    def make(kind, **kwargs):
        server = SERVERS[kind](host=LOCAL, port=0, **kwargs)
        started.append(server)
        server.start_in_background()
        return server

    yield make
    for server in started:
        server.close()


def wait_until(condition, event, timeout=2.0):
    """Wait on ``event`` (set by hooks) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        left = deadline - time.monotonic()
        assert left > 0, "condition not reached in time"
        event.clear()
        if not condition():
            event.wait(left)


def request(cmd, args):
    return brine.dump(("RPYC", cmd, args))


# ---------------------------------------------------------------------------
# protocol servers with grpyc clients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_registered_server_is_discovered_under_every_alias(make_server, kind):
    server = make_server(kind)
    client = client_for(server)

    assert client.register(("foo", "Bar"), 12345) is True
    assert client.discover("FOO") == ((LOCAL, 12345),)
    assert client.discover("bar") == ((LOCAL, 12345),)
    assert client.discover("baz") == ()
    assert server.services == {
        "FOO": {(LOCAL, 12345): pytest.approx(time.monotonic(), abs=5)},
        "BAR": {(LOCAL, 12345): pytest.approx(time.monotonic(), abs=5)},
    }


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_list_answers_names_only_when_allowed(make_server, kind):
    listing = client_for(make_server(kind, allow_listing=True))
    silent = client_for(make_server(kind))

    for client in (listing, silent):
        assert client.register(("alpha",), 1001) is True
        assert client.register(("beta", "gamma"), 1002) is True
    assert listing.list() == ("ALPHA", "BETA", "GAMMA")
    assert listing.list(filter_host=LOCAL) == ("ALPHA", "BETA", "GAMMA")
    assert listing.list(filter_host="127.0.0.9") == ()
    assert silent.list() is None


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_unregister_removes_the_port_from_every_name(make_server, kind):
    server = make_server(kind)
    client = client_for(server)
    client.register(("a", "b"), 2001)
    client.register(("a",), 2002)

    client.unregister(2001)
    wait_until(lambda: len(server.removed) == 2, server.changed)

    assert client.discover("a") == ((LOCAL, 2002),)
    assert client.discover("b") == ()
    assert server.removed == [("A", (LOCAL, 2001)), ("B", (LOCAL, 2001))]


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_hooks_run_once_per_new_server_not_on_reregistration(make_server, kind):
    server = make_server(kind)
    client = client_for(server)

    assert client.register(("svc",), 3001) is True
    assert client.register(("svc",), 3001) is True
    assert client.register(("svc",), 3002) is True
    client.unregister(4444)  # never registered: no hook
    client.unregister(3001)
    wait_until(lambda: len(server.removed) == 1, server.changed)

    assert server.added == [("SVC", (LOCAL, 3001)), ("SVC", (LOCAL, 3002))]
    assert server.removed == [("SVC", (LOCAL, 3001))]


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_query_puts_least_recently_refreshed_first(make_server, kind):
    clock = FakeClock()
    server = make_server(kind, clock=clock)
    client = client_for(server)

    client.register(("s",), 1)
    clock.now += 1
    client.register(("s",), 2)
    clock.now += 1
    client.register(("s",), 1)

    assert client.discover("s") == ((LOCAL, 2), (LOCAL, 1))


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_stale_entries_are_pruned_on_query_and_list(make_server, kind):
    clock = FakeClock()
    server = make_server(kind, clock=clock, pruning_timeout=10, allow_listing=True)
    client = client_for(server)
    client.register(("old",), 5001)
    client.register(("kept",), 5002)

    clock.now += 8
    client.register(("kept",), 5002)
    assert client.discover("old") == ((LOCAL, 5001),)
    clock.now += 2.5

    assert client.discover("old") == ()
    assert client.list() == ("KEPT",)
    assert client.discover("kept") == ((LOCAL, 5002),)
    assert server.removed == [("OLD", (LOCAL, 5001))]


def test_periodic_pruning_fires_the_removed_hook(make_server):
    server = make_server("udp", pruning_timeout=0.05)
    client = client_for(server)
    assert client.register(("ephemeral",), 6001) is True

    wait_until(lambda: server.removed, server.changed)

    assert server.removed == [("EPHEMERAL", (LOCAL, 6001))]
    assert server.services == {}


def test_prune_drops_only_entries_older_than_the_timeout():
    clock = FakeClock()
    server = RecordingUDPServer(host=LOCAL, port=0, pruning_timeout=10, clock=clock)
    try:
        server.cmd_register("10.0.0.1", ("a",), 1)
        clock.now += 6
        server.cmd_register("10.0.0.2", ("a",), 2)
        clock.now += 4.5
        server.prune()
        assert server.services == {"A": {("10.0.0.2", 2): 1006.0}}
        assert server.removed == [("A", ("10.0.0.1", 1))]
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_a_failing_hook_is_logged_and_the_registry_goes_on(make_server, kind, caplog):
    server = make_server(kind)

    def explode(name, addrinfo):
        raise RuntimeError(f"hook broke on {name}")

    server.on_service_added = explode
    client = client_for(server)

    with caplog.at_level(logging.ERROR, logger=server.logger.name):
        assert client.register(("x",), 7001) is True
    assert client.discover("x") == ((LOCAL, 7001),)
    assert [r.exc_info[1].args for r in caplog.records] == [("hook broke on X",)]


# ---------------------------------------------------------------------------
# hostile input
# ---------------------------------------------------------------------------

VALID_QUERY = request("QUERY", ("target",))
HOSTILE = [
    b"",
    b"\x00garbage\xff\xfe",
    bytes(range(256)),
    brine.dump("RPYC"),
    brine.dump(("RPYC", "QUERY")),
    brine.dump(("XXXX", "QUERY", ("target",))),
    request("NOPE", ()),
    request(7, ()),
    request("QUERY", "target"),
    request("QUERY", (1,)),
    request("QUERY", ("a", "b")),
    request("LIST", ((1,),)),
    request("LIST", (None,)),
    request("REGISTER", ("target", 5)),
    request("REGISTER", (("target", 3), 5)),
    request("REGISTER", (("target",), 0)),
    request("REGISTER", (("target",), 70000)),
    request("REGISTER", (("target",), True)),
    request("REGISTER", (("target",), "5")),
    request("UNREGISTER", ("5",)),
    request("UNREGISTER", ()),
    request("QUERY", ("x" * 9000,)),
    b"\x00" * 60000,
] + [request("REGISTER", (("target",), 5))[:cut] for cut in range(1, 20)]


@pytest.mark.parametrize("data", HOSTILE, ids=range(len(HOSTILE)))
def test_handle_request_ignores_hostile_bytes(data):
    server = UDPRegistryServer(host=LOCAL, port=0)
    try:
        assert server.handle_request(data, LOCAL) is None
        assert server.services == {}
    finally:
        server.close()


def test_handle_request_answers_valid_requests_with_brine():
    server = UDPRegistryServer(host=LOCAL, port=0, allow_listing=True)
    try:
        assert server.handle_request(request("REGISTER", (("a",), 9)), "10.1.1.1") == brine.dump(
            "OK"
        )
        assert server.handle_request(request("query", ("A",)), LOCAL) == brine.dump(
            (("10.1.1.1", 9),)
        )
        assert server.handle_request(request("LIST", ((None,),)), LOCAL) == brine.dump(("A",))
    finally:
        server.close()


def test_hostile_datagrams_are_logged_ignored_and_the_server_keeps_answering(
    make_server, caplog, capsys
):
    server = make_server("udp")
    client = client_for(server)
    assert client.register(("target",), 8001) is True

    with (
        caplog.at_level(logging.WARNING, logger=server.logger.name),
        gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) as raw,
    ):
        raw.settimeout(2)
        for data in HOSTILE:
            raw.sendto(data, (LOCAL, server.port))
        raw.sendto(VALID_QUERY, (LOCAL, server.port))
        # Datagrams are answered in order: a reply to any hostile one would come first.
        reply, _ = raw.recvfrom(65536)

    assert brine.load(reply) == ((LOCAL, 8001),)
    assert len(caplog.records) == len(HOSTILE)
    assert all(r.message.startswith("ignored request from 127.0.0.1") for r in caplog.records)
    assert server.services == {"TARGET": {(LOCAL, 8001): pytest.approx(time.monotonic(), abs=5)}}
    assert capsys.readouterr() == ("", "")


def test_oversized_datagram_is_refused_by_size(make_server, caplog):
    server = make_server("udp")
    with (
        caplog.at_level(logging.WARNING, logger=server.logger.name),
        gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) as raw,
    ):
        raw.settimeout(2)
        raw.sendto(b"\x00" * 60000, (LOCAL, server.port))
        raw.sendto(VALID_QUERY, (LOCAL, server.port))
        reply, _ = raw.recvfrom(65536)

    assert brine.load(reply) == ()
    assert [r.message for r in caplog.records] == [
        "ignored request from 127.0.0.1: request of 1501 bytes exceeds max_request_size=1500"
    ]


def test_tcp_garbage_and_stalled_clients_do_not_stop_the_server(make_server, caplog):
    server = make_server("tcp", request_timeout=0.3)
    client = client_for(server)

    with caplog.at_level(logging.INFO, logger=server.logger.name):
        garbage = gsocket.create_connection((LOCAL, server.port), timeout=2)
        stalled = gsocket.create_connection((LOCAL, server.port), timeout=2)
        with garbage, stalled:
            garbage.sendall(b"\xfegarbage")  # 0xfe is no brine tag
            garbage.shutdown(socket.SHUT_WR)
            stalled.sendall(VALID_QUERY[:3])
            # Both are held open by the server while other clients are answered.
            assert client.register(("tcpsvc",), 8101) is True
            assert client.discover("tcpsvc") == ((LOCAL, 8101),)
            assert garbage.recv(100) == b""
            started = time.monotonic()
            assert stalled.recv(100) == b""
            assert time.monotonic() - started < 1.5

    messages = [r.message for r in caplog.records]
    assert any(m.startswith("ignored request from 127.0.0.1: undecodable") for m in messages)
    assert "registry connection from 127.0.0.1 failed: timed out" in messages


# ---------------------------------------------------------------------------
# server life cycle
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_start_blocks_until_close(kind):
    server = SERVERS[kind](host=LOCAL, port=0)
    assert server.port > 0
    runner = gevent.spawn(server.start)
    try:
        client = client_for(server)
        assert client.register(("blocking",), 9001) is True
        assert not runner.ready()
    finally:
        server.close()
    runner.join(2)
    assert runner.successful()
    server.close()
    with pytest.raises(ValueError, match=r"registry server on port \d+ is closed"):
        server.start_in_background()


def test_a_hook_may_close_its_own_server(make_server):
    server = make_server("tcp")

    def close_on_first(name, addrinfo):
        server.close()

    server.on_service_added = close_on_first
    client = client_for(server, timeout=1)

    assert client.register(("last",), 9101) is True
    assert server.active is False
    assert server.sock is None
    assert client.discover("last") == ()


def test_start_twice_is_refused(make_server):
    server = make_server("udp")
    with pytest.raises(ValueError, match=r"registry server on port \d+ is already running"):
        server.start_in_background()


def test_closing_an_unstarted_server_releases_its_port():
    server = UDPRegistryServer(host=LOCAL, port=0)
    port = server.port
    server.close()
    again = UDPRegistryServer(host=LOCAL, port=port)
    again.close()


@pytest.mark.parametrize("cls", [UDPRegistryServer, TCPRegistryServer])
def test_invalid_pruning_timeout_is_refused_and_the_port_released(cls):
    socktype = gsocket.SOCK_DGRAM if cls is UDPRegistryServer else gsocket.SOCK_STREAM
    with gsocket.socket(gsocket.AF_INET, socktype) as probe:
        probe.bind((LOCAL, 0))
        port = probe.getsockname()[1]
    with pytest.raises(ValueError, match=r"pruning_timeout must be > 0 seconds, got 0"):
        cls(host=LOCAL, port=port, pruning_timeout=0)
    cls(host=LOCAL, port=port).close()


def test_defaults_match_rpyc_but_the_bind():
    udp = inspect.signature(UDPRegistryServer).parameters
    tcp = inspect.signature(TCPRegistryServer).parameters
    # RPyC binds 0.0.0.0; grpyc serves this machine unless told otherwise.
    assert (udp["host"].default, udp["port"].default) == ("127.0.0.1", 18811)
    assert (tcp["host"].default, tcp["port"].default, tcp["reuse_addr"].default) == (
        "127.0.0.1",
        18811,
        True,
    )
    assert registry.DEFAULT_PRUNING_TIMEOUT == 240
    assert registry.REGISTRY_PORT == 18811
    assert registry.MAX_DGRAM_SIZE == 1500
    assert UDPRegistryClient.REREGISTER_INTERVAL == 60


def test_servers_log_to_their_own_logger():
    udp = UDPRegistryServer(host=LOCAL, port=0)
    tcp = TCPRegistryServer(host=LOCAL, port=0)
    try:
        assert udp.logger.name == f"grpyc.registry.udp.{udp.port}"
        assert tcp.logger.name == f"grpyc.registry.tcp.{tcp.port}"
    finally:
        udp.close()
        tcp.close()


# ---------------------------------------------------------------------------
# clients on their own
# ---------------------------------------------------------------------------


def test_udp_client_broadcasts_only_to_broadcast_addresses():
    assert UDPRegistryClient().bcast is True
    assert UDPRegistryClient(ip="192.168.1.255").bcast is True
    assert UDPRegistryClient(ip=LOCAL).bcast is False
    assert UDPRegistryClient(ip=LOCAL, bcast=True).bcast is True
    v6 = UDPRegistryClient(ip="::1", ipv6=True)
    assert (v6.bcast, v6.sock_family) == (False, socket.AF_INET6)


def test_clients_implement_the_one_interface():
    assert issubclass(UDPRegistryClient, RegistryClient)
    assert issubclass(TCPRegistryClient, RegistryClient)
    assert issubclass(RedisRegistryClient, RegistryClient)


@pytest.mark.parametrize("client_cls", [UDPRegistryClient, TCPRegistryClient])
def test_client_arguments_are_checked_at_the_call(client_cls):
    client = client_cls(LOCAL, port=9)
    with pytest.raises(TypeError, match=r"aliases must be an iterable of names, not the string"):
        client.register("svc", 5)
    with pytest.raises(TypeError, match=r"service alias must be str, got 3"):
        client.register(("svc", 3), 5)
    with pytest.raises(ValueError, match=r"port must be an int in 1\.\.65535, got 0"):
        client.register(("svc",), 0)
    with pytest.raises(TypeError, match=r"service name must be str, got b'svc'"):
        client.discover(b"svc")


def test_udp_client_answers_empty_when_no_registry_replies(caplog):
    with gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) as deaf:
        deaf.bind((LOCAL, 0))
        port = deaf.getsockname()[1]
        client = UDPRegistryClient(ip=LOCAL, port=port, timeout=0.1)
        with caplog.at_level(logging.WARNING, logger=client.logger.name):
            assert client.discover("x") == ()
            assert client.list() == ()
            assert client.register(("x",), 5) is False
    assert [r.message for r in caplog.records] == [f"no registry at 127.0.0.1:{port} acknowledged"]


def test_tcp_client_answers_empty_when_the_registry_is_down(caplog):
    with gsocket.socket() as probe:
        probe.bind((LOCAL, 0))
        port = probe.getsockname()[1]
    client = TCPRegistryClient(LOCAL, port=port, timeout=1)
    with caplog.at_level(logging.WARNING, logger=client.logger.name):
        assert client.discover("x") == ()
        assert client.list() == ()
        assert client.register(("x",), 5) is False
        assert client.unregister(5) is None
    refused = f"to 127.0.0.1:{port} failed: [Errno 111] Connection refused"
    assert [r.message for r in caplog.records] == [
        f"QUERY {refused}",
        f"LIST {refused}",
        f"REGISTER {refused}",
        f"no registry at 127.0.0.1:{port} acknowledged",
        f"UNREGISTER {refused}",
    ]


def test_udp_client_skips_foreign_and_malformed_replies():
    with (
        gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) as fake,
        gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) as stranger,
    ):
        fake.bind((LOCAL, 0))
        client = UDPRegistryClient(ip=LOCAL, port=fake.getsockname()[1], timeout=2)

        def answer():
            data, address = fake.recvfrom(1024)
            assert brine.load(data) == ("RPYC", "QUERY", ("svc",))
            stranger.sendto(brine.dump((("6.6.6.6", 6),)), address)
            fake.sendto(b"\xffgarbage", address)
            fake.sendto(brine.dump(("not", "servers")), address)
            fake.sendto(brine.dump((("127.0.0.1", 4242),)), address)

        responder = gevent.spawn(answer)
        assert client.discover("svc") == (("127.0.0.1", 4242),)
        responder.get(timeout=2)


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_unregister_leaves_from_the_interface_the_port_registered_from(make_server, kind):
    server = make_server(kind)
    client = client_for(server)

    assert client.register(("moved",), 5150, interface="127.0.0.2") is True
    assert client.discover("moved") == (("127.0.0.2", 5150),)
    client.unregister(5150)
    wait_until(lambda: server.removed, server.changed)

    assert server.removed == [("MOVED", ("127.0.0.2", 5150))]
    assert client.discover("moved") == ()


# ---------------------------------------------------------------------------
# broadcasts from this machine (the default registrars broadcast)
# ---------------------------------------------------------------------------


def broadcast_from_loopback(port, data, timeout):
    """Broadcast ``data`` to ``port`` from 127.0.0.1 (it stays on ``lo``); the reply or None."""
    with gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_BROADCAST, 1)
        sock.settimeout(timeout)
        sock.sendto(data, ("255.255.255.255", port))
        try:
            return sock.recvfrom(1500)
        except TimeoutError:
            return None


def test_loopback_registry_answers_broadcasts_from_this_machine(make_server):
    server = make_server("udp")
    assert server.broadcast_sock.getsockname() == ("255.255.255.255", server.port)

    reply = broadcast_from_loopback(server.port, request("REGISTER", (("heard",), 4321)), 2)

    # The reply leaves from the registry's own address and port, as clients expect.
    assert reply == (brine.dump("OK"), (LOCAL, server.port))
    assert client_for(server).discover("heard") == ((LOCAL, 4321),)


def test_registry_without_local_broadcasts_hears_none(make_server):
    server = make_server("udp", hear_local_broadcasts=False)
    assert server.broadcast_sock is None
    assert broadcast_from_loopback(server.port, request("QUERY", ("x",)), 0.3) is None


def test_closing_releases_the_broadcast_listener_too(make_server):
    server = make_server("udp")
    port = server.port
    server.close()
    assert server.broadcast_sock is None
    again = UDPRegistryServer(host=LOCAL, port=port)
    try:
        assert again.broadcast_sock.getsockname() == ("255.255.255.255", port)
    finally:
        again.close()


# ---------------------------------------------------------------------------
# staying registered
# ---------------------------------------------------------------------------


class ScriptedStop:
    """A stop signal that records each wait and says stop after ``waits`` of them."""

    def __init__(self, waits):
        self.timeouts = []
        self.waits = waits

    def wait(self, timeout=None):
        self.timeouts.append(timeout)
        return len(self.timeouts) >= self.waits


class ScriptedRegistrar:
    REREGISTER_INTERVAL = 30

    def __init__(self, outcomes):
        self.calls = []
        self.outcomes = list(outcomes)

    def register(self, aliases, port, interface=""):
        self.calls.append((aliases, port, interface))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_register_periodically_waits_the_interval_after_success_and_retries_sooner(caplog):
    registrar = ScriptedRegistrar([True, False, RuntimeError("registry gone"), True])
    stop = ScriptedStop(waits=4)

    with caplog.at_level(logging.ERROR):
        registry.register_periodically(registrar, ["a", "b"], 18812, stop, "127.0.0.1", 0.5)

    assert registrar.calls == [(("a", "b"), 18812, "127.0.0.1")] * 4
    assert stop.timeouts == [30, 0.5, 0.5, 30]
    assert [r.getMessage() for r in caplog.records] == ["registering a, b on port 18812 failed"]


def test_register_periodically_checks_its_arguments_before_registering():
    registrar = ScriptedRegistrar([])
    with pytest.raises(TypeError, match=r"aliases must be an iterable of names, not the string"):
        registry.register_periodically(registrar, "a", 18812, ScriptedStop(1))
    with pytest.raises(ValueError, match=r"port must be an int in 1\.\.65535, got 0"):
        registry.register_periodically(registrar, ("a",), 0, ScriptedStop(1))
    assert registrar.calls == []


def test_client_method_stays_registered_until_stopped(make_server):
    server = make_server("udp")
    client = client_for(server)
    client.REREGISTER_INTERVAL = 0.01
    stop = Event()

    looping = gevent.spawn(client.register_periodically, ("loop",), 6000, stop, LOCAL)
    wait_until(lambda: server.added, server.changed)
    first_seen = server.services["LOOP"][(LOCAL, 6000)]
    with gevent.Timeout(5):
        while server.services["LOOP"][(LOCAL, 6000)] == first_seen:
            gevent.sleep(0.01)
    stop.set()
    looping.get(timeout=2)
    assert server.added == [("LOOP", (LOCAL, 6000))]
