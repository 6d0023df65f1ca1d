"""Registry abuse, in raw bytes: amplification, memory, silent sockets, exposure.

Each test replays an attack measured against the registry (security
finding 8) and checks the bound that stops it (docs/registry.md).
"""

import inspect
import os
import string
import subprocess
import sys
from pathlib import Path

import gevent
import pytest
from gevent import socket as gsocket

from grpyc import brine
from grpyc.registry import (
    LOCAL_HOST,
    TCPRegistryClient,
    TCPRegistryServer,
    UDPRegistryServer,
)

ROOT = Path(__file__).resolve().parents[2]
LOCAL = "127.0.0.1"


def request(cmd, args):
    return brine.dump(("RPYC", cmd, args))


@pytest.fixture
def start():
    """Factory: a registry server of ``cls`` on 127.0.0.1, serving; closed afterwards."""
    servers = []

    def make(cls, **kwargs):
        server = cls(host=LOCAL, port=0, **kwargs)
        servers.append(server)
        server.start_in_background()
        return server

    yield make
    for server in servers:
        server.close()


def exchange(sock, data, port, timeout=2.0):
    """Send one datagram to the registry and return its reply."""
    sock.sendto(data, (LOCAL, port))
    sock.settimeout(timeout)
    return sock.recvfrom(65536)[0]


# ---------------------------------------------------------------------------
# amplification: a small datagram must not buy a large reply
# ---------------------------------------------------------------------------


def test_udp_query_reply_is_at_most_ten_times_the_query(start):
    server = start(UDPRegistryServer)
    with gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) as raw:
        for port in range(20000, 20200):
            assert exchange(raw, request("REGISTER", (("X",), port)), server.port) == b"\x08\x0bOK"
        query = request("QUERY", ("X",))
        reply = exchange(raw, query, server.port)

    assert len(query) == 19
    assert len(reply) <= 10 * len(query)
    # The 9 least recently refreshed servers fit in 190 bytes (20 bytes each).
    assert brine.load(reply) == tuple((LOCAL, port) for port in range(20000, 20009))
    # Over TCP, where the source is proven, the whole list comes back.
    tcp = start(TCPRegistryServer)
    client = TCPRegistryClient(LOCAL, tcp.port)
    for port in range(20000, 20200):
        tcp.cmd_register(LOCAL, ("X",), port)
    assert len(client.discover("X")) == 200


def test_udp_list_reply_is_at_most_ten_times_the_request(start):
    server = start(UDPRegistryServer, allow_listing=True)
    with gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) as raw:
        names = tuple(f"SERVICE{index:03d}" for index in range(100))
        assert exchange(raw, request("REGISTER", (names, 5000)), server.port) == b"\x08\x0bOK"
        listing = request("LIST", ((None,),))
        reply = exchange(raw, listing, server.port)

    assert len(listing) == 16
    assert len(reply) <= 10 * len(listing)
    assert brine.load(reply) == names[:12]


# ---------------------------------------------------------------------------
# memory: what REGISTER datagrams can make the server hold
# ---------------------------------------------------------------------------

