"""Servers in this process: limits, handshake and idle timeouts, graceful close,
Unix sockets, IPv6, TLS, registration, logging and RPyC's server classes.

Multi-process modes (workers, `ForkingServer`) are tested in tests/test_cli.py
through the ``grpyc`` command: a forked child inherits every socket and
greenlet of its parent, so the clients of a test must not live in the process
that forks.
"""

import errno
import itertools
import logging
import os
import re
import socket
import stat
import threading
import time

import gevent
import gevent.socket as gsocket
import pytest
from gevent.event import Event
from gevent.server import StreamServer

import grpyc.server
from grpyc import factory
from grpyc.authenticators import SSLAuthenticator
from grpyc.registry import UDPRegistryClient, UDPRegistryServer
from grpyc.server import (
    ForkingServer,
    GeventServer,
    OneShotServer,
    Server,
    ThreadedServer,
    ThreadPoolServer,
)
from grpyc.service import Service
from tests.certs import CLIENT_COMMON_NAME, make_pki

LOCAL = "127.0.0.1"
_names = itertools.count()


class WorkService(Service):
    """What the servers under test expose."""

    ALIASES = ("WORK", "JOBS")

    def on_connect(self, conn):
        self.conn = conn

    def exposed_echo(self, value):
        return value

    def exposed_slow(self, seconds, started=None):
        if started is not None:
            started()
        gevent.sleep(seconds)
        return "done"

    def exposed_pid(self):
        return os.getpid()

    def exposed_sockopts(self):
        with socket.fromfd(self.conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
            keepidle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            return (
                bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
                bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)),
                keepidle,
            )

    def exposed_peer_common_name(self):
        subject = self.conn._config["credentials"]["subject"]
        return dict(pair for rdn in subject for pair in rdn)["commonName"]


