"""The ``grpyc`` command, run for real in a subprocess on 127.0.0.1 port 0.

Each server is ``python -m grpyc ...``; the test reads its stderr (the
"listening on" line and the log) in a greenlet and drives it with grpyc
clients in this process.
"""

import contextlib
import os
import re
import resource
import signal
import sys
import time
from pathlib import Path

import gevent
import gevent.socket as gsocket
import pytest
from gevent import subprocess
from gevent.event import Event

from grpyc import classic, factory
from grpyc.cli import main
from grpyc.registry import TCPRegistryClient, UDPRegistryClient, UDPRegistryServer
from grpyc.service import ClassicClient
from grpyc.version import __version__
from tests.certs import make_pki

ROOT = Path(__file__).resolve().parents[1]
LOCAL = "127.0.0.1"
LISTENING = re.compile(r"listening on (\S+):(\d+)$")

SERVICE_MODULE = """
import os

import gevent

from grpyc.service import Service


class GreeterService(Service):
    def exposed_greet(self, name):
        return f"hello {name}"

    def exposed_pid(self):
        return os.getpid()

    def exposed_echo(self, value):
        return value

    def exposed_slow(self, seconds, started):
        started()
        gevent.sleep(seconds)
        return "done"


NOT_A_SERVICE = 42
"""


