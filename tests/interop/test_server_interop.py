"""grpyc servers and the ``grpyc`` command with stock rpyc 6.0.2 peers, on loopback.

Stock clients block on plain sockets, so they run in OS threads of the hub's
threadpool (`in_os_thread`) while the hub keeps serving; stock registries run
in a subprocess that exits when its stdin closes.
"""

import errno
import gc
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import warnings

import gevent
import pytest
import rpyc
import rpyc.utils.factory
from gevent.event import Event
from gevent.socket import wait_read
from rpyc.utils import registry as stock_registry
from rpyc.utils import server as stock_server

import grpyc.server
from grpyc import factory
from grpyc.authenticators import SSLAuthenticator
from grpyc.registry import TCPRegistryClient
from grpyc.server import Server
from grpyc.service import Service as GrpycService
from tests.certs import CLIENT_COMMON_NAME, make_pki
from tests.interop.conftest import ROOT, in_os_thread
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


# ------------------------------------------ RPyC test-fixture internals
# Stock's ThreadPoolServer names its polling thread with Thread.setName().
STOCK_SETNAME = pytest.mark.filterwarnings("ignore:setName:DeprecationWarning")


def _service(lib):
    """The same service for either library: echo, and what a connection logs to."""
    base = rpyc.Service if lib == "rpyc" else GrpycService

    class Probe(base):
        def on_connect(self, conn):
            self._conn = conn

        def exposed_echo(self, value):
            return value

        def exposed_logger_name(self):
            return getattr(self._conn._config["logger"], "name", None)

    return Probe


def _stock_session(port, values):
    conn = rpyc.connect(LOCAL, port)
    try:
        return [conn.root.echo(value) for value in values]
    finally:
        conn.close()


def _fixture_run(cls, service):
    """What RPyC users' test fixtures do, run in this (plain, blocking) thread."""
    server = cls(service, hostname=LOCAL, port=0)
    closed_before = server._closed
    thread = server._start_in_thread()
    seen = {
        "thread": (type(thread).__name__, thread.daemon, thread.is_alive()),
        "active": server.active,
        "closed before": closed_before,
        "calls": _stock_session(server.port, [1, "two", (3,)]),
    }
    server.close()
    thread.join(10)
    seen["closed after"] = server._closed
    seen["thread after"] = thread.is_alive()
    return seen


@STOCK_SETNAME
@pytest.mark.parametrize("kind", ["ThreadedServer", "OneShotServer", "ThreadPoolServer"])
def test_start_in_thread_fixture_behaves_as_with_stock_servers(kind):
    stock = _fixture_run(getattr(stock_server, kind), _service("rpyc"))
    ours = _fixture_run(getattr(grpyc.server, kind), _service("grpyc"))
    assert ours == stock
    assert ours == {
        "thread": ("Thread", True, True),
        "active": True,
        "closed before": False,
        "calls": [1, "two", (3,)],
        "closed after": True,
        "thread after": False,
    }


PLAIN_PROGRAM = """
import sys

lib, kind, patched = sys.argv[1], sys.argv[2], sys.argv[3] == "patched"
if patched:
    from gevent import monkey

    monkey.patch_all()
import json, threading, time
import rpyc

if lib == "grpyc":
    import grpyc.server as servers
    from grpyc.service import Service
else:
    import rpyc.utils.server as servers
    from rpyc import Service


class Echo(Service):
    def exposed_echo(self, value):
        return value


server = getattr(servers, kind)(Echo, hostname="127.0.0.1", port=0)
thread = server._start_in_thread()
clients = 1 if kind == "OneShotServer" else 8
results, lock, done = {}, threading.Lock(), threading.Event()


def client(number):
    conn = rpyc.connect("127.0.0.1", server.port)
    try:
        answers = [conn.root.echo(number * 10 + k) for k in range(3)]
    finally:
        conn.close()
    with lock:
        results[number] = answers
        if len(results) == clients:
            done.set()


threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
for each in threads:
    each.start()
time.sleep(0.3)  # the main thread blocks in plain time.sleep while clients call
all_done = done.wait(20)  # ... and in threading.Event.wait
for each in threads:
    each.join(10)
server.close()
thread.join(10)
print(json.dumps({
    "all done": all_done,
    "results": sorted(results.items()),
    "closed": server._closed,
    "thread alive": thread.is_alive(),
}))
"""