class LogWatch(logging.Handler):
    """Records a logger's messages; `wait_for` waits for one matching a pattern."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []
        self._waiters = []

    def emit(self, record):
        message = record.getMessage()
        self.messages.append(message)
        for pattern, event in self._waiters:
            if re.search(pattern, message):
                event.set()

    def wait_for(self, pattern, timeout=5.0, count=1):
        event = Event()
        self._waiters.append((pattern, event))
        try:
            while self.count(pattern) < count:
                event.clear()
                assert event.wait(timeout), f"no log line matching {pattern!r}: {self.messages}"
        finally:
            self._waiters.remove((pattern, event))

    def count(self, pattern):
        return sum(1 for message in self.messages if re.search(pattern, message))


@pytest.fixture
def watch():
    return LogWatch()


@pytest.fixture
def make_server(watch):
    """Factory: a listening server on 127.0.0.1, port 0, whose log `watch` sees."""
    made = []

    def make(service=WorkService, cls=Server, listen=True, **kwargs):
        logger = logging.getLogger(f"tests.server.{next(_names)}")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(watch)
        if "socket_path" not in kwargs:
            kwargs.setdefault("hostname", LOCAL)
        server = cls(service, logger=logger, **kwargs)
        made.append(server)
        if listen:
            server.listen()
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def connections():
    """Factory: grpyc client connections to 127.0.0.1, closed after the test."""
    made = []

    def connect(port, **kwargs):
        conn = factory.connect(LOCAL, port, **kwargs)
        made.append(conn)
        return conn

    yield connect
    for conn in made:
        conn.close()


def outcome(func, *args):
    """``func(*args)``, or the exception it raised (a spawned greenlet that
    dies of an exception would be reported to the hub)."""
    try:
        return func(*args)
    except Exception as exc:
        return exc


def wait_closed(conn, timeout=5.0):
    """Block until the peer closes `conn`; returns the seconds it took."""
    started = time.monotonic()
    with gevent.Timeout(timeout):
        conn.serve_all()
    return time.monotonic() - started


# ------------------------------------------------------------ basics
def test_port_is_known_after_binding_port_zero_and_clients_lists_connections(
    make_server, connections, watch
):
    server = make_server()
    assert server.port > 0
    assert server.host == LOCAL
    conn = connections(server.port)
    assert conn.root.echo("hi") == "hi"
    assert len(server.clients) == 1
    conn.close()
    watch.wait_for("connection from .* closed")
    assert server.clients == set()


def test_address_in_use_raises_oserror(make_server):
    server = make_server()
    with pytest.raises(OSError, match="Address already in use") as info:
        Server(WorkService, hostname=LOCAL, port=server.port)
    assert info.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_connections": 0}, "max_connections must be an int >= 1, got 0"),
        ({"workers": 0}, "workers must be an int >= 1, got 0"),
        ({"handshake_timeout": -1}, "handshake_timeout must be a positive number"),
        ({"idle_timeout": 0}, "idle_timeout must be a positive number"),
        ({"grace_period": -1}, "grace_period must be seconds >= 0, got -1"),
        ({"keepalive": 0}, "keepalive must be a bool or seconds >= 1, got 0"),
        ({"socket_path": "/tmp/x.sock", "port": 5}, "socket_path cannot be combined"),
        ({"port": 70000}, "port must be an int in 1..65535, or 0 for any free port, got 70000"),
        ({"port": -1}, "port must be an int in 1..65535, or 0 for any free port, got -1"),
        ({"port": 1.5}, "port must be an int in 1..65535, or 0 for any free port, got 1.5"),
        ({"port": True}, "port must be an int in 1..65535, or 0 for any free port, got True"),
        ({"port": "http"}, "port must be an int in 1..65535, or 0 for any free port, got 'http'"),
        ({"max_connections": True}, "max_connections must be an int >= 1, got True"),
        ({"socket_mode": 0o10000}, "socket_mode must be permission bits"),
        ({"socket_mode": "600"}, "socket_mode must be permission bits"),
    ],
)
def test_bad_arguments_raise_valueerror(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Server(WorkService, **kwargs)


def test_one_process_classes_refuse_workers():
    with pytest.raises(ValueError, match="OneShotServer serves one connection; workers=2"):
        OneShotServer(WorkService, hostname=LOCAL, workers=2)
    with pytest.raises(ValueError, match="ForkingServer forks per connection; workers=2"):
        ForkingServer(WorkService, hostname=LOCAL, workers=2)


def test_rpyc_class_names_serve(make_server, connections):
    assert ThreadedServer is Server
    assert GeventServer is Server
    server = make_server(cls=ThreadPoolServer, nbThreads=5, requestBatchSize=2)
    assert (server.nbthreads, server.request_batch_size) == (5, 2)
    assert connections(server.port).root.echo(7) == 7


def test_a_service_instance_is_shared_by_all_connections(make_server, connections):
    shared = WorkService()
    server = make_server(service=shared)
    first, second = connections(server.port), connections(server.port)
    assert first.root.echo(1) == second.root.echo(1) == 1
    assert shared.conn is not None


# ---------------------------------------------------------- max_connections
def test_connections_beyond_max_connections_are_closed_at_once(make_server, connections, watch):
    server = make_server(max_connections=2)
    first, second = connections(server.port), connections(server.port)
    assert (first.root.echo(1), second.root.echo(2)) == (1, 2)
    extra = connections(server.port)
    with pytest.raises(EOFError):
        extra.root.echo(3)
    watch.wait_for(r"refused connection from 127\.0\.0\.1:\d+: max_connections=2 reached")
    assert len(server.clients) == 2


def test_serving_resumes_when_a_connection_closes(make_server, connections, watch):
    server = make_server(max_connections=1)
    first = connections(server.port)
    assert first.root.echo(1) == 1
    with pytest.raises(EOFError):
        connections(server.port).root.echo(2)
    first.close()
    watch.wait_for("connection from .* closed")
    assert connections(server.port).root.echo(3) == 3


def test_a_silent_client_holds_its_slot_only_until_the_handshake_timeout(
    make_server, connections, watch
):
    server = make_server(max_connections=1, handshake_timeout=0.3)
    silent = gsocket.create_connection((LOCAL, server.port))
    try:
        with pytest.raises(EOFError):
            connections(server.port).root.echo(1)
        watch.wait_for("took longer than handshake_timeout=0.3 s")
        assert connections(server.port).root.echo(2) == 2
    finally:
        silent.close()


# -------------------------------------------------------- handshake_timeout
def _seconds_until_closed(sock, timeout=5.0):
    started = time.monotonic()
    with gevent.Timeout(timeout):
        data = sock.recv(1)
    assert data == b""
    return time.monotonic() - started


def test_handshake_timeout_closes_a_client_that_says_nothing(make_server, watch):
    server = make_server(handshake_timeout=0.3)
    with gsocket.create_connection((LOCAL, server.port)) as sock:
        elapsed = _seconds_until_closed(sock)
    assert 0.25 <= elapsed < 2.0
    watch.wait_for(
        r"closed connection from 127\.0\.0\.1:\d+: waiting for the first frame took "
        r"longer than handshake_timeout=0\.3 s"
    )
    assert server.clients == set()


def test_handshake_timeout_closes_a_client_that_sends_half_a_frame(make_server, watch):
    server = make_server(handshake_timeout=0.3)
    with gsocket.create_connection((LOCAL, server.port)) as sock:
        sock.sendall(b"\x00\x00")
        elapsed = _seconds_until_closed(sock)
    assert 0.25 <= elapsed < 2.0
    watch.wait_for("waiting for the first frame took longer than handshake_timeout")


def test_a_client_past_its_first_frame_outlives_the_handshake_timeout(make_server, connections):
    server = make_server(handshake_timeout=0.2)
    conn = connections(server.port)
    assert conn.root.echo(1) == 1
    gevent.sleep(0.4)  # time passing, not synchronisation: twice the timeout
    assert conn.root.echo(2) == 2


def test_handshake_timeout_covers_the_service_on_connect(make_server, watch):
    class SlowToConnect(Service):
        def on_connect(self, conn):
            gevent.sleep(5)

    server = make_server(service=SlowToConnect, handshake_timeout=0.3)
    with gsocket.create_connection((LOCAL, server.port)) as sock:
        elapsed = _seconds_until_closed(sock)
    assert 0.25 <= elapsed < 2.0
    watch.wait_for("connecting the service took longer than handshake_timeout=0.3 s")


def test_handshake_timeout_bounds_the_tls_handshake(make_server, tmp_path, watch):
    pki = make_pki(tmp_path)
    authenticator = SSLAuthenticator(pki.server_key, pki.server_cert, handshake_timeout=None)
    server = make_server(authenticator=authenticator, handshake_timeout=0.3)
    with gsocket.create_connection((LOCAL, server.port)) as sock:
        elapsed = _seconds_until_closed(sock)
    assert 0.25 <= elapsed < 2.0
    watch.wait_for("authenticating took longer than handshake_timeout=0.3 s")


# ------------------------------------------------------- idle and keepalive
def test_idle_timeout_closes_a_quiet_connection(make_server, connections, watch):
    server = make_server(idle_timeout=0.3)
    assert server.protocol_config["idle_timeout"] == 0.3
    conn = connections(server.port)
    assert conn.root.echo(1) == 1
    elapsed = wait_closed(conn)
    assert 0.2 <= elapsed < 3.0
    watch.wait_for(r"closing after \d\.\d s idle \(idle_timeout=0\.3\)")


def test_accepted_sockets_get_nodelay_and_optional_keepalive(make_server, connections):
    plain = make_server()
    nodelay, keepalive, _ = connections(plain.port).root.sockopts()
    assert (nodelay, keepalive) == (True, False)
    kept = make_server(keepalive=True)
    assert connections(kept.port).root.sockopts() == (True, True, 60)
    tuned = make_server(keepalive=7)
    assert connections(tuned.port).root.sockopts() == (True, True, 7)


# ------------------------------------------------------------ graceful close
def test_close_lets_a_call_in_flight_finish(make_server, connections, watch):
    server = make_server(grace_period=5)
    busy, idle = connections(server.port), connections(server.port)
    assert idle.root.echo(0) == 0
    started = Event()
    call = gevent.spawn(busy.root.slow, 0.5, started.set)
    assert started.wait(5)
    began = time.monotonic()
    server.close()
    took = time.monotonic() - began
    assert call.get(timeout=5) == "done"
    assert 0.3 <= took < 3.0
    wait_closed(busy)
    wait_closed(idle)
    assert watch.count("grace_period=.* is over") == 0


def test_close_cuts_calls_longer_than_the_grace_period(make_server, connections, watch):
    server = make_server(grace_period=0.2)
    conn = connections(server.port)
    started = Event()
    call = gevent.spawn(outcome, conn.root.slow, 30, started.set)
    assert started.wait(5)
    began = time.monotonic()
    server.close()
    assert 0.15 <= time.monotonic() - began < 4.0
    assert isinstance(call.get(timeout=5), EOFError)
    watch.wait_for(r"grace_period=0\.2 s is over: closing 1 connections with calls in flight")


def test_after_close_new_connections_are_refused_and_close_is_idempotent(make_server):
    server = make_server()
    server.close()
    server.close()
    assert server.active is False
    with pytest.raises(ConnectionRefusedError):
        factory.connect(LOCAL, server.port)
    with pytest.raises(ValueError, match=r"server on 127\.0\.0\.1:\d+ is closed"):
        server.listen()


def test_start_blocks_until_close(make_server, connections):
    server = make_server(listen=False)
    runner = gevent.spawn(server.start)
    assert connections(server.port).root.echo(5) == 5
    assert not runner.ready()
    server.close()
    runner.get(timeout=5)


# --------------------------------------------------------------- accepting
def test_accepting_pauses_when_descriptors_run_out(make_server, connections, watch, monkeypatch):
    original = StreamServer.do_read
    failures = []

    def out_of_descriptors_once(self):
        if not failures:
            failures.append(True)
            raise OSError(errno.EMFILE, "Too many open files")
        return original(self)

    monkeypatch.setattr(StreamServer, "do_read", out_of_descriptors_once)
    server = make_server()
    assert connections(server.port).root.echo(1) == 1
    watch.wait_for(r"cannot accept a connection: .*Too many open files; pausing accept")


# ------------------------------------------------------ unix, ipv6, TLS
def test_unix_socket_server(make_server, tmp_path):
    path = str(tmp_path / "grpyc.sock")
    server = make_server(socket_path=path)
    assert (server.host, server.port) == ("", path)
    with factory.unix_connect(path) as conn:
        assert conn.root.echo("unix") == "unix"
    server.close()
    # As in RPyC, the file stays: removing it is the caller's business.
    assert os.path.exists(path)


@pytest.fixture
def umask():
    """Set the process umask for one test; the previous one comes back."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class ModesAtBind:
    """Records the mode of each Unix socket file right after bind() created it."""

    def __init__(self, monkeypatch):
        self.modes = []
        original = socket.socket.bind

        def bind(sock, address):
            original(sock, address)
            if sock.family == socket.AF_UNIX:
                self.modes.append((address, _mode(address), _mode(os.path.dirname(address))))

        monkeypatch.setattr(socket.socket, "bind", bind)


