"""Zero-deploy and ssh_connect against a real sshd on 127.0.0.1 (tests/sshd.py).

The "remote machine" is this machine, reached through our own sshd with a
key made at test time, by plumbum's SshMachine (OpenSSH client) and its
ParamikoMachine. The deployed server runs this venv's Python, which has
gevent. Stock rpyc 6.0.2's zerodeploy and ssh_connect run the same probes
where they apply.
"""

import contextlib
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest
import rpyc.utils.classic as stock_classic
import rpyc.utils.factory as stock_factory
import rpyc.utils.zerodeploy as stock_zerodeploy
from plumbum import ProcessExecutionError
from plumbum.machines.remote import BaseRemoteMachine, ClosedRemoteMachine

from grpyc import classic, factory
from grpyc.server import Server
from grpyc.service import Service
from grpyc.zerodeploy import SERVER_SCRIPT, DeployedServer, MultiServerDeployment, _class_path
from tests.services import TestService
from tests.sshd import start_sshd

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["ssh", "paramiko"]

# Makes the deployed service answer plain (non-classic) calls too; a classic
# service exposes every attribute, so no exposed_ prefix.
ECHO_SETUP = """
class EchoSlave(ServiceCls):
    def echo(self, value):
        return value

    def apply(self, func, value):
        return func(value)

    def on_connect(self, conn):
        super().on_connect(conn)
        self._peer = conn

    def ask_peer(self, value):
        return self._peer.root.triple(value)

ServiceCls = EchoSlave
"""


def stubborn_setup(seconds):
    """extra_setup: the server's close() takes ``seconds`` before it returns."""
    return (
        "import gevent\n"
        "class Stubborn(ServerCls):\n"
        "    def close(self):\n"
        f"        gevent.sleep({seconds})\n"
        "        super().close()\n"
        "ServerCls = Stubborn\n"
    )


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def make_machine(sshd, kind):
    return sshd.ssh_machine() if kind == "ssh" else sshd.paramiko_machine()


@pytest.fixture(params=KINDS)
def machine(request, sshd):
    made = make_machine(sshd, request.param)
    yield made
    made.close()


@pytest.fixture
def remote_dirs(monkeypatch):
    """The remote temporary directories made during the test, as strings."""
    made = []
    original = BaseRemoteMachine.tempdir

    @contextlib.contextmanager
    def recording(self):
        with original(self) as path:
            made.append(str(path))
            yield path

    monkeypatch.setattr(BaseRemoteMachine, "tempdir", recording)
    return made


