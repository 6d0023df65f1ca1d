"""grpyc.factory: in-process, child-process, TLS, SSH and registry-based connections."""

import gc
import os
import socket
import ssl
import sys
import types
from pathlib import Path

import gevent
import gevent.ssl
import pytest
from gevent import socket as gsocket
from gevent.event import Event
from gevent.server import StreamServer

from grpyc import factory
from grpyc.authenticators import SSLAuthenticator
from grpyc.factory import DiscoveryError, ForbiddenError
from grpyc.registry import (
    TCPRegistryClient,
    TCPRegistryServer,
    UDPRegistryClient,
    UDPRegistryServer,
)
from grpyc.server import Server
from grpyc.service import Service, SlaveService, VoidService
from tests.certs import CLIENT_COMMON_NAME, make_pki
from tests.services import TestService

ROOT = Path(__file__).resolve().parents[1]
LOCAL = "127.0.0.1"


def _wait_exit(proc, timeout=10):
    """Wait (in the hub) for a multiprocessing child to exit; its exit code."""
    with gevent.Timeout(timeout):
        gsocket.wait_read(proc.sentinel)
    # The sentinel closes a moment before the child can be reaped.
    proc.join(timeout)
    return proc.exitcode


# ---------------------------------------------------------------- connect_thread
class DisconnectRecorder(Service):
    def __init__(self):
        self.disconnected = Event()

    def on_disconnect(self, conn):
        self.disconnected.set()

    def exposed_twice(self, callback, value):
        return callback(value) * 2


def test_connect_thread_round_trip_with_callback():
    remote = DisconnectRecorder()
    conn = factory.connect_thread(remote_service=remote)
    assert conn.root.twice(lambda v: v + 1, 20) == 42
    conn.close()
    assert remote.disconnected.wait(5)


def test_connect_thread_peer_survives_garbage_collection():
    conn = factory.connect_thread(remote_service=TestService)
    gc.collect()
    assert conn.root.add(2, 3) == 5
    conn.close()


def test_connect_thread_passes_both_configs():
    conn = factory.connect_thread(
        config={"connid": "local-side"},
        remote_service=TestService,
        remote_config={"allow_public_attrs": True},
    )
    thing = conn.root.make_thing(7)
    assert thing.bump(3) == 10  # a public attribute: allowed by the remote config only
    assert conn._config["connid"] == "local-side"
    conn.close()