@pytest.mark.parametrize("umask_value", [0o000, 0o022, 0o177])
def test_unix_socket_file_is_0600_from_the_moment_it_exists(
    make_server, tmp_path, umask, monkeypatch, umask_value
):
    umask(umask_value)
    at_bind = ModesAtBind(monkeypatch)
    path = str(tmp_path / "private.sock")
    make_server(socket_path=path)
    assert at_bind.modes == [(path, 0o600 & ~umask_value, _mode(tmp_path))]
    assert _mode(path) == 0o600


def test_unix_socket_mode_is_exactly_socket_mode(make_server, tmp_path, umask):
    umask(0o027)
    path = str(tmp_path / "group.sock")
    server = make_server(socket_path=path, socket_mode=0o660)
    assert server.socket_mode == 0o660
    assert _mode(path) == 0o660
    with factory.unix_connect(path) as conn:
        assert conn.root.echo(1) == 1


def test_unix_socket_without_socket_modes_binds_in_a_private_directory(
    make_server, tmp_path, umask, monkeypatch
):
    # BSD and macOS refuse fchmod() on a socket; the file is then bound in a
    # 0700 directory, given its mode, and linked into place.
    def refuse(fd, mode):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fchmod", refuse)
    linked = []
    original_link = os.link

    def link(source, target):
        linked.append((_mode(source), target))
        original_link(source, target)

    monkeypatch.setattr(os, "link", link)
    umask(0o000)
    at_bind = ModesAtBind(monkeypatch)
    path = str(tmp_path / "bsd.sock")
    server = make_server(socket_path=path)
    [(hidden, hidden_mode, directory_mode)] = at_bind.modes
    assert os.path.dirname(os.path.dirname(hidden)) == str(tmp_path)
    assert directory_mode == 0o700
    assert hidden_mode == 0o777  # reachable by nobody else: its directory is 0700
    assert linked == [(0o600, path)]
    assert _mode(path) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["bsd.sock"]
    with factory.unix_connect(path) as conn:
        assert conn.root.echo(2) == 2
    server.close()
    with pytest.raises(OSError, match="Address already in use") as info:
        Server(WorkService, socket_path=path)
    assert info.value.errno == errno.EADDRINUSE
    assert sorted(os.listdir(tmp_path)) == ["bsd.sock"]


