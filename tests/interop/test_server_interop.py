"""grpyc servers and the ``grpyc`` command with stock rpyc 6.0.2 peers, on loopback.

Stock clients block on plain sockets, so they run in OS threads of the hub's
threadpool (`in_os_thread`) while the hub keeps serving; stock registries run
in a subprocess that exits when its stdin closes.
"""

import os
import signal
import subprocess
import sys

import gevent
import pytest
import rpyc
from gevent.event import Event
from gevent.socket import wait_read
from rpyc.utils import registry as stock_registry

from grpyc import factory
from grpyc.authenticators import SSLAuthenticator
from grpyc.registry import TCPRegistryClient
from grpyc.server import Server
from tests.certs import CLIENT_COMMON_NAME, make_pki
from tests.interop.conftest import in_os_thread
from tests.test_cli import SERVICE_MODULE, Command
from tests.test_server import WorkService

LOCAL = "127.0.0.1"

STOCK_TCP_REGISTRY = """
import os, sys, threading
from rpyc.utils.registry import TCPRegistryServer

server = TCPRegistryServer(host="127.0.0.1", port=0, allow_listing=True)
threading.Thread(target=server.start, daemon=True).start()
print(server.port, flush=True)
threading.Timer(120, os._exit, (0,)).start()
sys.stdin.read()
os._exit(0)
"""


@pytest.fixture
def command():
    started = []

    def start(*args, **kwargs):
        cmd = Command(*args, **kwargs)
        started.append(cmd)
        return cmd

    yield start
    for cmd in started:
        cmd.stop()


@pytest.fixture
def service_dir(tmp_path):
    (tmp_path / "greeter_mod.py").write_text(SERVICE_MODULE)
    return tmp_path


@pytest.fixture
def server():
    """Factory: a grpyc Server (WorkService) on 127.0.0.1, listening."""
    made = []

    def make(**kwargs):
        made.append(Server(WorkService, hostname=LOCAL, port=0, **kwargs))
        made[-1].listen()
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture
def signal_pipe():
    """A pipe an OS thread writes to and a greenlet waits on."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


# ------------------------------------------------------------ the command
def test_stock_classic_client_against_grpyc_classic_command(command):
    cmd = command("classic", "--port", "0")
    port = cmd.port()

    def session():
        conn = rpyc.classic.connect(LOCAL, port)
        try:
            return conn.modules.os.getpid(), conn.eval("2 ** 10")
        finally:
            conn.close()

    assert in_os_thread(session) == (cmd.proc.pid, 1024)


def test_sigterm_loses_no_call_of_a_stock_client(command, signal_pipe):
    cmd = command("classic", "--port", "0")
    port = cmd.port()
    read_end, write_end = signal_pipe

    def session():
        conn = rpyc.classic.connect(LOCAL, port)
        conn.execute(
            "import gevent\n"
            "def slow(started, seconds):\n"
            "    started()\n"
            "    gevent.sleep(seconds)\n"
            "    return 'done'\n"
        )
        try:
            return conn.namespace["slow"](lambda: os.write(write_end, b"!"), 0.5)
        finally:
            conn.close()

    call = gevent.get_hub().threadpool.spawn(session)
    wait_read(read_end, timeout=10)
    cmd.signal(signal.SIGTERM)
    assert call.get(timeout=10) == "done"
    assert cmd.wait() == 0


def test_stock_clients_reach_both_workers(command, service_dir):
    cmd = command(
        "serve",
        "greeter_mod:GreeterService",
        "--port",
        "0",
        "--workers",
        "2",
        pythonpath=[service_dir],
    )
    port = cmd.port()

    def pids():
        seen = set()
        for _ in range(60):
            conn = rpyc.connect(LOCAL, port)
            try:
                assert conn.root.greet("rpyc") == "hello rpyc"
                seen.add(conn.root.pid())
            finally:
                conn.close()
            if len(seen) == 2:
                break
        return seen

    seen = in_os_thread(pids)
    assert len(seen) == 2
    assert cmd.proc.pid not in seen


def test_stock_registry_client_against_grpyc_registry_command(command):
    cmd = command("registry", "--mode", "UDP", "--port", "0", "--allow-listing")
    port = cmd.port()

    def session():
        client = stock_registry.UDPRegistryClient(ip=LOCAL, port=port, timeout=2)
        registered = client.register(("STOCKSVC",), 18123)
        return registered, client.discover("STOCKSVC"), client.list()

    assert in_os_thread(session) == (True, ((LOCAL, 18123),), ("STOCKSVC",))


# ----------------------------------------------------- servers in process
def test_stock_client_beyond_max_connections_sees_the_connection_end(server):
    grpyc_server = server(max_connections=1)
    with factory.connect(LOCAL, grpyc_server.port) as holder:
        assert holder.root.echo(1) == 1

        def refused():
            conn = rpyc.connect(LOCAL, grpyc_server.port)
            try:
                conn.root.echo(2)
            except EOFError as exc:
                return type(exc).__name__
            finally:
                conn.close()
            return "served"

        assert in_os_thread(refused) == "EOFError"


def test_stock_tls_client_with_a_client_certificate(server, tmp_path):
    pki = make_pki(tmp_path)
    authenticator = SSLAuthenticator(pki.server_key, pki.server_cert, ca_certs=pki.ca_cert)
    grpyc_server = server(authenticator=authenticator)

    def session():
        conn = rpyc.ssl_connect(
            LOCAL,
            grpyc_server.port,
            keyfile=str(pki.client_key),
            certfile=str(pki.client_cert),
            ca_certs=str(pki.ca_cert),
        )
        try:
            return conn.root.peer_common_name()
        finally:
            conn.close()

    assert in_os_thread(session) == CLIENT_COMMON_NAME


class AcknowledgedRegistrar(TCPRegistryClient):
    """A TCP registrar that tells when a registration was acknowledged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.acknowledged = Event()

    def register(self, aliases, port, interface=""):
        done = super().register(aliases, port, interface)
        if done:
            self.acknowledged.set()
        return done


@pytest.fixture
def stock_tcp_registry():
    proc = subprocess.Popen(
        [sys.executable, "-c", STOCK_TCP_REGISTRY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        line = proc.stdout.readline()
        assert line, "stock registry did not start"
        yield int(line)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_grpyc_server_auto_registers_with_a_stock_registry(server, stock_tcp_registry):
    registrar = AcknowledgedRegistrar(LOCAL, port=stock_tcp_registry)
    grpyc_server = server(registrar=registrar)
    assert registrar.acknowledged.wait(10)
    stock_client = stock_registry.TCPRegistryClient(LOCAL, port=stock_tcp_registry, timeout=2)
    assert in_os_thread(stock_client.discover, "WORK") == ((LOCAL, grpyc_server.port),)
    grpyc_server.close()
    assert in_os_thread(stock_client.discover, "WORK") == ()