# --------------------------------------------------- connect_subproc / stdpipes
def test_connect_subproc_serves_the_child_over_stdpipes(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    code = (
        "from grpyc.factory import connect_stdpipes; from grpyc.service import SlaveService; "
        "conn = connect_stdpipes(SlaveService); "
        "print('a stray print goes to the null device, not into the frames', flush=True); "
        "conn.serve_all()"
    )
    conn = factory.connect_subproc([sys.executable, "-c", code])
    try:
        assert conn.root.eval("6 * 7") == 42
        assert conn.root.getmodule("os").getpid() == conn.proc.pid
    finally:
        conn.close()
    assert conn.proc.wait(timeout=10) == 0


def test_connect_subproc_child_exit_closes_the_connection(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    code = "import sys; sys.exit(3)"
    conn = factory.connect_subproc([sys.executable, "-c", code])
    assert conn.proc.wait(timeout=10) == 3
    with pytest.raises(EOFError):
        conn.root.eval("1")
    assert conn.closed


# ---------------------------------------------------------- connect_multiprocess
def test_connect_multiprocess_runs_the_service_in_a_child_process():
    conn = factory.connect_multiprocess(remote_service=SlaveService)
    try:
        assert conn.root.getmodule("os").getpid() == conn.proc.pid
        assert conn.proc.pid != os.getpid()
    finally:
        conn.close()
    assert _wait_exit(conn.proc) == 0


def test_connect_multiprocess_args_share_memory_with_the_child():
    import multiprocessing

    shared = multiprocessing.get_context("spawn").Value("i", 5)
    conn = factory.connect_multiprocess(remote_service=SlaveService, args={"shared": shared})
    try:
        assert conn.root.eval("shared.value") == 5
        conn.root.execute("shared.value = 42")
        assert shared.value == 42
    finally:
        conn.close()
    assert _wait_exit(conn.proc) == 0


def test_connect_multiprocess_refuses_shared_objects_of_the_fork_context():
    import multiprocessing

    shared = multiprocessing.get_context("fork").Value("i", 5)
    with pytest.raises(RuntimeError, match="SemLock created in a fork context"):
        factory.connect_multiprocess(remote_service=SlaveService, args={"shared": shared})


def test_connect_multiprocess_refuses_args_that_are_not_a_dict():
    with pytest.raises(TypeError, match="args must be a dict of names to values, not list"):
        factory.connect_multiprocess(remote_service=SlaveService, args=[("x", 1)])


class PlainService(Service):
    pass


def test_args_go_to_exposed_namespace_or_are_refused():
    class WithNamespace(Service):
        def __init__(self):
            self.exposed_namespace = {}

    root = WithNamespace()
    assert factory._args_namespace(root) is root.exposed_namespace
    slave = SlaveService()
    assert factory._args_namespace(slave) is slave.namespace
    assert factory._args_namespace(VoidService()) is None
    with pytest.raises(TypeError, match="PlainService has neither"):
        factory._args_namespace(PlainService())


# ------------------------------------------------------------------ ssl_connect
@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path)


@pytest.fixture
def tls_server(pki):
    authenticator = SSLAuthenticator(
        keyfile=str(pki.server_key), certfile=str(pki.server_cert), ca_certs=str(pki.ca_cert)
    )
    server = Server(TestService, hostname=LOCAL, port=0, authenticator=authenticator)
    server.listen()
    yield server
    server.close()


def test_ssl_connect_with_client_certificate(pki, tls_server):
    conn = factory.ssl_connect(
        LOCAL,
        tls_server.port,
        keyfile=str(pki.client_key),
        certfile=str(pki.client_cert),
        ca_certs=str(pki.ca_cert),
    )
    try:
        assert conn.root.echo("over tls") == "over tls"
        (server_conn,) = tls_server.clients
        subject = dict(item[0] for item in server_conn._config["credentials"]["subject"])
        assert subject == {"commonName": CLIENT_COMMON_NAME}
    finally:
        conn.close()


def test_ssl_connect_checks_host_name_when_cert_reqs_is_given(pki, tls_server):
    conn = factory.ssl_connect(
        LOCAL,
        tls_server.port,
        keyfile=str(pki.client_key),
        certfile=str(pki.client_cert),
        ca_certs=str(pki.ca_cert),
        cert_reqs=ssl.CERT_REQUIRED,
    )
    assert conn.root.add(1, 2) == 3
    conn.close()


def test_ssl_connect_refuses_a_server_signed_by_another_ca(pki):
    # A bare TLS listener: the server side of the failed handshake is not under test.
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))

    def handshake(sock, address):
        try:
            context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            pass
        finally:
            sock.close()

    listener = StreamServer((LOCAL, 0), handshake)
    listener.start()
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            factory.ssl_connect(LOCAL, listener.server_port, ca_certs=str(pki.other_ca_cert))
    finally:
        listener.stop()


def test_server_handler_survives_a_failed_tls_handshake(pki):
    authenticator = SSLAuthenticator(keyfile=str(pki.server_key), certfile=str(pki.server_cert))
    server = Server(TestService, hostname=LOCAL, port=0, authenticator=authenticator)
    ours, peer = gsocket.socketpair()
    peer.sendall(b"this is not a TLS client hello\r\n\r\n")
    try:
        server._handle(ours, "peer")  # a refused client must be logged, not raised
    finally:
        peer.close()
        server.close()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}),
        (
            {"ca_certs": "ca.pem"},
            {"ca_certs": "ca.pem", "cert_reqs": ssl.CERT_REQUIRED, "check_hostname": False},
        ),
        (
            {"verify_mode": ssl.CERT_OPTIONAL},
            {"cert_reqs": ssl.CERT_OPTIONAL, "check_hostname": False},
        ),
        ({"cert_reqs": ssl.CERT_REQUIRED}, {"cert_reqs": ssl.CERT_REQUIRED}),
        (
            {"ca_certs": "ca.pem", "cert_reqs": ssl.CERT_NONE},
            {"ca_certs": "ca.pem", "cert_reqs": ssl.CERT_NONE, "check_hostname": False},
        ),
        (
            {"keyfile": "k", "certfile": "c", "ciphers": "HIGH", "ssl_version": 2},
            {
                "keyfile": "k",
                "certfile": "c",
                "ciphers": "HIGH",
                "ssl_version": 2,
                "cert_reqs": ssl.CERT_NONE,
                "check_hostname": False,
            },
        ),
    ],
)
def test_ssl_arguments_read_as_rpyc_reads_them(kwargs, expected):
    arguments = {
        "keyfile": None,
        "certfile": None,
        "ca_certs": None,
        "cert_reqs": None,
        "ssl_version": None,
        "ciphers": None,
        "verify_mode": None,
        **kwargs,
    }
    assert factory._ssl_kwargs(**arguments) == {"server_side": False, **expected}