def test_unix_socket_on_an_existing_file_fails_and_leaves_it(tmp_path):
    path = tmp_path / "taken.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="Address already in use") as info:
        Server(WorkService, socket_path=str(path))
    assert info.value.errno == errno.EADDRINUSE
    assert path.read_text() == "not a socket"


def _ipv6_loopback_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback (::1) here")
def test_ipv6_server_binds_the_ipv6_loopback_by_default(make_server, watch):
    server = make_server(hostname=None, ipv6=True)
    assert server.host == "::1"
    with factory.connect("::1", server.port, ipv6=True) as conn:
        assert conn.root.echo(6) == 6
    watch.wait_for(r"connection from \[::1\]:\d+ open")


def test_tls_server_passes_the_client_certificate_to_the_service(make_server, tmp_path, watch):
    pki = make_pki(tmp_path)
    authenticator = SSLAuthenticator(pki.server_key, pki.server_cert, ca_certs=pki.ca_cert)
    server = make_server(authenticator=authenticator)
    with factory.ssl_connect(
        LOCAL,
        server.port,
        keyfile=str(pki.client_key),
        certfile=str(pki.client_cert),
        ca_certs=str(pki.ca_cert),
    ) as conn:
        assert conn.root.peer_common_name() == CLIENT_COMMON_NAME


