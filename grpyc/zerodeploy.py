"""Zero-deploy: a short-lived grpyc server on an SSH machine. RPyC-compatible.

The stand-in for ``rpyc.utils.zerodeploy``.

`DeployedServer` copies grpyc's sources to a new temporary directory on the
remote machine, starts a server there bound to the remote's loopback, and
reaches it through SSH; `close` stops the server, ends the tunnel and
removes the directory. `MultiServerDeployment` does it for several machines.

The remote machine is a plumbum ``SshMachine`` or ``ParamikoMachine``
(``pip install 'grpyc-gevent[ssh]'``). grpyc's sources are copied, but gevent and
greenlet are compiled extensions and cannot be: the remote Python must have
them installed already. This module imports without plumbum (the deployed
server imports it too); plumbum is needed only to deploy.

How the two sides talk: the remote script prints ``"pid <pid>"`` on its
stdout as it starts and its port, alone on a line, once it listens (RPyC's
scripts print only the port line); then it serves until its stdin reaches
EOF. So closing the SSH side of its stdin stops it gracefully, whichever SSH
client carries it, and its stdout reaching EOF means it has exited.

Deploying and closing run plumbum's blocking commands in the calling thread;
waiting for the remote server (its startup line, its exit) is cooperative.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

from grpyc import classic, factory
from grpyc._ssh import RemoteProcess, SshRoute, open_route
from grpyc.service import VoidService

__all__ = [
    "DEFAULT_SERVER_CLASS",
    "DEFAULT_SERVICE_CLASS",
    "DEFAULT_STARTUP_TIMEOUT",
    "SERVER_SCRIPT",
    "DeployedServer",
    "MultiServerDeployment",
]

_log = logging.getLogger("grpyc.zerodeploy")

# The remote compiles grpyc's sources (no bytecode is copied) and imports
# gevent before it listens: about 0.3 s on this machine. A minute allows for
# slow disks and loaded hosts, and a server that never starts still fails.
DEFAULT_STARTUP_TIMEOUT = 60.0
# A remote server asked to stop by force (kill -KILL) is gone at once;
# this bounds the wait for its SSH session to end.
_KILL_WAIT = 5.0
# A server that printed something else than its port is given this long to
# exit, for its exit status and stderr in the error; then it is killed.
_FAILED_START_WAIT = 2.0

# RPyC's defaults, under grpyc's names.
DEFAULT_SERVER_CLASS = "grpyc.server.ThreadedServer"
DEFAULT_SERVICE_CLASS = "grpyc.service.SlaveService"

# The script the remote Python runs, in the remote temporary directory next
# to the copied ``grpyc`` package. As in RPyC, the $...$ names are replaced
# (``$EXTRA_SETUP$`` last), and the extra setup may rebind ``ServerCls``,
# ``ServiceCls`` and ``logger`` before the server is made.
SERVER_SCRIPT = r"""import atexit
import os
import shutil
import sys

sys.stdout.write(f"pid {os.getpid()}\n")
sys.stdout.flush()
here = os.path.dirname(os.path.abspath(__file__))
atexit.register(shutil.rmtree, here, True)
os.chdir(here)
sys.path.insert(0, here)
try:
    import gevent
    import greenlet
except ImportError as exc:
    sys.exit(f"grpyc's deployed server needs gevent and greenlet installed for "
             f"{sys.executable} on the remote machine: {exc}")

import grpyc
from grpyc.zerodeploy import _serve_until_stdin_closes

grpyc.install_as_rpyc()
from $SERVER_MODULE$ import $SERVER_CLASS$ as ServerCls
from $SERVICE_MODULE$ import $SERVICE_CLASS$ as ServiceCls

logger = None
$EXTRA_SETUP$

