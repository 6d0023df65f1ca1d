"""grpyc.registry: servers, protocol clients and the Redis client, on loopback only."""

import inspect
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

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
        "ignored request from 127.0.0.1: request of 8193 bytes exceeds max_request_size=8192"
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


def test_invalid_pruning_timeout_is_refused_before_binding():
    with pytest.raises(ValueError, match=r"pruning_timeout must be > 0 seconds, got 0"):
        TCPRegistryServer(host=LOCAL, port=0, pruning_timeout=0)


def test_defaults_match_rpyc():
    udp = inspect.signature(UDPRegistryServer).parameters
    tcp = inspect.signature(TCPRegistryServer).parameters
    assert (udp["host"].default, udp["port"].default) == ("0.0.0.0", 18811)
    assert (tcp["host"].default, tcp["port"].default, tcp["reuse_addr"].default) == (
        "0.0.0.0",
        18811,
        True,
    )
    assert registry.DEFAULT_PRUNING_TIMEOUT == 240
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


# ---------------------------------------------------------------------------
# Redis backend
# ---------------------------------------------------------------------------


def _free_port():
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        return probe.getsockname()[1]


def _wait_for_redis(redis_module, port, proc, deadline):
    probe = redis_module.Redis(host=LOCAL, port=port, socket_timeout=1)
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                return probe.ping()
            except redis_module.ConnectionError:
                gevent.sleep(0.02)
        return False
    finally:
        probe.close()


@pytest.fixture(scope="module")
def redis_url():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; CI installs it)")
    import redis

    for _attempt in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--bind", LOCAL, "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _wait_for_redis(redis, port, proc, time.monotonic() + 10):
            break
        proc.kill()
        proc.wait(5)
    else:
        pytest.fail("redis-server did not start on 127.0.0.1 in 3 attempts")
    try:
        yield f"redis://{LOCAL}:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def make_redis_client(redis_url):
    made = []
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    def make(**kwargs):
        kwargs.setdefault("prefix", prefix)
        client = RedisRegistryClient(redis_url, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_redis_register_discover_list_unregister(make_redis_client):
    client = make_redis_client(ttl=30)

    assert client.register(("web", "Front"), 8080) is True
    assert client.register(("web",), 8081, interface="127.0.0.2") is True
    assert client.discover("WEB") == ((LOCAL, 8080), ("127.0.0.2", 8081))
    assert client.discover("front") == ((LOCAL, 8080),)
    assert client.discover("none") == ()
    assert client.list() == ("FRONT", "WEB")
    assert client.list(filter_host="127.0.0.2") == ("WEB",)

    client.unregister(8081)
    assert client.discover("web") == ((LOCAL, 8080),)
    client.unregister(8080)
    assert client.discover("web") == ()
    assert client.list() == ()


def test_redis_entries_are_shared_between_clients(make_redis_client):
    server_side = make_redis_client()
    other = make_redis_client()
    assert server_side.register(("shared",), 7000) is True
    assert other.discover("shared") == ((LOCAL, 7000),)


def test_redis_entry_of_a_dead_server_expires_within_its_ttl(make_redis_client):
    client = make_redis_client(ttl=0.5)
    assert client.REREGISTER_INTERVAL == 0.5 / 3
    assert client.register(("mortal",), 7100) is True
    registered = time.monotonic()
    assert client.discover("mortal") == ((LOCAL, 7100),)

    deadline = registered + 5
    while client.discover("mortal") and time.monotonic() < deadline:
        gevent.sleep(0.05)
    gone_after = time.monotonic() - registered

    assert client.discover("mortal") == ()
    assert client.list() == ()
    assert 0.3 < gone_after < 1.5


def test_redis_calls_leave_the_hub_responsive(make_redis_client, redis_url):
    import redis

    client = make_redis_client()
    assert client.register(("busy",), 7200) is True
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    admin = redis.Redis.from_url(redis_url)
    try:
        admin.client_pause(300)  # every client's next command waits 300 ms
        started = time.monotonic()
        assert client.discover("busy") == ((LOCAL, 7200),)
        elapsed = time.monotonic() - started
        during = [t for t in ticks if started <= t <= started + elapsed]
    finally:
        ticker.kill()
        admin.close()
    assert elapsed >= 0.2
    assert len(during) >= 10


def test_redis_unreachable_answers_empty_and_logs(caplog):
    client = RedisRegistryClient(f"redis://{LOCAL}:{_free_port()}/0", timeout=1)
    try:
        with caplog.at_level(logging.WARNING, logger=client.logger.name):
            assert client.discover("x") == ()
            assert client.list() == ()
            assert client.register(("x",), 5) is False
            client.unregister(5)
    finally:
        client.close()
    assert [r.message.split(":")[0] for r in caplog.records] == [
        "redis registry discover 'x' failed",
        "redis registry list failed",
        "redis registry register failed",
        "redis registry unregister failed",
    ]


def test_redis_ttl_must_be_positive():
    with pytest.raises(ValueError, match=r"ttl must be > 0 seconds, got 0"):
        RedisRegistryClient(ttl=0)


def test_redis_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"pip install grpyc\[redis\]"):
        RedisRegistryClient()


class FakeRedis:
    """Stands in for a redis client: records which thread runs each script."""

    def __init__(self):
        self.threads = []

    def register_script(self, source):
        def run(keys, args):
            self.threads.append(threading.get_ident())
            return []

        return run


@pytest.mark.parametrize(("patched", "inline"), [(False, False), (True, True)])
def test_redis_calls_run_in_a_thread_unless_socket_is_patched(monkeypatch, patched, inline):
    monkeypatch.setattr(gevent.monkey, "is_module_patched", lambda name: patched)
    fake = FakeRedis()
    client = RedisRegistryClient(fake, host=LOCAL)

    assert client.discover("x") == ()
    assert client.list() == ()
    assert client.register(("x",), 5) is True

    main = threading.get_ident()
    assert len(fake.threads) == 3
    assert all((thread == main) is inline for thread in fake.threads)