class Lines:
    """The lines of a text stream, read by a greenlet as they come."""

    def __init__(self, stream):
        self.lines = []
        self._stream = stream
        self._changed = Event()
        self.reader = gevent.spawn(self._read)

    def _read(self):
        for line in self._stream:
            self.lines.append(line.rstrip("\n"))
            self._changed.set()
        self._changed.set()

    def wait_for(self, pattern, start=0, timeout=10.0):
        """The first match of `pattern` in a line from index `start` on; returns
        ``(match, index)``."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.lines):
                found = re.search(pattern, self.lines[index])
                if found:
                    return found, index
                index += 1
            if self.reader.dead:
                pytest.fail(f"no line matching {pattern!r}; the stream ended: {self.lines}")
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._changed.wait(remaining):
                pytest.fail(f"no line matching {pattern!r} within {timeout} s: {self.lines}")


GRPYC = (sys.executable, "-m", "grpyc")
STOCK_CLASSIC = (str(Path(sys.executable).with_name("rpyc_classic")),)
STOCK_REGISTRY = (str(Path(sys.executable).with_name("rpyc_registry")),)
RPYC_CLASSIC = (sys.executable, "-c", "from grpyc.cli.rpyc_classic import main; main()")
RPYC_REGISTRY = (sys.executable, "-c", "from grpyc.cli.rpyc_registry import main; main()")


def _no_core_dumps():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class Command:
    """A program (``python -m grpyc ARGS`` unless `program` says otherwise) in a
    subprocess; its stderr lines (and stdout lines, with `stdout`) are collected."""

    def __init__(self, *args, env=None, pythonpath=(), program=GRPYC, stdout=False):
        path = os.pathsep.join([*map(str, pythonpath), str(ROOT)])
        self.proc = subprocess.Popen(
            [*program, *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # Python's faulthandler: SIGABRT makes the program print every
            # thread's stack (`wait_for` sends it when a line does not come).
            env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {}), "PYTHONPATH": path},
            # Its own process group, so `stop` also ends workers and children.
            start_new_session=True,
            preexec_fn=_no_core_dumps,  # SIGABRT (`wait_for`) must leave no core file behind
        )
        self.err = Lines(self.proc.stderr)
        self.out = Lines(self.proc.stdout) if stdout else None
        self.lines = self.err.lines
        self._reader = self.err.reader

    def wait_for(self, pattern, start=0, timeout=10.0):
        """`Lines.wait_for` on stderr; if the line does not come, the failure also
        shows where the program was (its stacks, from SIGABRT and faulthandler)."""
        try:
            return self.err.wait_for(pattern, start, timeout)
        except pytest.fail.Exception as failed:
            if self.proc.poll() is not None:
                raise
            seen = len(self.err.lines)
            self.proc.send_signal(signal.SIGABRT)
            self.err.reader.join(timeout=5)
            stacks = "\n".join(self.err.lines[seen:])
            pytest.fail(f"{failed}\nits stacks at SIGABRT:\n{stacks}")

    def port(self):
        found, _ = self.wait_for(LISTENING)
        return int(found.group(2))

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout=15.0):
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # What the server logged tells why it did not exit (a one-off in CI).
            pytest.fail(f"still running after {timeout} s; its stderr so far: {self.err.lines}")
        self.err.reader.join(timeout=5)
        if self.out is not None:
            self.out.reader.join(timeout=5)
        return status

    def stop(self):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait()
        self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def command():
    """Factory: start ``python -m grpyc ARGS`` (or `program=`); every command is
    killed afterwards."""
    started = []

    def start(*args, **kwargs):
        cmd = Command(*args, **kwargs)
        started.append(cmd)
        return cmd

    yield start
    for cmd in started:
        cmd.stop()


def run(*args, timeout=30, program=GRPYC):
    """Run ``python -m grpyc ARGS`` (or `program`) to completion: ``(status, stdout,
    stderr)``."""
    done = subprocess.run(
        [*program, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def service_dir(tmp_path):
    (tmp_path / "greeter_mod.py").write_text(SERVICE_MODULE)
    return tmp_path


def outcome(func, *args):
    """``func(*args)``, or the exception it raised (a spawned greenlet that
    dies of an exception would be reported to the hub)."""
    try:
        return func(*args)
    except Exception as exc:
        return exc


def classic_pid(port):
    with classic.connect(LOCAL, port) as conn:
        return conn.modules.os.getpid()


def start_slow_classic_call(conn, seconds):
    """Start a `seconds`-long call in a classic server; returns the greenlet once
    the server is running it."""
    conn.execute(
        "import gevent\n"
        "def slow(started, seconds):\n"
        "    started()\n"
        "    gevent.sleep(seconds)\n"
        "    return 'done'\n"
    )
    started = Event()
    call = gevent.spawn(outcome, conn.namespace["slow"], started.set, seconds)
    assert started.wait(10)
    return call


def is_running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------ help, errors
def test_help_says_classic_mode_runs_anything():
    status, out, _ = run("classic", "--help")
    assert status == 0
    assert "runs ANY code a client sends" in " ".join(out.split())
    assert "--workers N" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["classic", "--port", "x"], "argument -p/--port: invalid port 'x'"),
        (["classic", "--port", "70000"], "argument -p/--port: port 70000 is not in 0..65535"),
        (["classic", "--workers", "0"], "argument --workers: 0 is not >= 1"),
        (["classic", "--mode", "oneshot", "--workers", "2"], "--workers 2 needs --mode greenlet"),
        (
            ["classic", "--ssl-keyfile", "key.pem"],
            "TLS needs both --ssl-keyfile and --ssl-certfile",
        ),
        (["classic", "--unix-socket", "/tmp/x", "--port", "1"], "--unix-socket cannot be combined"),
        (["classic", "--register", "--registry-type", "TCP"], "--registry-type TCP needs"),
        (["classic", "--mode", "stdio", "--port", "0"], "--mode stdio serves stdin/stdout"),
        (["serve", "no_such_module_here:Service"], "cannot import 'no_such_module_here'"),
        (["serve", "greeter_mod"], "expected MODULE:Class, got 'greeter_mod'"),
        (["serve", "greeter_mod:Missing"], "'greeter_mod' has no attribute 'Missing'"),
        (["serve", "greeter_mod:NOT_A_SERVICE"], "is not a Service class or instance"),
        (["registry", "--mode", "HTTP"], "argument -m/--mode: invalid choice: 'HTTP'"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ],
)
def test_bad_options_exit_2_with_one_line(args, message, service_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "path", [str(service_dir), *sys.path])
    try:
        status = main(args)
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert re.match(r"grpyc( \w+)?: error: ", lines[0])
    assert message in lines[0]


def test_the_command_exits_2_on_a_bad_option():
    status, _, err = run("classic", "--port", "x")
    assert status == 2
    assert err.splitlines() == [
        "grpyc classic: error: argument -p/--port: invalid port 'x' (see grpyc classic --help)"
    ]


def test_a_port_in_use_exits_1_with_one_line():
    with gsocket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        status, _, err = run("classic", "--port", str(port))
    assert status == 1
    assert err.splitlines() == [
        f"grpyc classic: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_demo_still_prints_its_session():
    status, out, _ = run("demo")
    assert status == 0
    assert re.search(r"^server: grpyc DemoService listening on 127\.0\.0\.1:\d+$", out, re.M)
    assert out.splitlines()[-1] == "close:     connection closed cleanly: True"


# ---------------------------------------------------------------- classic
def test_classic_server_serves_and_sigterm_loses_no_call_in_flight(command):
    server = command("classic", "--port", "0")
    assert server.wait_for(LISTENING)[0].group(1) == LOCAL
    conn = classic.connect(LOCAL, server.port())
    assert conn.modules.os.getpid() == server.proc.pid
    call = start_slow_classic_call(conn, 0.5)
    server.signal(signal.SIGTERM)
    assert call.get(timeout=10) == "done"
    assert server.wait() == 0
    server.wait_for(r"received SIGTERM: closing \(grace_period=10\.0 s\)")
    assert conn.closed
    with pytest.raises(ConnectionRefusedError):
        classic.connect(LOCAL, server.port())


def test_a_second_signal_skips_the_rest_of_the_grace_period(command):
    server = command("classic", "--port", "0", "--grace-period", "30")
    conn = classic.connect(LOCAL, server.port())
    call = start_slow_classic_call(conn, 30)
    began = time.monotonic()
    server.signal(signal.SIGINT)
    server.wait_for(r"received SIGINT: closing")
    server.signal(signal.SIGINT)
    assert server.wait() == 0
    assert time.monotonic() - began < 10
    assert isinstance(call.get(timeout=10), EOFError)
    server.wait_for(r"grace_period=30\.0 s is over: closing 1 connections")


def test_a_line_that_does_not_come_fails_with_the_programs_stacks(command):
    server = command("classic", "--port", "0")
    server.port()
    with pytest.raises(pytest.fail.Exception, match=r"(?s)within 0.2 s.*stacks at SIGABRT.*File"):
        server.wait_for("a line the server never writes", timeout=0.2)


def test_unix_socket_option(command, tmp_path):
    path = str(tmp_path / "classic.sock")
    server = command("classic", "--unix-socket", path)
    server.wait_for(f"listening on {re.escape(path)}$")
    with classic.unix_connect(path) as conn:
        assert conn.modules.os.getpid() == server.proc.pid
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not os.path.exists(path)


def test_tls_options_require_a_client_certificate(command, tmp_path):
    pki = make_pki(tmp_path)
    server = command(
        "classic",
        "--port",
        "0",
        "--ssl-keyfile",
        str(pki.server_key),
        "--ssl-certfile",
        str(pki.server_cert),
        "--ssl-cafile",
        str(pki.ca_cert),
    )
    port = server.port()
    with classic.ssl_connect(
        LOCAL,
        port,
        keyfile=str(pki.client_key),
        certfile=str(pki.client_cert),
        ca_certs=str(pki.ca_cert),
    ) as conn:
        assert conn.modules.os.getpid() == server.proc.pid
    plain = factory.connect(LOCAL, port)
    with pytest.raises(EOFError):
        plain.root.getmodule("os")
    server.wait_for(r"authentication failed: TLS handshake failed")
    plain.close()


def test_stdio_mode_serves_over_the_pipes():
    conn = factory.connect_subproc(
        [sys.executable, "-m", "grpyc", "classic", "--mode", "stdio", "--quiet"], ClassicClient
    )
    try:
        assert conn.modules.os.getpid() == conn.proc.pid
        assert conn.eval("6 * 7") == 42
    finally:
        conn.close()
        conn.proc.wait(timeout=10)


# ------------------------------------------------------------ other modes
def test_workers_spread_connections_and_a_killed_worker_is_replaced(command):
    server = command("classic", "--port", "0", "--workers", "2")
    port = server.port()
    seen = set()
    for _ in range(60):
        seen.add(classic_pid(port))
        if len(seen) == 2:
            break
    assert len(seen) == 2
    assert server.proc.pid not in seen
    with classic.connect(LOCAL, port) as conn:
        assert conn.modules.os.getppid() == server.proc.pid

    victim = min(seen)
    lines_before_kill = len(server.lines)
    os.kill(victim, signal.SIGKILL)
    _, killed_at = server.wait_for(
        rf"worker pid {victim} was killed by SIGKILL", start=lines_before_kill
    )
    found, _ = server.wait_for(r"started worker pid (\d+)", start=killed_at)
    replacement = int(found.group(1))
    assert replacement not in seen
    now_seen = set()
    for _ in range(60):
        now_seen.add(classic_pid(port))
        if replacement in now_seen:
            break
    assert replacement in now_seen
    assert victim not in now_seen

    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not any(is_running(pid) for pid in (*seen, replacement) if pid != victim)


def test_workers_close_when_their_supervisor_is_killed(command):
    server = command("classic", "--port", "0", "--workers", "2", "--grace-period", "1")
    server.port()
    first, first_line = server.wait_for(r"started worker pid (\d+)")
    second, _ = server.wait_for(r"started worker pid (\d+)", start=first_line + 1)
    pids = [int(first.group(1)), int(second.group(1))]
    os.kill(server.proc.pid, signal.SIGKILL)
    for pid in pids:
        server.wait_for(rf"supervisor pid {server.proc.pid} is gone: closing worker pid {pid}")
    # stderr ends once every process holding it (the workers) has exited.
    server._reader.join(timeout=10)
    assert server._reader.dead


def test_forking_mode_serves_each_connection_in_its_own_child(command):
    server = command("classic", "--port", "0", "--mode", "forking")
    port = server.port()
    first, second = classic.connect(LOCAL, port), classic.connect(LOCAL, port)
    pids = {first.modules.os.getpid(), second.modules.os.getpid()}
    assert len(pids) == 2
    assert server.proc.pid not in pids
    assert first.modules.os.getppid() == second.modules.os.getppid() == server.proc.pid
    first.close()
    call = start_slow_classic_call(second, 0.5)
    server.signal(signal.SIGTERM)
    assert call.get(timeout=10) == "done"
    assert server.wait() == 0
    assert not any(is_running(pid) for pid in pids)


def test_oneshot_mode_exits_after_its_client(command):
    server = command("classic", "--port", "0", "--mode", "oneshot")
    port = server.port()
    with classic.connect(LOCAL, port) as conn:
        assert conn.modules.os.getpid() == server.proc.pid
        with pytest.raises(ConnectionRefusedError):
            classic.connect(LOCAL, port)
    assert server.wait() == 0


# ------------------------------------------------------------------ serve
def test_serve_runs_a_service_class_from_pythonpath(command, service_dir):
    server = command("serve", "greeter_mod:GreeterService", "--port", "0", pythonpath=[service_dir])
    with factory.connect(LOCAL, server.port()) as conn:
        assert conn.root.greet("ada") == "hello ada"
        assert conn.root.pid() == server.proc.pid
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


# --------------------------------------------------------------- registry
@pytest.mark.parametrize("mode", ["UDP", "TCP"])
def test_registry_command_answers_grpyc_clients(command, mode):
    registry = command("registry", "--mode", mode, "--port", "0", "--allow-listing")
    found, _ = registry.wait_for(rf"grpyc registry server \({mode}\) listening on (\S+):(\d+)$")
    port = int(found.group(2))
    client = (
        UDPRegistryClient(ip=LOCAL, port=port)
        if mode == "UDP"
        else TCPRegistryClient(ip=LOCAL, port=port)
    )
    assert client.register(("GREETER",), 12345) is True
    assert client.discover("GREETER") == ((LOCAL, 12345),)
    assert client.list() == ("GREETER",)
    registry.signal(signal.SIGTERM)
    assert registry.wait() == 0


def test_register_announces_the_classic_server(command):
    added, removed = Event(), Event()

    class Registry(UDPRegistryServer):
        def on_service_added(self, name, addrinfo):
            added.set()

        def on_service_removed(self, name, addrinfo):
            removed.set()

    registry = Registry(host=LOCAL, port=0)
    registry.start_in_background()
    try:
        server = command(
            "classic",
            "--port",
            "0",
            "--register",
            "--registry-host",
            LOCAL,
            "--registry-port",
            str(registry.port),
        )
        port = server.port()
        assert added.wait(10)
        assert registry.cmd_query(LOCAL, "SLAVE") == ((LOCAL, port),)
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        assert removed.wait(10)
    finally:
        registry.close()


# ------------------------------------------- RPyC's command lines, side by side
STOCK_CLASSIC_STARTED = r"server started on \[(.+)\]:(\d+)$"
STOCK_REGISTRY_STARTED = r"server started on (\S+):(\d+)$"
CLASSIC_PROGRAMS = {
    "stock": STOCK_CLASSIC,
    "grpyc": (*GRPYC, "classic"),
    "rpyc_classic": RPYC_CLASSIC,
}
REGISTRY_PROGRAMS = {
    "stock": STOCK_REGISTRY,
    "grpyc": (*GRPYC, "registry"),
    "rpyc_registry": RPYC_REGISTRY,
}


def oneshot_session(cmd):
    """Read the oneshot lines as RPyC's own tests do, use the server, and return
    its whole stdout once it exited."""
    first, _ = cmd.out.wait_for(r".")
    second, _ = cmd.out.wait_for(r".", start=1)
    assert first.string == "rpyc-oneshot"
    host, port = second.string.split("\t")
    with classic.connect(host, int(port)) as conn:
        assert conn.modules.os.getpid() == cmd.proc.pid
        assert conn.eval("6 * 7") == 42
    assert cmd.wait() == 0
    return "\n".join(cmd.out.lines) + "\n"


@pytest.mark.parametrize("name", sorted(CLASSIC_PROGRAMS))
@pytest.mark.parametrize(
    "args",
    [
        ["-m", "oneshot", "--host", "localhost", "-p", "0"],
        ["--mode=oneshot", "--host=localhost", "-p0"],
    ],
)
def test_oneshot_prints_what_rpyc_classic_prints(command, name, args):
    cmd = command(*args, program=CLASSIC_PROGRAMS[name], stdout=True)
    out = oneshot_session(cmd)
    assert re.fullmatch(r"rpyc-oneshot\n127\.0\.0\.1\t(\d+)\n", out), out


def test_rpyc_classic_launch_script_reads_the_oneshot_lines(command, tmp_path):
    # RPyC's bin/rpyc_classic.py imports rpyc.cli.rpyc_classic and calls main().
    script = tmp_path / "rpyc_classic.py"
    script.write_text(
        "from grpyc.cli.rpyc_classic import main\n\nif __name__ == '__main__':\n    main()\n"
    )
    cmd = command(
        "--mode=oneshot",
        "--host=localhost",
        "-p0",
        program=(sys.executable, str(script)),
        stdout=True,
    )
    assert re.fullmatch(r"rpyc-oneshot\n127\.0\.0\.1\t\d+\n", oneshot_session(cmd))


def test_oneshot_on_a_unix_socket_prints_its_path(command, tmp_path):
    path = str(tmp_path / "oneshot.sock")
    cmd = command("classic", "-m", "oneshot", "--unix-socket", path, stdout=True)
    cmd.out.wait_for(r".", start=1)
    assert cmd.out.lines == ["rpyc-oneshot", f"{path}\t"]
    with classic.unix_connect(path) as conn:
        assert conn.modules.os.getpid() == cmd.proc.pid
    assert cmd.wait() == 0


@pytest.mark.parametrize("name", sorted(CLASSIC_PROGRAMS))
def test_rpyc_classic_options_serve_on_this_machine(command, name):
    # rpyc_classic's own default host is "" (this machine); grpyc's is the same.
    cmd = command(
        "--mode",
        "THREADED",
        "-p",
        "0",
        "--host",
        "",
        program=CLASSIC_PROGRAMS[name],
    )
    found, _ = cmd.wait_for(STOCK_CLASSIC_STARTED if name == "stock" else LISTENING)
    assert found.group(1) == LOCAL
    assert classic_pid(int(found.group(2))) == cmd.proc.pid


def wait_for_file_line(path, pattern, timeout=10.0):
    """The first match of `pattern` in the file at `path`, polled for `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        found = re.search(pattern, text, re.M)
        if found:
            return found
        gevent.sleep(0.05)
    pytest.fail(f"no line matching {pattern!r} in {path} within {timeout} s")


@pytest.mark.parametrize("name", ["stock", "grpyc"])
def test_logfile_takes_the_log_like_stock(command, tmp_path, name):
    log = tmp_path / "server.log"
    cmd = command("-p", "0", "--logfile", str(log), program=CLASSIC_PROGRAMS[name])
    started = STOCK_CLASSIC_STARTED if name == "stock" else r"listening on (\S+):(\d+)$"
    port = int(wait_for_file_line(log, started).group(2))
    assert classic_pid(port) == cmd.proc.pid
    wait_for_file_line(log, r"(welcome|connection from) .*127\.0\.0\.1")
    if name == "grpyc":
        # The line scripts read stays on stderr; the log goes to the file only.
        assert cmd.lines == [f"grpyc classic server listening on 127.0.0.1:{port}"]


@pytest.mark.parametrize(
    "args",
    [["-p", "x"], ["-p", "70000"], ["-m", "nonsense"], ["--no-such-option"], ["--port"]],
)
def test_bad_rpyc_classic_options_exit_2_like_stock(args):
    stock_status, _, _ = run(*args, program=STOCK_CLASSIC)
    status, _, err = run(*args, program=RPYC_CLASSIC)
    assert status == stock_status == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("rpyc_classic: error: ")


@pytest.mark.parametrize(
    ("program", "name"),
    [
        (STOCK_CLASSIC, "rpyc_classic"),
        (RPYC_CLASSIC, "rpyc_classic"),
        (STOCK_REGISTRY, "rpyc_registry"),
        (RPYC_REGISTRY, "rpyc_registry"),
    ],
)
def test_version_switch_like_stock(program, name):
    status, out, _ = run("-v", program=program)
    assert status == 0
    assert out.split(" (")[0] == name
    assert out.endswith(")\n")
    if program in (RPYC_CLASSIC, RPYC_REGISTRY):
        assert out == f"{name} (grpyc {__version__})\n"


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("grpyc.cli", "grpyc classic (grpyc {})\n"),
        ("grpyc.cli.rpyc_classic", "rpyc_classic (grpyc {})\n"),
        ("grpyc.cli.rpyc_registry", "rpyc_registry (grpyc {})\n"),
    ],
)
def test_the_cli_modules_run_with_python_m(module, expected):
    args = ["classic", "--version"] if module == "grpyc.cli" else ["--version"]
    status, out, _ = run(*args, program=(sys.executable, "-m", module))
    assert (status, out) == (0, expected.format(__version__))


def test_rpyc_classic_main_exits_with_the_status(capsys):
    from grpyc.cli import rpyc_classic, rpyc_registry

    with pytest.raises(SystemExit) as exited:
        rpyc_classic.main(["-p", "x"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "rpyc_classic: error: argument -p/--port: invalid port 'x' (see rpyc_classic --help)\n"
    )
    with pytest.raises(SystemExit) as exited:
        rpyc_registry.main(["-t", "0"])
    assert exited.value.code == 2
    assert (
        "argument -t/--timeout/--pruning-timeout: 0 seconds is not > 0" in capsys.readouterr().err
    )


def registry_port(cmd, name):
    found, _ = cmd.wait_for(
        STOCK_REGISTRY_STARTED if name == "stock" else r"listening on \S+:(\d+)$"
    )
    return int(found.group(found.lastindex))


def registry_probe(mode, host, port):
    """What a registry answers: register, discover, list."""
    if mode == "UDP":
        client = UDPRegistryClient(ip=host, port=port, ipv6=":" in host)
    else:
        client = TCPRegistryClient(ip=host, port=port)
    return client.register(("GREETER",), 12345), client.discover("GREETER"), client.list()


@pytest.mark.parametrize("mode", ["udp", "TCP"])
def test_rpyc_registry_options_answer_like_stock(command, mode):
    args = ("-m", mode, "-p", "0", "-t", "5", "-l", "true")
    answers = {}
    for name, program in REGISTRY_PROGRAMS.items():
        cmd = command(*args, program=program)
        answers[name] = registry_probe(mode.upper(), LOCAL, registry_port(cmd, name))
    assert answers["grpyc"] == answers["stock"] == answers["rpyc_registry"]
    assert answers["grpyc"] == (True, ((LOCAL, 12345),), ("GREETER",))


def test_listing_false_means_false_unlike_stock(command):
    # rpyc_registry turns any -l VALUE into True (bool("false")); grpyc reads it.
    answers = {}
    for name, args in [
        ("stock -l false", ("-l", "false")),
        ("stock", ()),
        ("grpyc -l false", ("-l", "false")),
        ("grpyc -l", ("-l",)),
    ]:
        program = REGISTRY_PROGRAMS["stock" if name.startswith("stock") else "grpyc"]
        cmd = command("-m", "TCP", "-p", "0", *args, program=program)
        answers[name] = registry_probe("TCP", LOCAL, registry_port(cmd, name.split()[0]))[2]
    assert answers["stock -l false"] == answers["grpyc -l"] == ("GREETER",)
    assert answers["grpyc -l false"] is answers["stock"] is None


def test_registry_ipv6_switch_answers_on_ipv6_loopback(command):
    answers = {}
    for name in ("stock", "grpyc"):
        cmd = command("-6", "-p", "0", program=REGISTRY_PROGRAMS[name])
        answers[name] = registry_probe("UDP", "::1", registry_port(cmd, name))
    assert answers["grpyc"] == answers["stock"] == (True, (("::1", 12345),), None)
    cmd = command("registry", "-6", "-m", "TCP", "-p", "0")
    found, _ = cmd.wait_for(r"listening on \[::1\]:(\d+)$")
    assert registry_probe("TCP", "::1", int(found.group(1)))[0] is True


@pytest.mark.parametrize("quiet", [["-q"], ["-q", "yes"], ["--quiet=1"]])
def test_registry_quiet_takes_a_value_or_none(command, quiet):
    cmd = command("registry", "-p", "0", *quiet, "-m", "TCP")
    found, _ = cmd.wait_for(r"grpyc registry server \(TCP\) listening on 127\.0\.0\.1:(\d+)$")
    assert registry_probe("TCP", LOCAL, int(found.group(1)))[0] is True
    cmd.signal(signal.SIGTERM)
    assert cmd.wait() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-t", "abc"], "argument -t/--timeout/--pruning-timeout: invalid number of seconds 'abc'"),
        (["-l", "maybe"], "argument -l/--listing: invalid boolean 'maybe'"),
        (["-p", "-1"], "argument -p/--port: expected one argument"),
        (["-m", "HTTP"], "argument -m/--mode: invalid choice: 'HTTP'"),
    ],
)
def test_bad_registry_options_exit_2(args, message):
    status, _, err = run("registry", *args)
    assert status == 2
    assert len(err.splitlines()) == 1
    assert message in err


# ------------------------------------------------------------------- load
def _rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture
def many_descriptors():
    """At least 2,200 descriptors for this process (and the server it starts).

    A hard limit below that is raised, which needs root (CAP_SYS_RESOURCE);
    without it the test fails with the limit named."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard == resource.RLIM_INFINITY or hard >= 2_200 else 2_200
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (ValueError, OSError) as exc:
        pytest.fail(f"needs 2,200 descriptors; the hard limit is {hard}: {exc}")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_2000_concurrent_connections_to_one_server_process(
    command, service_dir, many_descriptors, capsys
):
    clients = 2_000
    server = command(
        "serve", "greeter_mod:GreeterService", "--port", "0", "--quiet", pythonpath=[service_dir]
    )
    port = server.port()
    with factory.connect(LOCAL, port) as warm:
        assert warm.root.echo(0) == 0
    rss_before = _rss_kib(server.proc.pid)
    conns = []

    def client(number):
        conn = factory.connect(LOCAL, port)
        conns.append(conn)
        return [conn.root.echo(number + k) for k in range(3)]

    began = time.monotonic()
    jobs = [gevent.spawn(outcome, client, number) for number in range(clients)]
    gevent.joinall(jobs, timeout=60)
    took = time.monotonic() - began
    results = [job.value for job in jobs]
    assert results == [[n, n + 1, n + 2] for n in range(clients)]
    rss_after = _rss_kib(server.proc.pid)
    per_connection = (rss_after - rss_before) / clients
    with capsys.disabled():
        print(
            f"\n{clients} connections x 3 calls in {took:.1f} s; server VmRSS "
            f"{rss_before} -> {rss_after} KiB, {per_connection:.1f} KiB per connection"
        )
    assert per_connection < 200
    # Graceful shutdown with every connection open: each is closed politely.
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    for conn in conns:
        with gevent.Timeout(10):
            conn.serve_all()
    assert all(conn.closed for conn in conns)