def is_running(pid):
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until(predicate, timeout=5.0):
    """Bounded wait for a condition no event reports (another process's state)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.02)
    return True


def processes_mentioning(text):
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes() and is_running(entry.name):
                    found.append(int(entry.name))
    return found


def assert_machine_closed(machine):
    with pytest.raises(ClosedRemoteMachine), machine.tempdir():
        pass


def deploy(machine, **options):
    options.setdefault("python_executable", sys.executable)
    return DeployedServer(machine, **options)


@pytest.fixture(scope="module", params=KINDS)
def deployed(request, sshd):
    """One deployment per machine kind, shared by the tests that only use it."""
    server = deploy(make_machine(sshd, request.param), extra_setup=ECHO_SETUP)
    yield server
    server.close()


# ---------------------------------------------------------------- no sshd
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rpyc.utils.server.ThreadedServer", ("grpyc.server", "ThreadedServer")),
        ("rpyc.utils.server.ForkingServer", ("grpyc.server", "ForkingServer")),
        ("grpyc.server.ThreadedServer", ("grpyc.server", "ThreadedServer")),
        ("rpyc.core.service.SlaveService", ("grpyc.service", "SlaveService")),
        ("rpyc.SlaveService", ("grpyc", "SlaveService")),
        ("mypkg.servers.MyServer", ("mypkg.servers", "MyServer")),
        (Server, ("grpyc.server", "Server")),
    ],
)
def test_class_names_of_rpyc_mean_grpycs(name, expected):
    assert _class_path(name, "server_class") == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rpyc.utils.server.NoSuch", r"server_class=.*grpyc\.server has no class 'NoSuch'"),
        ("grpyc.server.DEFAULT_MAX_CONNECTIONS", r"grpyc\.server has no class"),
        ("ThreadedServer", r"server_class must be a dotted name.*'ThreadedServer'"),
    ],
)
def test_unknown_server_class_is_refused_before_anything_is_deployed(name, message):
    untouched = object()  # any use of the machine would raise AttributeError
    with pytest.raises(ValueError, match=message):
        DeployedServer(untouched, server_class=name)


def test_zerodeploy_imports_without_plumbum_and_names_the_extra_at_use():
    code = (
        "import sys\n"
        "sys.modules['plumbum'] = None\n"
        "import grpyc.zerodeploy as z\n"
        "try:\n"
        "    z.DeployedServer(object())\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "grpyc.zerodeploy needs plumbum for its SSH tunnel; install it with "
        "pip install 'grpyc-gevent[ssh]' (or pip install plumbum)"
    )


def parameter_names(func):
    return [name for name in inspect.signature(func).parameters if name != "self"]


def test_api_names_and_arguments_match_stock():
    ours, stock = DeployedServer, stock_zerodeploy.DeployedServer
    stock_init = parameter_names(stock.__init__)
    assert parameter_names(ours.__init__)[: len(stock_init)] == stock_init
    assert parameter_names(ours.__init__)[len(stock_init) :] == ["startup_timeout"]
    for method in ("connect", "classic_connect", "close"):
        assert len(parameter_names(getattr(ours, method))) == len(
            parameter_names(getattr(stock, method))
        ), method
    assert parameter_names(ours.connect) == parameter_names(stock.connect) == ["service", "config"]
    assert inspect.signature(ours.close).parameters["timeout"].default is None
    assert inspect.signature(stock.close).parameters["timeout"].default is None
    assert parameter_names(MultiServerDeployment.__init__)[:2] == parameter_names(
        stock_zerodeploy.MultiServerDeployment.__init__
    )
    for method in ("connect_all", "classic_connect_all", "__iter__", "__len__", "__getitem__"):
        assert parameter_names(getattr(MultiServerDeployment, method)) == parameter_names(
            getattr(stock_zerodeploy.MultiServerDeployment, method)
        ), method
    assert parameter_names(factory.ssh_connect) == parameter_names(stock_factory.ssh_connect)
    assert parameter_names(factory.ssh_connect) == [
        "remote_machine",
        "remote_port",
        "service",
        "config",
    ]
    assert parameter_names(classic.ssh_connect) == parameter_names(stock_classic.ssh_connect)


# ------------------------------------------------------- a live deployment
def test_deployed_server_runs_code_in_its_own_process_in_the_remote_dir(deployed):
    conn = deployed.classic_connect()
    try:
        remote_pid = conn.modules.os.getpid()
        remote_dir = conn.modules.os.getcwd()
        grpyc_file = conn.modules.grpyc.__file__
        listing = sorted(conn.modules.os.listdir(remote_dir))
        dropin = conn.eval(
            "__import__('rpyc.utils.server', fromlist=['_']).ThreadedServer"
            " is __import__('grpyc.server', fromlist=['_']).ThreadedServer"
        )
    finally:
        conn.close()
    assert remote_pid != os.getpid()
    assert remote_pid == deployed.remote_pid
    assert is_running(remote_pid)
    assert remote_dir == str(deployed.remote_dir)
    assert Path(remote_dir).is_dir()
    assert {"deployed-grpyc.py", "grpyc"} <= set(listing)
    assert grpyc_file == f"{remote_dir}/grpyc/__init__.py"
    assert dropin is True  # RPyC's names work in the deployed server
    assert deployed.local_port is None  # no local TCP port: a Unix socket or an SSH channel


class Local(Service):
    def exposed_triple(self, value):
        return 3 * value


def test_service_connection_calls_back_into_our_service(deployed):
    conn = deployed.connect(Local, {"sync_request_timeout": 10})
    try:
        assert conn.root.echo("through ssh") == "through ssh"
        assert conn.root.apply(lambda value: value + 1, 7) == 8
        assert conn.root.ask_peer(7) == 21  # the local service we passed
    finally:
        conn.close()
    plain = deployed.connect()  # VoidService here, as in RPyC
    try:
        assert plain.root.echo(("a", 1)) == ("a", 1)
    finally:
        plain.close()


def test_connections_through_one_deployment_are_independent(deployed):
    first = deployed.classic_connect()
    second = deployed.classic_connect()
    try:
        assert first.modules.os.getpid() == second.modules.os.getpid() == deployed.remote_pid
        first.close()
        assert second.eval("6 * 7") == 42
    finally:
        first.close()
        second.close()


# ------------------------------------------------------------------ closing
def test_close_waits_for_the_server_then_removes_its_dir_and_closes_the_machine(machine):
    # The server's own close() takes 0.5 s: close() without a timeout waits for it.
    with deploy(machine, extra_setup=stubborn_setup(0.5)) as server:
        conn = server.classic_connect()
        remote_pid, remote_dir = server.remote_pid, str(server.remote_dir)
        assert conn.modules.os.getpid() == remote_pid
        assert Path(remote_dir).is_dir()
        started = time.monotonic()
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5.0
    # close() has returned: the process has exited and the directory is gone.
    assert not Path(remote_dir).exists()
    assert wait_until(lambda: not is_running(remote_pid), timeout=2)
    assert server.proc is None
    assert server.tun is None
    assert server.remote_machine is None
    assert_machine_closed(machine)  # as RPyC's close() does
    with pytest.raises(EOFError):
        conn.eval("1")
    conn.close()
    server.close()  # again: nothing more to do
    with pytest.raises(ValueError, match="closed"):
        server.classic_connect()


def test_close_timeout_kills_a_server_that_does_not_stop(machine):
    server = deploy(machine, extra_setup=stubborn_setup(3600))
    remote_pid, remote_dir = server.remote_pid, str(server.remote_dir)
    conn = server.classic_connect()
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired, match=r"timed out after 0\.5 seconds"):
        server.close(timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 4.0
    # Killed (kill -KILL by pid), and everything else cleaned up all the same.
    assert wait_until(lambda: not is_running(remote_pid), timeout=2)
    assert not Path(remote_dir).exists()
    assert_machine_closed(machine)
    with pytest.raises(EOFError):
        conn.eval("1")
    conn.close()


def test_a_forgotten_deployment_stops_its_server_when_collected(machine, tmp_path, monkeypatch):
    import gc
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a tunnel socket goes
    server = deploy(machine)
    remote_pid, remote_dir = server.remote_pid, str(server.remote_dir)
    del server
    gc.collect()
    # The server got EOF on its stdin: it stops and removes its own directory.
    assert wait_until(lambda: not is_running(remote_pid))
    assert wait_until(lambda: not Path(remote_dir).exists())
    assert machine["true"]() == ""  # the machine was not closed
    assert list(tmp_path.iterdir()) == []  # nor is the tunnel's local directory left


# ----------------------------------------------------------- failed starts
def test_remote_python_without_gevent_fails_with_a_clear_error(machine, remote_dirs):
    # -S leaves out site-packages, so this Python has no gevent.
    python = machine[sys.executable]["-S"]
    with pytest.raises(
        ProcessExecutionError, match=r"(?s)did not start.*needs gevent and greenlet installed"
    ) as info:
        deploy(machine, python_executable=python)
    assert info.value.retcode == 1
    (remote_dir,) = remote_dirs
    assert not Path(remote_dir).exists()
    assert machine["true"]() == ""  # the caller keeps its machine


def test_failing_extra_setup_is_reported_with_its_traceback(machine, remote_dirs):
    with pytest.raises(ProcessExecutionError, match=r"(?s)RuntimeError: setup says no"):
        deploy(machine, extra_setup="raise RuntimeError('setup says no')")
    (remote_dir,) = remote_dirs
    assert not Path(remote_dir).exists()


def test_server_that_never_reports_its_port_is_killed_after_startup_timeout(machine, remote_dirs):
    started = time.monotonic()
    with pytest.raises(
        ProcessExecutionError, match=r"did not report its port within 1\.0 s \(startup_timeout\)"
    ):
        deploy(machine, extra_setup="import time\ntime.sleep(120)", startup_timeout=1.0)
    assert time.monotonic() - started < 8.0
    (remote_dir,) = remote_dirs
    assert wait_until(lambda: not processes_mentioning(remote_dir))
    assert not Path(remote_dir).exists()


# -------------------------------------------------------------- ssh_connect
@pytest.fixture
def grpyc_server_here():
    server = Server(TestService, hostname="127.0.0.1", port=0)
    server.listen()
    yield server
    server.close()


def test_ssh_connect_reaches_a_grpyc_server_on_the_remote_loopback(
    machine, grpyc_server_here, tmp_path, monkeypatch
):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the tunnel socket goes
    conn = factory.ssh_connect(
        machine, grpyc_server_here.port, service=Local, config={"sync_request_timeout": 10}
    )
    try:
        assert conn.root.echo("via ssh") == "via ssh"
        assert conn.root.call(conn.root.echo, 5) == 5
        assert wait_until(lambda: len(grpyc_server_here.clients) == 1)
    finally:
        conn.close()
    assert wait_until(lambda: not grpyc_server_here.clients)
    assert list(tmp_path.iterdir()) == []  # the tunnel's socket directory is gone


@pytest.mark.parametrize("deployed", ["ssh"], indirect=True)
def test_ssh_connect_to_a_deployed_server_matches_stock(deployed, sshd):
    machine = sshd.ssh_machine()
    conns = []
    try:
        for connect in (
            factory.ssh_connect,
            classic.ssh_connect,
            stock_factory.ssh_connect,
            stock_classic.ssh_connect,
        ):
            conns.append(connect(machine, deployed.remote_port))
        pids = [conn.root.getmodule("os").getpid() for conn in conns]
        assert pids == [deployed.remote_pid] * 4
        names = [type(conn.root).__name__ for conn in conns]
        assert names == ["__main__.EchoSlave"] * 4
    finally:
        for conn in conns:
            conn.close()
        machine.close()


def test_ssh_connect_works_over_paramiko_where_stock_has_no_tunnel(sshd, grpyc_server_here):
    machine = sshd.paramiko_machine()
    try:
        with pytest.raises(
            AttributeError, match="'ParamikoMachine' object has no attribute 'tunnel'"
        ):
            stock_factory.ssh_connect(machine, grpyc_server_here.port)
        conn = factory.ssh_connect(machine, grpyc_server_here.port)
        assert conn.root.add(2, 3) == 5
        conn.close()
        assert wait_until(lambda: not grpyc_server_here.clients)
    finally:
        machine.close()


# ------------------------------------------------------------ compared to stock
def deployment_probe(deployment_class, machine):
    server = deployment_class(machine, python_executable=sys.executable)
    conn = server.classic_connect()
    remote_pid, remote_dir = conn.modules.os.getpid(), conn.modules.os.getcwd()
    probe = {
        "own process": remote_pid != os.getpid(),
        "dir exists while deployed": Path(remote_dir).is_dir(),
        "mktemp dir": Path(remote_dir).name.startswith("tmp."),
        "eval": conn.eval("6 * 7"),
    }
    conn.close()
    server.close()
    # Stock leaves both to the remote side, after close() has returned.
    probe["server gone"] = wait_until(lambda: not is_running(remote_pid), timeout=10)
    probe["dir gone"] = wait_until(lambda: not Path(remote_dir).exists(), timeout=10)
    with contextlib.suppress(ClosedRemoteMachine):
        with machine.tempdir():
            pass
        probe["machine closed"] = False
    probe.setdefault("machine closed", True)
    return probe


def test_deployment_behaves_like_stocks_deploying_stock_rpyc(sshd):
    probes = {}
    for name, deployment_class in (
        ("stock", stock_zerodeploy.DeployedServer),
        ("grpyc", DeployedServer),
    ):
        machine = sshd.ssh_machine()
        try:
            probes[name] = deployment_probe(deployment_class, machine)
        finally:
            machine.close()
    expected = {
        "own process": True,
        "dir exists while deployed": True,
        "mktemp dir": True,
        "eval": 42,
        "server gone": True,
        "dir gone": True,
        "machine closed": True,
    }
    assert probes == {"stock": expected, "grpyc": expected}


# ------------------------------------------------------------ custom scripts
@pytest.mark.parametrize("machine", ["paramiko"], indirect=True)
def test_a_script_that_prints_only_the_port_works_as_in_rpyc(machine):
    # RPyC's contract for server_script: the first line is the port.
    script = SERVER_SCRIPT.replace('sys.stdout.write(f"pid {os.getpid()}\\n")', "")
    assert script != SERVER_SCRIPT
    with deploy(machine, server_script=script) as server:
        assert server.remote_pid is None
        conn = server.classic_connect()
        remote_pid = conn.modules.os.getpid()
        conn.close()
    assert wait_until(lambda: not is_running(remote_pid), timeout=2)


@pytest.mark.parametrize("machine", ["paramiko"], indirect=True)
def test_a_script_that_prints_something_else_is_reported(machine):
    with pytest.raises(
        ProcessExecutionError,
        match=r"did not start: expected the server's port, got b'hello'",
    ):
        deploy(machine, server_script="print('hello')\n")


# ------------------------------------------------------------ several machines
def test_multi_server_deployment_serves_each_machine(sshd):
    machines = [sshd.ssh_machine(), sshd.paramiko_machine()]
    try:
        with MultiServerDeployment(
            machines, python_executable=sys.executable, extra_setup=ECHO_SETUP
        ) as deployment:
            assert len(deployment) == 2
            assert list(deployment) == [deployment[0], deployment[1]]
            pids = [server.remote_pid for server in deployment]
            dirs = [str(server.remote_dir) for server in deployment]
            classic_conns = deployment.classic_connect_all()
            assert [conn.modules.os.getpid() for conn in classic_conns] == pids
            conns = deployment.connect_all(Local)
            assert [conn.root.ask_peer(index) for index, conn in enumerate(conns)] == [0, 3]
            for conn in classic_conns + conns:
                conn.close()
        assert len(deployment) == 0
        assert len(set(pids)) == 2
        assert wait_until(lambda: not any(is_running(pid) for pid in pids), timeout=2)
        assert not any(Path(path).exists() for path in dirs)
        for machine in machines:
            assert_machine_closed(machine)
    finally:
        for machine in machines:
            machine.close()


def test_a_failed_multi_deployment_tears_down_the_servers_it_made(sshd, remote_dirs):
    good, gone = sshd.ssh_machine(), sshd.ssh_machine()
    gone.close()
    try:
        with pytest.raises(ClosedRemoteMachine):
            MultiServerDeployment([good, gone], python_executable=sys.executable)
        (remote_dir,) = remote_dirs  # the second never got one
        assert not Path(remote_dir).exists()
        assert wait_until(lambda: not processes_mentioning(remote_dir))
        assert good["true"]() == ""  # the machines stay the caller's
    finally:
        good.close()


# ------------------------------------------------------------ monkey patching
def test_deploys_and_connects_in_a_monkey_patched_process(sshd):
    details = {
        "port": sshd.port,
        "host_public_key": sshd.host_public_key,
        "client_key": str(sshd.client_key),
        "known_hosts": str(sshd.known_hosts),
        "user": sshd.user,
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.zerodeploy_patched", json.dumps(details)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stderr
    # [own process, ssh_connect reaches it, dir left after close] per machine kind
    assert json.loads(result.stdout) == [[True, True, False], [True, True, False]]
