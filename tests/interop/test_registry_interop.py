"""Registry interop with stock rpyc 6.0.2 (PROTOCOL.md section 8), on loopback only.

Stock clients run in OS threads of the hub's threadpool (they block on plain
sockets) against grpyc servers in this hub; grpyc clients talk to stock
servers running in a subprocess that exits when its stdin closes.
"""

import json
import subprocess
import sys

import gevent
import pytest
from gevent import socket as gsocket
from gevent.event import Event
from rpyc.utils import registry as stock

from grpyc.registry import (
    TCPRegistryClient,
    TCPRegistryServer,
    UDPRegistryClient,
    UDPRegistryServer,
    register_periodically,
)

LOCAL = "127.0.0.1"

STOCK_SERVERS = """
import json, os, sys, threading
from rpyc.utils.registry import TCPRegistryServer, UDPRegistryServer

servers = {
    "udp": UDPRegistryServer(host="127.0.0.1", port=0, allow_listing=True),
    "udp_nolist": UDPRegistryServer(host="127.0.0.1", port=0),
    "tcp": TCPRegistryServer(host="127.0.0.1", port=0, allow_listing=True),
    "tcp_nolist": TCPRegistryServer(host="127.0.0.1", port=0),
}
for server in servers.values():
    threading.Thread(target=server.start, daemon=True).start()
print(json.dumps({kind: server.port for kind, server in servers.items()}), flush=True)
# Serve until the test closes stdin (or dies), and never past 120 s.
threading.Timer(120, os._exit, (0,)).start()
sys.stdin.read()
os._exit(0)
"""


def blocking(func, *args):
    """Run stock (blocking) code in an OS thread while the hub keeps serving."""

    def outcome():
        try:
            return True, func(*args)
        except Exception as exc:  # re-raised below, in the test's greenlet
            return False, exc

    ok, value = gevent.get_hub().threadpool.apply(outcome)
    if not ok:
        raise value
    return value


@pytest.fixture(scope="module")
def stock_servers(tmp_path_factory):
    """Ports of stock rpyc registry servers on 127.0.0.1, by kind."""
    stderr_path = tmp_path_factory.mktemp("stock_registry") / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", STOCK_SERVERS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        line = proc.stdout.readline()
        assert line, f"stock registry servers did not start: {stderr_path.read_text()}"
        yield json.loads(line)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


class RemovalSignal:
    def __init__(self, *args, **kwargs):
        self.removed = []
        self.removal = Event()
        super().__init__(*args, **kwargs)

    def on_service_removed(self, name, addrinfo):
        self.removed.append((name, addrinfo))
        self.removal.set()


class SignalingUDPServer(RemovalSignal, UDPRegistryServer):
    pass


class SignalingTCPServer(RemovalSignal, TCPRegistryServer):
    pass


@pytest.fixture
def grpyc_server():
    started = []

    def make(kind, **kwargs):
        cls = SignalingUDPServer if kind == "udp" else SignalingTCPServer
        server = cls(host=LOCAL, port=0, **kwargs)
        started.append(server)
        server.start_in_background()
        return server

    yield make
    for server in started:
        server.close()


def stock_client(kind, port):
    if kind == "udp":
        return stock.UDPRegistryClient(ip=LOCAL, port=port, timeout=2)
    return stock.TCPRegistryClient(LOCAL, port=port, timeout=2)


def grpyc_client(kind, port):
    if kind == "udp":
        return UDPRegistryClient(ip=LOCAL, port=port, timeout=2)
    return TCPRegistryClient(LOCAL, port=port, timeout=2)


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_stock_client_registers_queries_and_lists_on_grpyc_server(grpyc_server, kind):
    server = grpyc_server(kind, allow_listing=True)
    client = stock_client(kind, server.port)

    assert blocking(client.register, ("StockSvc", "alias"), 18123) is True
    assert blocking(client.discover, "stocksvc") == ((LOCAL, 18123),)
    assert blocking(client.discover, "ALIAS") == ((LOCAL, 18123),)
    assert blocking(client.discover, "missing") == ()
    assert blocking(client.list) == ("STOCKSVC", "ALIAS")
    assert blocking(client.list, "127.0.0.9") == ()


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_stock_client_unregisters_from_grpyc_server(grpyc_server, kind):
    server = grpyc_server(kind)
    client = stock_client(kind, server.port)
    assert blocking(client.register, ("gone",), 18124) is True

    blocking(client.unregister, 18124)

    assert server.removal.wait(2)
    assert server.removed == [("GONE", (LOCAL, 18124))]
    assert blocking(client.discover, "gone") == ()


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_stock_client_gets_none_when_grpyc_listing_is_off(grpyc_server, kind):
    server = grpyc_server(kind)
    assert blocking(stock_client(kind, server.port).list) is None


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_grpyc_client_registers_queries_and_lists_on_stock_server(stock_servers, kind):
    client = grpyc_client(kind, stock_servers[kind])
    name = f"interop_{kind}"

    assert client.register((name, f"{name}_alias"), 18200) is True
    assert client.discover(name) == ((LOCAL, 18200),)
    assert client.discover(f"{name.upper()}_ALIAS") == ((LOCAL, 18200),)
    assert client.discover(f"{name}_missing") == ()
    assert client.list() == (name.upper(), f"{name.upper()}_ALIAS")
    assert client.list(filter_host="127.0.0.9") == ()

    client.unregister(18200)
    assert client.discover(name) == ()


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_grpyc_client_gets_none_when_stock_listing_is_off(stock_servers, kind):
    client = grpyc_client(kind, stock_servers[f"{kind}_nolist"])
    assert client.register((f"hidden_{kind}",), 18300) is True
    assert client.list() is None
    assert client.discover(f"hidden_{kind}") == ((LOCAL, 18300),)


def test_stock_udp_client_reads_a_cut_reply_as_a_shorter_list(grpyc_server):
    server = grpyc_server("udp")
    for port in range(21000, 21100):
        server.cmd_register(LOCAL, ("crowded",), port)

    found = blocking(stock_client("udp", server.port).discover, "crowded")

    # A 25-byte QUERY gets at most 250 bytes: the 12 servers refreshed longest ago.
    assert found == tuple((LOCAL, port) for port in range(21000, 21012))


def test_stock_tcp_client_is_answered_while_silent_sockets_are_open(grpyc_server):
    server = grpyc_server("tcp")
    server.cmd_register(LOCAL, ("busy",), 21200)
    silent = [gsocket.create_connection((LOCAL, server.port)) for _ in range(100)]
    try:
        client = stock_client("tcp", server.port)
        answers = [blocking(client.discover, "busy") for _ in range(5)]
    finally:
        for sock in silent:
            sock.close()
    assert answers == [((LOCAL, 21200),)] * 5


def test_register_periodically_drives_a_stock_registrar(grpyc_server):
    server = grpyc_server("udp")
    registrar = stock_client("udp", server.port)
    waits = []

    class StopAtFirstWait:
        def wait(self, timeout=None):
            waits.append(timeout)
            return True

    blocking(register_periodically, registrar, ("stocky",), 21300, StopAtFirstWait(), LOCAL)

    # Acknowledged, so the next registration was due after stock's interval.
    assert waits == [stock.UDPRegistryClient.REREGISTER_INTERVAL]
    assert server.cmd_query(LOCAL, "stocky") == ((LOCAL, 21300),)