def test_tls_server_refuses_a_plain_client_and_goes_on(make_server, tmp_path, watch):
    pki = make_pki(tmp_path)
    authenticator = SSLAuthenticator(pki.server_key, pki.server_cert, ca_certs=pki.ca_cert)
    server = make_server(authenticator=authenticator)
    plain = factory.connect(LOCAL, server.port)
    with pytest.raises(EOFError):
        plain.root.echo(1)
    watch.wait_for(r"closed connection from 127\.0\.0\.1:\d+: authentication failed: TLS")
    with factory.ssl_connect(
        LOCAL,
        server.port,
        keyfile=str(pki.client_key),
        certfile=str(pki.client_cert),
        ca_certs=str(pki.ca_cert),
    ) as conn:
        assert conn.root.echo(2) == 2


# ------------------------------------------------------------ registration
class WatchedRegistry(UDPRegistryServer):
    def __init__(self):
        super().__init__(host=LOCAL, port=0)
        self.added, self.removed = Event(), Event()
        self.registrations = 0
        self.enough = Event()

    def cmd_register(self, host, names, port):
        self.registrations += 1
        if self.registrations >= 3:
            self.enough.set()
        return super().cmd_register(host, names, port)

    def on_service_added(self, name, addrinfo):
        self.added.set()

    def on_service_removed(self, name, addrinfo):
        self.removed.set()


@pytest.fixture
def registry():
    server = WatchedRegistry()
    server.start_in_background()
    yield server
    server.close()


def test_auto_register_announces_the_aliases_and_unregisters_on_close(make_server, registry):
    registrar = UDPRegistryClient(ip=LOCAL, port=registry.port)
    server = make_server(registrar=registrar)
    assert server.auto_register is True
    assert registry.added.wait(5)
    assert registrar.discover("WORK") == ((LOCAL, server.port),)
    assert registrar.discover("JOBS") == ((LOCAL, server.port),)
    server.close()
    assert registry.removed.wait(5)
    assert registrar.discover("WORK") == ()


def test_auto_register_repeats_every_reregister_interval(make_server, registry):
    registrar = UDPRegistryClient(ip=LOCAL, port=registry.port)
    registrar.REREGISTER_INTERVAL = 0.05
    make_server(registrar=registrar)
    assert registry.enough.wait(5)


def test_auto_register_follows_rpyc_defaults():
    plain = Server(WorkService, hostname=LOCAL)
    given = Server(WorkService, hostname=LOCAL, registrar=UDPRegistryClient(ip=LOCAL))
    refused = Server(
        WorkService, hostname=LOCAL, registrar=UDPRegistryClient(ip=LOCAL), auto_register=False
    )
    try:
        assert (plain.auto_register, given.auto_register, refused.auto_register) == (
            False,
            True,
            False,
        )
        assert isinstance(plain.registrar, UDPRegistryClient)
    finally:
        for server in (plain, given, refused):
            server.close()