# ------------------------------------------------------------------ ssh_connect
def test_ssh_connect_without_plumbum_names_the_dependency(monkeypatch):
    monkeypatch.setitem(sys.modules, "plumbum", None)
    with pytest.raises(ImportError, match=r"ssh_connect needs plumbum .*grpyc-gevent\[ssh\]"):
        factory.ssh_connect(object(), 18812)


class FakeTunnel:
    def __init__(self, server):
        self.server = server
        self.closed = False

    def close(self):
        self.closed = True
        self.server.close()


class FakeRemoteMachine:
    """Stands in for a plumbum SshMachine: the 'tunnel' is a server on the local port."""

    def __init__(self):
        self.tunnels = []

    def tunnel(self, local_port, remote_port):
        server = Server(TestService, hostname=LOCAL, port=local_port)
        server.listen()
        tunnel = FakeTunnel(server)
        self.tunnels.append((local_port, remote_port, tunnel))
        return tunnel


def test_ssh_connect_goes_through_the_tunnel_and_closes_it(monkeypatch):
    try:
        import plumbum  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "plumbum", types.ModuleType("plumbum"))
    remote = FakeRemoteMachine()
    conn = factory.ssh_connect(remote, 18812)
    assert conn.root.echo("tunneled") == "tunneled"
    ((local_port, remote_port, tunnel),) = remote.tunnels
    assert remote_port == 18812
    assert conn._channel.stream.sock.getpeername() == (LOCAL, local_port)
    assert not tunnel.closed
    conn.close()
    assert tunnel.closed


def test_ssh_connect_closes_the_tunnel_when_connecting_fails(monkeypatch):
    try:
        import plumbum  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "plumbum", types.ModuleType("plumbum"))

    class DeadTunnelMachine:
        tunnel_obj = None

        def tunnel(self, local_port, remote_port):
            self.tunnel_obj = types.SimpleNamespace(closed=False)
            self.tunnel_obj.close = lambda: setattr(self.tunnel_obj, "closed", True)
            return self.tunnel_obj

    remote = DeadTunnelMachine()
    with pytest.raises(ConnectionRefusedError):
        factory.ssh_connect(remote, 18812)
    assert remote.tunnel_obj.closed


# -------------------------------------------------------------------- discovery
class CalcService(Service):
    def exposed_where(self):
        return "calc"


