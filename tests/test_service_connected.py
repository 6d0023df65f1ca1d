"""grpyc.service over real connections: grpyc to grpyc, and grpyc to a stock rpyc peer.

The stock peer runs in a subprocess (a stock ``OneShotServer``) in which
``grpyc`` cannot be imported, so it is plain RPyC 6.0.2.
"""

import os
import subprocess
import sys
import textwrap

import gevent.event
import pytest

import grpyc.factory as factory
import grpyc.protocol as protocol
from grpyc.service import (
    ClassicClient,
    ClassicService,
    MasterService,
    Service,
    SlaveService,
    VoidService,
)

STOCK_SERVER = textwrap.dedent(
    """
    import sys
    sys.modules["grpyc"] = None  # this peer is plain stock rpyc
    import rpyc
    from rpyc.utils.server import OneShotServer
    server = OneShotServer(
        getattr(rpyc, sys.argv[1]), hostname="127.0.0.1", port=0, auto_register=False
    )
    server._listen()  # listening before the port is announced
    print(server.port, flush=True)
    server.start()
    """
)


class CalcService(Service):
    def exposed_add(self, x, y):
        return x + y


class LifecycleService(VoidService):
    def __init__(self):
        self.connected = []
        self.disconnected = []
        self.disconnected_event = gevent.event.Event()

    def on_connect(self, conn):
        self.connected.append(conn)

    def on_disconnect(self, conn):
        self.disconnected.append(conn)
        self.disconnected_event.set()


def square(x):
    return x * x


@pytest.fixture
def stock_server():
    """Start a stock rpyc server of the named service; yield its port."""
    processes = []

    def start(service_name):
        process = subprocess.Popen(
            [sys.executable, "-c", STOCK_SERVER, service_name],
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(sys.executable),
        )
        processes.append(process)
        return int(process.stdout.readline())

    yield start
    for process in processes:
        try:
            process.wait(timeout=10)
        finally:
            process.kill()
            process.stdout.close()


def test_default_protocol_is_grpyc_connection():
    assert Service._protocol is protocol.Connection
    assert SlaveService()._protocol is protocol.Connection


def test_exposed_names_resolve_over_a_connection():
    conn = factory.connect_thread(remote_service=CalcService)
    try:
        assert conn.root.add(2, 3) == 5
        assert conn.root.get_service_name() == "CALC"
        assert conn.root.get_service_aliases() == ("CALC",)
        with pytest.raises(AttributeError, match="on_connect"):
            conn.root.on_connect
        with pytest.raises(AttributeError, match="access denied"):
            conn.root.add = None
        with pytest.raises(AttributeError, match="access denied"):
            del conn.root.add
    finally:
        conn.close()


def test_on_connect_and_on_disconnect_run_once_with_the_connection():
    service = LifecycleService()
    conn = factory.connect_thread(service=service)
    assert service.connected == [conn]
    assert service.disconnected == []
    conn.close()
    assert service.disconnected_event.wait(timeout=5)
    assert service.disconnected == [conn]


def test_classic_client_controls_a_grpyc_slave():
    conn = factory.connect_thread(service=ClassicClient, remote_service=SlaveService)
    try:
        assert conn.modules.sys.platform == sys.platform
        assert "json" in conn.modules
        assert "grpyc_no_such_module" not in conn.modules
        conn.execute("x = 5")
        assert conn.eval("x + 1") == 6
        assert conn.namespace["x"] == 5
        assert conn.builtins.len((1, 2)) == 2
        assert conn.builtin is conn.builtins
        remote_square = conn.teleport(square)
        assert remote_square(7) == 49
        assert conn.eval("square(8)") == 64
        with pytest.raises(AttributeError, match="access denied"):
            conn.root.namespace = {}
    finally:
        conn.close()


def test_client_config_stays_strict_with_classic_client():
    conn = factory.connect_thread(service=ClassicClient, remote_service=SlaveService)
    try:
        assert conn._config["allow_all_attrs"] is False
        assert conn._config["allow_pickle"] is False
        assert conn.root.getconn() is not None
    finally:
        conn.close()


def test_classic_client_controls_a_stock_slave(stock_server):
    port = stock_server("SlaveService")
    conn = factory.connect("127.0.0.1", port, service=ClassicClient)
    try:
        assert conn.modules.sys.platform == sys.platform
        assert conn.modules.os.getpid() != os.getpid()
        conn.execute("y = 20")
        assert conn.eval("y + 22") == 42
        with pytest.raises(ImportError):
            conn.modules["grpyc"]
        # grpyc is not importable there, so the import falls back to RPyC's.
        remote_square = conn.teleport(square)
        assert remote_square(9) == 81
        assert conn.eval("square(3)") == 9
    finally:
        conn.close()


def test_master_service_against_a_stock_slave(stock_server):
    port = stock_server("SlaveService")
    conn = factory.connect("127.0.0.1", port, service=MasterService)
    try:
        assert conn.eval("6 * 7") == 42
        assert conn._config["allow_all_attrs"] is False
    finally:
        conn.close()


def test_stock_classic_peer_controls_a_grpyc_classic_service(stock_server):
    port = stock_server("ClassicService")
    service = ClassicService()
    conn = factory.connect("127.0.0.1", port, service=service)
    try:
        assert conn._config["allow_all_attrs"] is True
        assert service.getconn() is conn
        stock_side = conn.root.getconn()
        # The stock peer's ModuleNamespace imports here, through our Slave.
        assert stock_side.modules.sys is sys
        assert stock_side.eval("2 ** 10") == 1024
        stock_side.execute("z = 'set by the stock peer'")
        assert service.namespace["z"] == "set by the stock peer"
    finally:
        conn.close()