def test_auto_register_needs_tcp(tmp_path):
    with pytest.raises(ValueError, match="auto_register needs a TCP server"):
        Server(WorkService, socket_path=str(tmp_path / "s"), auto_register=True)


# ------------------------------------------------------------------ logging
def test_connections_are_logged_at_info(make_server, caplog, watch):
    server = make_server()
    with caplog.at_level(logging.INFO, logger=server.logger.name):
        conn = factory.connect(LOCAL, server.port)
        local_port = conn._channel.stream.sock.getsockname()[1]
        assert conn.root.echo(1) == 1
        conn.close()
        watch.wait_for("connection from .* closed")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == server.logger.name]
    assert ("INFO", f"connection from 127.0.0.1:{local_port} open") in lines
    assert ("INFO", f"connection from 127.0.0.1:{local_port} closed") in lines


def test_default_logger_is_named_after_service_and_port():
    server = Server(WorkService, hostname=LOCAL)
    try:
        assert server.logger.name == f"grpyc.server.WORK/{server.port}"
        assert server.protocol_config["logger"] is server.logger
    finally:
        server.close()


# ------------------------------------------------------------ other classes
def test_one_shot_server_serves_one_connection_then_stops(make_server, watch):
    server = make_server(cls=OneShotServer, listen=False)
    runner = gevent.spawn(server.start)
    with factory.connect(LOCAL, server.port) as conn:
        assert conn.root.echo(1) == 1
        with pytest.raises(ConnectionRefusedError):
            factory.connect(LOCAL, server.port)
    runner.get(timeout=5)
    watch.wait_for("^closed$")


# ---------------------------------------------------------- other OS threads
def _serve_in_thread(server, how):
    """Start `server` in a new OS thread, RPyC-style; returns the thread once it accepts."""
    if how == "_start_in_thread":
        return server._start_in_thread()
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("how", ["Thread(target=start)", "_start_in_thread"])
@pytest.mark.parametrize("cls", [ThreadedServer, OneShotServer])
def test_close_from_another_thread_20_times_in_a_row(make_server, watch, cls, how):
    for run in range(20):
        server = make_server(cls=cls, listen=False)
        thread = _serve_in_thread(server, how)
        # The socket listens from construction on: no retry needed.
        with factory.connect(LOCAL, server.port) as conn:
            assert conn.root.echo(run) == run
        if cls is ThreadedServer:
            assert server._closed is False
        server.close()
        assert server._closed is True
        thread.join(10)
        assert not thread.is_alive()
    assert watch.count("Traceback|error|LoopExit") == 0


def test_close_from_another_thread_returns_once_the_servers_thread_ended(make_server):
    """A program may exit right after close(). The serving thread destroys its
    gevent hub after the close: finalizing meanwhile crashed the process at
    exit (SIGSEGV, ~1 run in 40 of tests/test_dropin.py)."""
    for run in range(10):
        server = make_server(listen=False)
        thread = server._start_in_thread()
        with factory.connect(LOCAL, server.port) as conn:
            assert conn.root.echo(run) == run
        server.close()
        assert not thread.is_alive()


def test_close_from_another_thread_keeps_the_callers_hub_serving(make_server, connections):
    # The caller's hub holds a client of the server: it must answer the
    # server's CLOSE while close() waits, or close() would take close_timeout.
    server = make_server(listen=False)
    thread = server._start_in_thread()
    client = connections(server.port)
    assert client.root.echo(1) == 1
    began = time.monotonic()
    server.close()
    took = time.monotonic() - began
    thread.join(10)
    assert not thread.is_alive()
    assert client.closed
    assert took < 1.5  # close_timeout is 2 s


def test_close_from_another_thread_lets_a_call_of_the_callers_hub_finish(make_server, connections):
    server = make_server(listen=False, grace_period=10)
    thread = server._start_in_thread()
    client = connections(server.port)
    started = Event()
    call = gevent.spawn(client.root.slow, 0.3, started.set)
    assert started.wait(10)
    server.close()
    assert call.get(timeout=1) == "done"
    thread.join(10)
    assert not thread.is_alive()