@pytest.fixture
def calc_servers():
    servers = []

    def make():
        server = Server(CalcService, hostname=LOCAL, port=0)
        server.listen()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def dead_port():
    """A port bound but not listening: connecting to it is refused."""
    sock = socket.socket()
    sock.bind((LOCAL, 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(params=["udp", "tcp"])
def registry(request):
    """(registry server, client) on 127.0.0.1, listing allowed."""
    if request.param == "udp":
        server = UDPRegistryServer(host=LOCAL, port=0, allow_listing=True)
        client = UDPRegistryClient(ip=LOCAL, port=server.port, timeout=2)
    else:
        server = TCPRegistryServer(host=LOCAL, port=0, allow_listing=True)
        client = TCPRegistryClient(ip=LOCAL, port=server.port, timeout=2)
    server.start_in_background()
    yield server, client
    server.close()


def test_discover_and_list_services(registry, calc_servers):
    _, client = registry
    first, second = calc_servers(), calc_servers()
    assert client.register(("CALC", "CALCULATOR"), first.port)
    assert client.register(("CALC",), second.port)
    assert sorted(factory.discover("CALC", registrar=client)) == sorted(
        [(LOCAL, first.port), (LOCAL, second.port)]
    )
    assert factory.discover("CALCULATOR", registrar=client) == ((LOCAL, first.port),)
    assert sorted(factory.list_services(registrar=client)) == ["CALC", "CALCULATOR"]


def test_discover_filters_by_host(registry, calc_servers):
    _, client = registry
    server = calc_servers()
    assert client.register(("CALC",), server.port)
    assert factory.discover("CALC", host="localhost", registrar=client) == ((LOCAL, server.port),)
    with pytest.raises(
        DiscoveryError, match=r"no servers exposing 'CALC' were found on '127\.0\.0\.2'"
    ):
        factory.discover("CALC", host="127.0.0.2", registrar=client)


def test_discover_raises_when_nothing_is_registered(registry):
    _, client = registry
    with pytest.raises(DiscoveryError, match="no servers exposing 'NOPE' were found"):
        factory.discover("NOPE", registrar=client)


def test_connect_by_service_connects_to_a_registered_server(registry, calc_servers):
    _, client = registry
    server = calc_servers()
    assert client.register(("CALC",), server.port)
    conn = factory.connect_by_service("CALC", registrar=client)
    assert conn.root.where() == "calc"
    conn.close()


def test_connect_by_service_fails_over_to_the_next_server(
    registry, calc_servers, dead_port, monkeypatch
):
    _, client = registry
    server = calc_servers()
    assert client.register(("CALC",), dead_port)
    assert client.register(("CALC",), server.port)
    tried = []

    def dead_first(addresses, count):
        ordered = sorted(addresses, key=lambda addr: addr[1] != dead_port)
        tried.extend(ordered)
        return ordered

    monkeypatch.setattr(factory.random, "sample", dead_first)
    conn = factory.connect_by_service("CALC", registrar=client)
    assert conn.root.where() == "calc"
    assert tried == [(LOCAL, dead_port), (LOCAL, server.port)]
    conn.close()


def test_connect_by_service_spreads_clients_over_live_servers(registry, calc_servers):
    _, client = registry
    first, second = calc_servers(), calc_servers()
    assert client.register(("CALC",), first.port)
    assert client.register(("CALC",), second.port)
    used = set()
    for _ in range(30):
        conn = factory.connect_by_service("CALC", registrar=client)
        used.add(conn._channel.stream.sock.getpeername()[1])
        conn.close()
    assert used == {first.port, second.port}


def test_connect_by_service_raises_when_every_server_is_down(registry, dead_port):
    _, client = registry
    assert client.register(("CALC",), dead_port)
    with pytest.raises(
        DiscoveryError, match=rf"all servers exposing 'CALC' are down: 127.0.0.1:{dead_port} \("
    ):
        factory.connect_by_service("CALC", registrar=client)


def test_list_services_refused_by_the_registry_raises_forbidden():
    server = UDPRegistryServer(host=LOCAL, port=0, allow_listing=False)
    server.start_in_background()
    try:
        client = UDPRegistryClient(ip=LOCAL, port=server.port, timeout=2)
        with pytest.raises(ForbiddenError, match="does not allow listing"):
            factory.list_services(registrar=client)
    finally:
        server.close()


def test_default_registrar_is_a_udp_client_with_the_timeout(monkeypatch):
    made = []

    class FakeUDPClient:
        def __init__(self, timeout):
            made.append(timeout)

        def discover(self, name):
            return ((LOCAL, 1),)

        def list(self, filter_host=None):
            return ("CALC",)

    monkeypatch.setattr("grpyc.registry.UDPRegistryClient", FakeUDPClient)
    assert factory.discover("CALC", timeout=0.5) == ((LOCAL, 1),)
    assert factory.list_services(timeout=0.25) == ("CALC",)
    assert made == [0.5, 0.25]