REGISTRY_PROCESS = """
import logging, sys
from gevent.fileobject import FileObjectThread
from grpyc.registry import UDPRegistryServer

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
server = UDPRegistryServer(host="127.0.0.1", port=0)
server.start_in_background()
print(server.port, flush=True)
FileObjectThread(sys.stdin.buffer, "rb").read()
server.close()
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise KeyError("VmRSS")


# Names are upper-cased by the registry: only upper-case letters stay distinct.
ALPHABET = string.ascii_uppercase + string.digits


def short_name(number):
    """A distinct 4-character name per number: 6 bytes of brine."""
    digits = []
    for _ in range(4):
        number, digit = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(digits)


def register_datagrams(size, total, sources):
    """REGISTER datagrams of at most ``size`` bytes, at least ``total`` bytes in
    all, each full of distinct short names (the most table per byte sent).
    Returns ``(source, datagram)`` pairs, the sources taken in turn."""
    per_datagram = (size - 40) // 6
    datagrams, sent, serial = [], 0, 0
    while sent < total:
        names = tuple(short_name(number) for number in range(serial, serial + per_datagram))
        serial += per_datagram
        datagram = request("REGISTER", (names, 5000))
        assert size - 20 <= len(datagram) <= size
        datagrams.append((sources[len(datagrams) % len(sources)], datagram))
        sent += len(datagram)
    return datagrams


@pytest.mark.parametrize("size", [1400, 8000])
def test_register_flood_of_2_8_mb_grows_server_memory_under_20_mb(size, tmp_path):
    sources = [f"127.0.0.{host}" for host in range(1, 21)]
    datagrams = register_datagrams(size, 2_800_000, sources)
    log_path = tmp_path / "registry.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", REGISTRY_PROCESS],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    sockets = {source: gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) for source in sources}
    try:
        port = int(proc.stdout.readline())
        for source, sock in sockets.items():
            sock.bind((source, 0))
        probe = sockets[LOCAL]
        before = rss_kib(proc.pid)
        for index, (source, datagram) in enumerate(datagrams):
            sockets[source].sendto(datagram, (LOCAL, port))
            if index % 5 == 4:
                # Paced by a round trip, so the socket buffer never drops any.
                exchange(probe, request("QUERY", ("pace",)), port, timeout=10)
        exchange(probe, request("QUERY", ("pace",)), port, timeout=10)
        grown = rss_kib(proc.pid) - before
    finally:
        for sock in sockets.values():
            sock.close()
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()

    assert grown < 20 * 1024, f"server grew by {grown} KiB"
    expected = "exceeds max_request_size=1500" if size > 1500 else "over max_entries_per_host=256"
    assert expected in log_path.read_text()


# ---------------------------------------------------------------------------
# silent TCP sockets must not keep real requests out
# ---------------------------------------------------------------------------


def open_silent_sockets(port, count):
    silent = [gsocket.create_connection((LOCAL, port), timeout=2) for _ in range(count)]
    # Let the server accept them all before the real requests come.
    gevent.sleep(0)
    return silent


@pytest.mark.parametrize(("max_connections", "silent_count"), [(None, 100), (8, 50)])
def test_tcp_registry_answers_every_discover_while_silent_sockets_are_open(
    start, max_connections, silent_count
):
    options = {} if max_connections is None else {"max_connections": max_connections}
    server = start(TCPRegistryServer, **options)
    server.cmd_register(LOCAL, ("target",), 7000)
    silent = open_silent_sockets(server.port, silent_count)
    try:
        client = TCPRegistryClient(LOCAL, server.port, timeout=2)
        answers = [client.discover("target") for _ in range(5)]
    finally:
        for sock in silent:
            sock.close()
    assert answers == [((LOCAL, 7000),)] * 5


def test_tcp_registry_drops_the_oldest_connection_when_full(start):
    server = start(TCPRegistryServer, max_connections=4)
    silent = open_silent_sockets(server.port, 6)
    try:
        client = TCPRegistryClient(LOCAL, server.port, timeout=2)
        assert client.discover("anything") == ()
        # The three oldest made room (for two silent ones and the client); the
        # three newest silent ones are still open.
        for sock in silent[:3]:
            sock.settimeout(2)
            assert sock.recv(10) == b""
        for sock in silent[3:]:
            sock.settimeout(0.05)
            with pytest.raises(TimeoutError):
                sock.recv(10)
    finally:
        for sock in silent:
            sock.close()


# ---------------------------------------------------------------------------
# one default bind
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [UDPRegistryServer, TCPRegistryServer])
def test_registry_servers_bind_127_0_0_1_by_default(cls):
    assert inspect.signature(cls).parameters["host"].default == LOCAL_HOST == "127.0.0.1"
    server = cls(port=0)
    try:
        assert server.sock.getsockname()[0] == "127.0.0.1"
    finally:
        server.close()