def test_close_from_another_thread_fails_when_the_servers_thread_is_blocked(
    make_server, monkeypatch
):
    monkeypatch.setattr(grpyc.server, "CLOSE_WAIT", 0.1)
    monkeypatch.setattr(grpyc.server, "CHILD_STOP_MARGIN", 0.1)
    monkeypatch.setattr(grpyc.server, "_HANDOVER_MARGIN", 0.1)
    server = make_server(listen=False, grace_period=0)
    listening, release = threading.Event(), threading.Event()

    def listen_then_block():
        server.listen()
        listening.set()
        release.wait()  # blocks this thread outside gevent: its hub stops
        server.start()  # runs the hub again: the handed-over close happens

    thread = threading.Thread(target=listen_then_block, daemon=True)
    thread.start()
    assert listening.wait(10)
    with pytest.raises(TimeoutError, match=r"did not close within 0\.4 s: its thread does not"):
        server.close()
    assert server._closed is False
    release.set()
    thread.join(10)
    assert server._closed is True


def test_start_in_thread_on_a_closed_server_raises_in_the_caller(make_server):
    server = make_server(listen=False)
    server.close()
    with pytest.raises(ValueError, match=r"server on 127\.0\.0\.1:\d+ is closed"):
        server._start_in_thread()
    with pytest.raises(ValueError, match=r"server on 127\.0\.0\.1:\d+ is closed"):
        server._listen()


# ------------------------------------------------------------------- drain
class FakeConnection:
    """What `_drain.Drain` uses of a connection: wait_idle() and closed."""

    def __init__(self, busy=False):
        self.idle = Event()
        if not busy:
            self.idle.set()
        self.ended = Event()
        self.closed = False

    def wait_idle(self, timeout=None):
        return self.idle.wait(timeout)

    def close(self):
        self.closed = True
        self.ended.set()


def _drain(grace_period, hurry=None):
    from grpyc._drain import Drain

    closed_order = []

    def close(conn):
        closed_order.append(conn)
        conn.close()

    logger = logging.getLogger("tests.server.drain")
    return Drain(grace_period, hurry or Event(), close, logger), closed_order


def test_drain_closes_idle_connections_at_once_and_busy_ones_when_idle(caplog):
    drain, closed = _drain(grace_period=10)
    idle, busy = FakeConnection(), FakeConnection(busy=True)
    gevent.spawn_later(0.1, busy.idle.set)
    gevent.spawn_later(0.15, busy.ended.set)  # its client closes during the linger
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tests.server.drain"):
        drain.run([(idle, idle.ended), (busy, busy.ended)])
    took = time.monotonic() - began
    assert closed == [idle, busy]
    assert 0.1 <= took < 0.45  # no linger past the client's own close, no polling
    assert caplog.records == []


def test_drain_gives_a_connection_that_just_went_idle_the_linger(caplog):
    from grpyc._drain import LINGER

    drain, closed = _drain(grace_period=10)
    busy = FakeConnection(busy=True)
    gevent.spawn_later(0.05, busy.idle.set)
    began = time.monotonic()
    drain.run([(busy, busy.ended)])
    took = time.monotonic() - began
    assert closed == [busy]
    assert 0.05 + LINGER <= took < 0.05 + LINGER + 0.5


def test_drain_takes_connections_set_up_while_it_runs():
    drain, closed = _drain(grace_period=10)
    busy, late = FakeConnection(busy=True), FakeConnection()
    gevent.spawn_later(0.05, drain.add, late, late.ended)
    gevent.spawn_later(0.1, busy.ended.set)
    gevent.spawn_later(0.1, busy.idle.set)
    drain.run([(busy, busy.ended)])
    assert closed == [late, busy]


def test_drain_cuts_connections_busy_past_the_grace_period(caplog):
    drain, closed = _drain(grace_period=0.2)
    stuck, idle = FakeConnection(busy=True), FakeConnection()
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tests.server.drain"):
        drain.run([(stuck, stuck.ended), (idle, idle.ended)])
    assert 0.2 <= time.monotonic() - began < 1.0
    assert set(closed) == {stuck, idle}
    assert [r.getMessage() for r in caplog.records] == [
        "grace_period=0.2 s is over: closing 1 connections with calls in flight"
    ]


def test_drain_hurry_skips_the_rest_of_the_grace_period(caplog):
    hurry = Event()
    drain, closed = _drain(grace_period=30, hurry=hurry)
    stuck = FakeConnection(busy=True)
    gevent.spawn_later(0.1, hurry.set)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tests.server.drain"):
        drain.run([(stuck, stuck.ended)])
    assert time.monotonic() - began < 1.0
    assert closed == [stuck]
    assert len(caplog.records) == 1