@pytest.mark.parametrize("patched", ["plain", "patched"])
@pytest.mark.parametrize("kind", ["ThreadedServer", "ThreadPoolServer", "OneShotServer"])
def test_start_in_thread_serves_a_plain_program_like_stock(kind, patched):
    def run(lib):
        done = subprocess.run(
            [sys.executable, "-c", PLAIN_PROGRAM, lib, kind, patched],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return json.loads(done.stdout)

    clients = 1 if kind == "OneShotServer" else 8
    expected = {
        "all done": True,
        "results": [[n, [n * 10, n * 10 + 1, n * 10 + 2]] for n in range(clients)],
        "closed": True,
        "thread alive": False,
    }
    assert run("rpyc") == expected
    assert run("grpyc") == expected


PLAIN_CLOSE_PROGRAM = """
import json, sys, threading
import rpyc

lib, kind = sys.argv[1], sys.argv[2]
if lib == "grpyc":
    import grpyc.server as servers
    from grpyc.service import Service
else:
    import rpyc.utils.server as servers
    from rpyc import Service


class Echo(Service):
    def exposed_echo(self, value):
        return value


errors = []
threading.excepthook = lambda args: errors.append(repr(args.exc_value))
closed = 0
for run in range(20):
    server = getattr(servers, kind)(Echo, hostname="127.0.0.1", port=0)
    server._listen()
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    conn = rpyc.connect("127.0.0.1", server.port)
    assert conn.root.echo(run) == run
    conn.close()
    server.close()  # from the main thread, which runs no gevent hub
    thread.join(10)
    closed += server._closed and not thread.is_alive()
print(json.dumps({"closed": closed, "errors": errors}))
"""


@pytest.mark.parametrize("kind", ["ThreadedServer", "OneShotServer"])
def test_close_from_the_main_thread_of_a_plain_program_20_times_like_stock(kind):
    def run(lib):
        done = subprocess.run(
            [sys.executable, "-c", PLAIN_CLOSE_PROGRAM, lib, kind],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return json.loads(done.stdout)

    assert run("rpyc") == run("grpyc") == {"closed": 20, "errors": []}


def _listen_then_start(cls, service, start_in_background):
    server = cls(service, hostname=LOCAL, port=0)
    try:
        before = server.active
        server._listen()
        early = socket.create_connection((LOCAL, server.port), timeout=5)  # in the backlog
        early.close()
        runner = start_in_background(server)
        calls = in_os_thread(_stock_session, server.port, [5])
    finally:
        server.close()
    return before, calls, server._closed, runner


def test_listen_then_start_as_with_stock_servers():
    def stock_start(server):
        thread = threading.Thread(target=server.start, daemon=True)
        thread.start()
        return thread

    before, calls, closed, thread = _listen_then_start(
        stock_server.ThreadedServer, _service("rpyc"), stock_start
    )
    thread.join(10)
    # RPyC's own tests: GeventServer(...)._listen(), then gevent.spawn(server.start).
    ours = _listen_then_start(
        grpyc.server.GeventServer, _service("grpyc"), lambda server: gevent.spawn(server.start)
    )
    ours[3].get(timeout=10)
    assert (before, calls, closed) == ours[:3] == (False, [5], True)


# ----------------------------------------------------------- Unix sockets
def _unix_fixture(cls, service, path):
    """A fixture that serves on a Unix socket, then removes the path after close()."""
    server = cls(service, socket_path=path)
    thread = server._start_in_thread()

    def session():
        conn = rpyc.utils.factory.unix_connect(path)
        try:
            return conn.root.echo("unix")
        finally:
            conn.close()

    try:
        answer = in_os_thread(session)
        with warnings.catch_warnings():
            # Stock leaves the socket of a failed bind for the garbage collector.
            warnings.simplefilter("ignore", ResourceWarning)
            with pytest.raises(OSError, match="Address already in use") as taken:
                cls(service, socket_path=path)
            gc.collect()
    finally:
        server.close()
    thread.join(10)
    exists_after_close = os.path.exists(path)
    os.remove(path)  # the fixture's cleanup: must not fail
    return answer, taken.value.errno, exists_after_close, server.port


def test_unix_socket_file_handling_matches_stock(tmp_path):
    stock = _unix_fixture(stock_server.ThreadedServer, _service("rpyc"), str(tmp_path / "r.sock"))
    ours = _unix_fixture(grpyc.server.ThreadedServer, _service("grpyc"), str(tmp_path / "g.sock"))
    assert stock[:3] == ours[:3] == ("unix", errno.EADDRINUSE, True)
    assert (stock[3], ours[3]) == (str(tmp_path / "r.sock"), str(tmp_path / "g.sock"))


def test_unix_socket_mode_unlike_stock_is_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        stock = stock_server.ThreadedServer(_service("rpyc"), socket_path=str(tmp_path / "r"))
        ours = grpyc.server.ThreadedServer(_service("grpyc"), socket_path=str(tmp_path / "g"))
    finally:
        os.umask(previous)
    stock.close()
    ours.close()
    modes = [stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in ("r", "g")]
    assert modes == [0o755, 0o600]  # stock: whatever the umask leaves


# ------------------------------------------------------------------ logger
def _logger_names(cls, service, protocol_config):
    given = dict(protocol_config)
    server = cls(service, hostname=LOCAL, port=0, protocol_config=given)
    thread = server._start_in_thread()

    def session():
        conn = rpyc.connect(LOCAL, server.port)
        try:
            return conn.root.logger_name()
        finally:
            conn.close()

    try:
        in_connection = in_os_thread(session)
    finally:
        server.close()
    thread.join(10)
    config_logger = server.protocol_config["logger"]
    return {
        "config logger": "server's" if config_logger is server.logger else config_logger,
        "connection logger": "server's" if in_connection == server.logger.name else in_connection,
    }


@STOCK_SETNAME
@pytest.mark.parametrize("kind", ["ThreadedServer", "OneShotServer", "ThreadPoolServer"])
@pytest.mark.parametrize("given", ["none", "a logger", "None"])
def test_connection_logger_follows_stock_rules(kind, given):
    mine = logging.getLogger("tests.interop.mine")
    config = {"none": {}, "a logger": {"logger": mine}, "None": {"logger": None}}[given]
    stock = _logger_names(getattr(stock_server, kind), _service("rpyc"), config)
    ours = _logger_names(getattr(grpyc.server, kind), _service("grpyc"), config)
    assert ours == stock
    # protocol_config keeps a logger given (even None), else gets the server's ...
    assert ours["config logger"] == {"none": "server's", "a logger": mine, "None": None}[given]
    # ... and connections log to the server's logger, except ThreadPoolServer's.
    if kind != "ThreadPoolServer" or given == "none":
        assert ours["connection logger"] == "server's"
    elif given == "a logger":
        assert ours["connection logger"] == "tests.interop.mine"


# ------------------------------------------------------------ ports, close
def test_port_as_a_decimal_string_binds_as_in_stock():
    stock = stock_server.ThreadedServer(_service("rpyc"), hostname=LOCAL, port="0")
    ours = grpyc.server.ThreadedServer(_service("grpyc"), hostname=LOCAL, port="0")
    try:
        assert isinstance(stock.port, int) and stock.port > 0
        assert isinstance(ours.port, int) and ours.port > 0
    finally:
        stock.close()
        ours.close()


def test_port_out_of_range_is_refused_where_stock_wraps_it():
    stock = stock_server.ThreadedServer(_service("rpyc"), hostname=LOCAL, port=65536)
    try:
        assert stock.port != 65536  # stock binds 65536 % 65536: any free port
    finally:
        stock.close()
    with pytest.raises(ValueError, match=r"port must be an int in 1\.\.65535, or 0 for any"):
        grpyc.server.ThreadedServer(_service("grpyc"), hostname=LOCAL, port=65536)


def test_stock_client_closing_after_its_last_call_during_close_does_not_fail():
    # A stock client that handles the server's CLOSE while closing itself
    # raises AttributeError in close(): the server lets it close first.
    started = threading.Event()

    class Slow(_service("grpyc")):
        def exposed_slow(self, seconds):
            started.set()
            gevent.sleep(seconds)
            return "done"

    for _ in range(5):
        started.clear()
        server = grpyc.server.ThreadedServer(Slow, hostname=LOCAL, port=0, grace_period=10)
        thread = server._start_in_thread()

        def session(port=server.port):
            conn = rpyc.connect(LOCAL, port)
            try:
                return conn.root.slow(0.2)
            finally:
                conn.close()

        call = gevent.get_hub().threadpool.spawn(session)
        assert started.wait(10)  # this thread's hub has nothing to do meanwhile
        server.close()
        assert call.get(timeout=10) == "done"
        thread.join(10)
        assert not thread.is_alive()