server = ServerCls(ServiceCls, hostname="127.0.0.1", port=0, reuse_addr=True, logger=logger)
_serve_until_stdin_closes(server)
"""


# ------------------------------------------------------------ remote side
def _serve_until_stdin_closes(server: Any) -> None:
    """The deployed server's main loop; runs on the remote machine.

    Prints the port, then discards what Python writes to stdout
    and stderr (an SSH pipe that nobody reads would stall the server once
    full; give ``extra_setup`` a ``logger`` to keep logs). The descriptors
    stay open, so the deploying side sees EOF only when the process exits.
    """
    import gevent.os

    server.listen()
    sys.stdout.write(f"{server.port}\n")
    sys.stdout.flush()
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    try:
        gevent.os.make_nonblocking(0)
        while gevent.os.nb_read(0, 4096):
            pass
    finally:
        server.close()


# ------------------------------------------------------------ local side
def _require_plumbum() -> None:
    from grpyc._ssh import require_plumbum

    require_plumbum("grpyc.zerodeploy")


def _grpyc_module(module: str) -> str:
    """RPyC's module name -> grpyc's (``rpyc.utils.server`` -> ``grpyc.server``)."""
    from grpyc._dropin import PROVIDED_MODULES

    if module == "rpyc" or module == "rpyc.utils" or module == "rpyc.core":
        return "grpyc"
    return PROVIDED_MODULES.get(module, module)


def _class_path(value: str | type, argument: str) -> tuple[str, str]:
    """``(module, class name)`` for the remote script; RPyC's names map to grpyc's.

    Names in grpyc (or RPyC's) are checked here, before anything is deployed.

    Raises:
        ValueError: not a dotted name, or no such class in grpyc.
    """
    if isinstance(value, type):
        value = f"{value.__module__}.{value.__qualname__}"
    module, _, name = str(value).rpartition(".")
    if not module or not name:
        raise ValueError(
            f"{argument} must be a dotted name like 'grpyc.server.Server', not {value!r}"
        )
    module = _grpyc_module(module)
    if module == "grpyc" or module.startswith("grpyc."):
        import importlib

        if not isinstance(getattr(importlib.import_module(module), name, None), type):
            raise ValueError(f"{argument}={value!r}: {module} has no class {name!r}")
    return module, name


def _render_script(
    template: str, server: tuple[str, str], service: tuple[str, str], extra_setup: str
) -> str:
    """The remote script: ``template`` with RPyC's placeholders replaced, extra setup last."""
    for placeholder, text in (
        ("$SERVER_MODULE$", server[0]),
        ("$SERVER_CLASS$", server[1]),
        ("$SERVICE_MODULE$", service[0]),
        ("$SERVICE_CLASS$", service[1]),
        ("$EXTRA_SETUP$", extra_setup),
    ):
        template = template.replace(placeholder, text)
    return template


def _python_command(remote_machine: Any, python_executable: Any) -> Any:
    """The remote Python, found as RPyC finds it: this version's name first."""
    from plumbum import CommandNotFound
    from plumbum.commands.base import BaseCommand

    if isinstance(python_executable, BaseCommand):
        return python_executable
    if python_executable:
        return remote_machine[python_executable]
    for name in (
        f"python{sys.version_info[0]}.{sys.version_info[1]}",
        f"python{sys.version_info[0]}",
    ):
        with contextlib.suppress(CommandNotFound):
            return remote_machine[name]
    return remote_machine.python


@contextlib.contextmanager
def _staged_sources() -> Iterator[Path]:
    """A local copy of grpyc's package without bytecode, to upload in one go."""
    import grpyc

    with tempfile.TemporaryDirectory(prefix="grpyc-deploy-") as directory:
        staged = Path(directory) / "grpyc"
        shutil.copytree(
            Path(grpyc.__file__).parent,
            staged,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"),
        )
        yield staged


def _parse_port(line: bytes) -> int:
    try:
        port = int(line)
    except ValueError:
        raise ValueError(f"expected the server's port, got {line!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return port


class DeployedServer:
    """A grpyc server deployed for a while on an SSH machine. RPyC-compatible.

    1. Makes a temporary directory on the remote machine and copies grpyc's
       sources (no bytecode) into it.
    2. Starts ``server_class`` serving ``service_class`` there, on 127.0.0.1
       and a free port, with ``python_executable``; the server reports its
       port and pid on its stdout.
    3. Makes the route from here to that port (see below).
    4. `connect` and `classic_connect` make connections through it, any number.
    5. `close` stops the server, ends the route, removes the directory and
       closes ``remote_machine``, as RPyC does. A ``with`` block calls it.

    The remote Python must have gevent and greenlet installed (compiled
    extensions, which cannot be copied as sources).

    Args:
        remote_machine: a plumbum ``SshMachine`` or ``ParamikoMachine``.
        server_class: dotted name (or class) of the server. RPyC's names
            (``"rpyc.utils.server.ThreadedServer"``) mean grpyc's
            (``"grpyc.server.ThreadedServer"``); names outside grpyc and
            RPyC are imported on the remote machine.
        service_class: dotted name (or class) of the service, mapped the same
            way (default: classic mode's ``SlaveService``).
        server_script: the script template the remote Python runs (see
            `SERVER_SCRIPT` for its placeholders and what it must print).
        extra_setup: Python code the script runs before it makes the server;
            it may rebind ``ServerCls``, ``ServiceCls`` and ``logger``.
        python_executable: the remote Python: a name or path, or a plumbum
            command; by default ``pythonX.Y`` of this Python's version, then
            ``pythonX``, then the machine's ``python``, as in RPyC.
        startup_timeout: seconds the server has to report its port (grpyc's
            own argument; RPyC waits forever).

    Raises:
        ImportError: plumbum is not installed (the ``ssh`` extra).
        ValueError: ``server_class`` or ``service_class`` names no class.
        plumbum.ProcessExecutionError: the server did not start: it exited
            (the message has its exit status and stderr, e.g. gevent
            missing) or did not report its port within ``startup_timeout``.

    Where grpyc differs from RPyC:

    - `close` returns once the remote server has exited and its directory
      is gone (RPyC returns at once and leaves both to the remote side).
    - With an OpenSSH ``SshMachine`` the tunnel starts at a Unix socket in a
      private local directory, not at a local TCP port that every local user
      could connect to (and run code through, with a classic service), so
      ``local_port`` is None, as RPyC's is with paramiko.
    - With a ``ParamikoMachine``, RPyC's `close` cannot stop the server or
      close the machine (``ParamikoPopen.terminate`` raises); grpyc does both.
    - Once started, the server's stdout and stderr are discarded (a full SSH
      pipe would stall it); pass a ``logger`` in ``extra_setup`` for logs.
    - Deleting an unclosed deployment only closes the server's stdin (the
      server then stops and removes its directory); RPyC's ``__del__`` runs
      all of `close`, blocking I/O inside garbage collection.
    """

    def __init__(
        self,
        remote_machine: Any,
        server_class: str | type = DEFAULT_SERVER_CLASS,
        service_class: str | type = DEFAULT_SERVICE_CLASS,
        server_script: str = SERVER_SCRIPT,
        extra_setup: str = "",
        python_executable: Any = None,
        *,
        startup_timeout: float | None = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        _require_plumbum()
        script = _render_script(
            server_script,
            _class_path(server_class, "server_class"),
            _class_path(service_class, "service_class"),
            extra_setup,
        )
        self.remote_machine = remote_machine
        self.proc: Any = None
        self.tun: SshRoute | None = None
        self.remote_port: int | None = None
        self.remote_pid: int | None = None
        self.local_port: int | None = None
        self._process: RemoteProcess | None = None
        self._closed = False
        self._tmpdir_ctx = remote_machine.tempdir()
        self.remote_dir: Any = self._tmpdir_ctx.__enter__()
        try:
            self._start(script, python_executable, startup_timeout)
        except BaseException:
            self._closed = True
            # The caller keeps its machine after a failed deployment.
            self._tear_down(0, close_machine=False)
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"port {self.remote_port}, pid {self.remote_pid}"
        return f"<DeployedServer on {self.remote_machine}: {state}>"

    def _start(self, script: str, python_executable: Any, startup_timeout: float | None) -> None:
        with _staged_sources() as staged:
            self.remote_machine.upload(staged, self.remote_dir / "grpyc")
        script_path = self.remote_dir / "deployed-grpyc.py"
        script_path.write(script)
        command = _python_command(self.remote_machine, python_executable)
        self.proc = command.popen(script_path, new_session=True)
        self._process = RemoteProcess(self.proc)
        self.remote_port = self._read_address(self._process, startup_timeout)
        self.tun = open_route(self.remote_machine, self.remote_port, "127.0.0.1")
        self.local_port = getattr(self.tun, "local_port", None)

    def _read_address(self, process: RemoteProcess, timeout: float | None) -> int:
        """The port line; a ``pid <pid>`` line before it sets `remote_pid`."""
        from plumbum import ProcessExecutionError

        where = f"grpyc's deployed server on {self.remote_machine}"
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            line = process.read_line(deadline)
            if line is None:
                message = f"{where} did not report its port within {timeout} s (startup_timeout)"
                raise ProcessExecutionError(process.argv, None, "", "", message)
            if line.startswith(b"pid ") and line[4:].strip().isdigit():
                self.remote_pid = int(line[4:])
                continue
            try:
                return _parse_port(line)
            except ValueError as exc:
                reason = "it exited" if process.exited and not line else str(exc)
                process.wait_exit(_FAILED_START_WAIT)
                raise ProcessExecutionError(
                    process.argv,
                    process.returncode(),
                    line.decode(errors="replace"),
                    process.error_output(),
                    f"{where} did not start: {reason}",
                ) from None

    # ---------------------------------------------------------- connecting
    def _new_stream(self) -> Any:
        if self._closed or self.tun is None:
            raise ValueError(f"{self!r} is closed")
        return self.tun.connect_stream()

    def connect(self, service: Any = VoidService, config: dict[str, Any] | None = None) -> Any:
        """A connection to the deployed server, like `grpyc.factory.connect`. RPyC-compatible."""
        return factory.connect_stream(self._new_stream(), service, config)

    def classic_connect(self) -> Any:
        """A classic connection to the deployed server, like `classic.connect`. RPyC-compatible."""
        return classic.connect_stream(self._new_stream())

    # ------------------------------------------------------------- closing
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Runs inside garbage collection: no waiting, only EOF to the server.
        process = getattr(self, "_process", None)
        if process is not None:
            process.close_stdin()

    def close(self, timeout: float | None = None) -> None:
        """Stop the server, end the route, remove the remote directory, close the machine.

        RPyC-compatible; may be called more than once. Connections still
        open see the server go (`EOFError` on their next call).

        Args:
            timeout: seconds the server has to exit after its stdin closes
                (it lets calls in flight finish first); None waits until it
                does. Past it the server is killed (``kill -KILL`` on the
                remote machine) and the rest of the cleanup still runs.

        Raises:
            subprocess.TimeoutExpired: the server had to be killed, as in
                RPyC (raised after the cleanup, unlike RPyC).
        """
        if self._closed:
            return
        self._closed = True
        argv = self._process.argv if self._process is not None else []
        if not self._tear_down(timeout, close_machine=True):
            raise subprocess.TimeoutExpired(argv, timeout or 0)

    def _tear_down(self, timeout: float | None, close_machine: bool) -> bool:
        """Undo every step that was done; True if the server exited within ``timeout``."""
        try:
            return self._stop_server(timeout)
        finally:
            steps = [self._close_route, self._remove_remote_dir]
            if close_machine:
                steps.append(self._close_machine)
            for step in steps:
                try:
                    step()
                except Exception:  # noqa: BLE001 - to the log; the other steps still run
                    _log.warning("closing %r: %s failed", self, step.__name__, exc_info=True)

    def _stop_server(self, timeout: float | None) -> bool:
        process, self._process = self._process, None
        if process is None:
            return True
        process.close_stdin()
        stopped = process.wait_exit(timeout)
        if not stopped and self.remote_pid is not None:
            with contextlib.suppress(Exception):  # it may have exited meanwhile
                self.remote_machine["kill"]("-KILL", str(self.remote_pid))
            process.wait_exit(_KILL_WAIT)
        process.release(force=not process.exited)
        self.proc = None
        return stopped

    def _close_route(self) -> None:
        route, self.tun = self.tun, None
        if route is not None:
            route.close()

    def _remove_remote_dir(self) -> None:
        context, self._tmpdir_ctx = self._tmpdir_ctx, None
        if context is not None:
            context.__exit__(None, None, None)

    def _close_machine(self) -> None:
        machine, self.remote_machine = self.remote_machine, None
        if machine is not None:
            machine.close()


class MultiServerDeployment:
    """`DeployedServer` on several machines, handled as one. RPyC-compatible.

    Args:
        remote_machines: the plumbum machines, one server each.
        server_class: as for `DeployedServer`.
        options: `DeployedServer`'s other arguments, for every machine
            (grpyc's own; RPyC takes only ``server_class``).

    Where grpyc differs from RPyC: if one deployment fails, the ones already
    made are torn down (their machines stay open) before the error is raised.
    """

    def __init__(
        self,
        remote_machines: Iterable[Any],
        server_class: str | type = DEFAULT_SERVER_CLASS,
        **options: Any,
    ) -> None:
        self.remote_machines = remote_machines
        self.servers: list[DeployedServer] = []
        try:
            for machine in remote_machines:
                self.servers.append(DeployedServer(machine, server_class, **options))
        except BaseException:
            servers, self.servers = self.servers, []
            for server in servers:
                server._closed = True
                server._tear_down(0, close_machine=False)
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[DeployedServer]:
        return iter(self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    def __getitem__(self, index: int) -> DeployedServer:
        return self.servers[index]

    def close(self, timeout: float | None = None) -> None:
        """Close every deployment (see `DeployedServer.close`). RPyC-compatible.

        Raises:
            subprocess.TimeoutExpired: a server had to be killed; the others
                are closed all the same.
        """
        first_timeout: subprocess.TimeoutExpired | None = None
        while self.servers:
            try:
                self.servers.pop(0).close(timeout)
            except subprocess.TimeoutExpired as exc:
                first_timeout = first_timeout or exc
        if first_timeout is not None:
            raise first_timeout

    def connect_all(
        self, service: Any = VoidService, config: dict[str, Any] | None = None
    ) -> list[Any]:
        """A connection to each server, in order. RPyC-compatible."""
        return [server.connect(service, config) for server in self.servers]

    def classic_connect_all(self) -> list[Any]:
        """A classic connection to each server, in order. RPyC-compatible."""
        return [server.classic_connect() for server in self.servers]
