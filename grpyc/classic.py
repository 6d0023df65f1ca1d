"""Classic mode: connect to a peer's whole Python process and drive it from here.

RPyC-compatible (``rpyc.utils.classic``): the ``connect*`` functions return
connections whose local side serves `ClassicService` and whose peer is
expected to serve `SlaveService` or `ClassicService`; such a connection has
``conn.modules``, ``conn.builtins``, ``conn.eval``, ``conn.execute``,
``conn.namespace`` and ``conn.teleport`` (installed by
`grpyc.service.MasterService`). The other functions move objects and files
between the two processes and redirect the peer's standard streams here.

Classic mode executes, evaluates, imports and unpickles anything the peer
sends, by design: it is remote control of a process, in both directions
(the local side serves `ClassicService` too, as in RPyC, so the peer can
write to our stdout and read our namespaces). Use it only between processes
that trust each other completely.

File transfer (`upload`, `download` and friends) lives in
`grpyc._transfer` and is exported here: it moves files in chunks and never
writes outside the destination, whatever names the peer lists.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FunctionType
from typing import Any

from grpyc import consts, factory
from grpyc._transfer import (
    DEFAULT_CHUNK_SIZE,
    download,
    download_dir,
    download_file,
    upload,
    upload_dir,
    upload_file,
    upload_module,
    upload_package,
)
from grpyc.netref import BaseNetref, syncreq
from grpyc.service import ClassicService, MasterService, ModuleNamespace, Slave, SlaveService

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_SERVER_PORT",
    "DEFAULT_SERVER_SSL_PORT",
    "MockClassicConnection",
    "ModuleNamespace",
    "connect",
    "connect_channel",
    "connect_multiprocess",
    "connect_pipes",
    "connect_stdpipes",
    "connect_stream",
    "connect_subproc",
    "connect_thread",
    "deliver",
    "download",
    "download_dir",
    "download_file",
    "interact",
    "obtain",
    "pm",
    "redirected_stdio",
    "ssh_connect",
    "ssl_connect",
    "teleport_function",
    "unix_connect",
    "upload",
    "upload_dir",
    "upload_file",
    "upload_module",
    "upload_package",
]

DEFAULT_SERVER_PORT = consts.DEFAULT_SERVER_PORT
DEFAULT_SERVER_SSL_PORT = consts.DEFAULT_SERVER_SSL_PORT

Classic = Any  # a Connection with the attributes MasterService installs

# The local service of every classic connection, as in RPyC.
_SERVICE = ClassicService


# ------------------------------------------------------------- connecting
def connect_channel(channel: Any) -> Classic:
    """A classic connection over a channel. RPyC-compatible."""
    return factory.connect_channel(channel, _SERVICE)


def connect_stream(stream: Any) -> Classic:
    """A classic connection over a stream. RPyC-compatible."""
    return factory.connect_stream(stream, _SERVICE)


def connect_pipes(input: Any, output: Any) -> Classic:
    """A classic connection over two pipes (read end, write end). RPyC-compatible."""
    return factory.connect_pipes(input, output, _SERVICE)


def connect_stdpipes() -> Classic:
    """A classic connection over this process's stdin and stdout. RPyC-compatible."""
    return factory.connect_stdpipes(_SERVICE)


def connect(
    host: str, port: int = DEFAULT_SERVER_PORT, ipv6: bool = False, keepalive: bool = False
) -> Classic:
    """A classic connection over TCP. RPyC-compatible."""
    return factory.connect(host, port, _SERVICE, ipv6=ipv6, keepalive=keepalive)


def unix_connect(path: str) -> Classic:
    """A classic connection over a Unix domain socket. RPyC-compatible."""
    return factory.unix_connect(path, _SERVICE)


def ssl_connect(
    host: str,
    port: int = DEFAULT_SERVER_SSL_PORT,
    keyfile: str | None = None,
    certfile: str | None = None,
    ca_certs: str | None = None,
    cert_reqs: Any = None,
    ssl_version: Any = None,
    ciphers: str | None = None,
    ipv6: bool = False,
) -> Classic:
    """A classic connection over TLS. RPyC-compatible arguments.

    The TLS arguments mean what they mean for `grpyc.factory.ssl_connect`.
    Unlike RPyC, ``cert_reqs`` and ``ciphers`` are passed on, not dropped.
    """
    return factory.ssl_connect(
        host,
        port,
        keyfile=keyfile,
        certfile=certfile,
        ca_certs=ca_certs,
        cert_reqs=cert_reqs,
        ssl_version=ssl_version,
        ciphers=ciphers,
        service=_SERVICE,
        ipv6=ipv6,
    )


def ssh_connect(remote_machine: Any, remote_port: int) -> Classic:
    """A classic connection through an SSH tunnel (plumbum). RPyC-compatible.

    See `grpyc.factory.ssh_connect` for the arguments.
    """
    return factory.ssh_connect(remote_machine, remote_port, _SERVICE)


def connect_subproc(server_file: str | None = None) -> Classic:
    """Start a classic server in a child process; connect over its stdio. RPyC-compatible.

    Args:
        server_file: a script run as ``server_file -q -m stdio`` (RPyC's
            ``rpyc_classic.py`` interface). None runs this grpyc's own classic
            stdio server, importing grpyc from where this process found it.

    The child is ``conn.proc``.
    """
    if server_file is None:
        args = [sys.executable, "-u", "-c", _stdio_server_code()]
    else:
        args = [sys.executable, "-u", server_file, "-q", "-m", "stdio"]
    return factory.connect_subproc(args, _SERVICE)


def _stdio_server_code() -> str:
    package_parent = str(Path(__file__).resolve().parent.parent)
    return (
        f"import sys; sys.path.insert(0, {package_parent!r}); "
        "from grpyc.classic import _serve_stdio; _serve_stdio()"
    )


def _serve_stdio() -> None:
    """Serve `SlaveService` over this process's stdin/stdout until the peer leaves."""
    from grpyc.stream import PipeStream

    conn = factory.connect_stream(PipeStream.from_std(), SlaveService)
    conn.serve_all()


def connect_thread() -> Classic:
    """A classic connection to a classic server in this process. RPyC-compatible.

    The server end serves `SlaveService`: in one process, letting it drive
    the client end too (RPyC's `ClassicService`) would add nothing.
    """
    return factory.connect_thread(_SERVICE, remote_service=SlaveService)


def connect_multiprocess(args: dict[str, Any] | None = None) -> Classic:
    """A classic connection to a classic server in a new process. RPyC-compatible.

    Args:
        args: names and values (e.g. shared memory) given to the child's
            namespace, as `grpyc.factory.connect_multiprocess` does.
    """
    return factory.connect_multiprocess(_SERVICE, remote_service=_SERVICE, args=args)


# ---------------------------------------------------------- moving objects
def obtain(proxy: Any) -> Any:
    """A local copy of a remote object, made by pickling it there. RPyC-compatible.

    The peer must allow pickle (classic peers do). Unpickling here runs what
    the peer's pickle says: call it only on a trusted (classic) connection.
    A local object is copied through pickle too.
    """
    if isinstance(proxy, BaseNetref):
        data = syncreq(proxy, consts.HANDLE_PICKLE, pickle.DEFAULT_PROTOCOL)
        return pickle.loads(data)  # noqa: S301 - the caller asks for the peer's object
    return pickle.loads(pickle.dumps(proxy))  # noqa: S301 - our own bytes


def deliver(conn: Classic, localobj: Any) -> Any:
    """Copy a local object to the peer by pickle; returns a proxy. RPyC-compatible."""
    return conn.modules["pickle"].loads(pickle.dumps(localobj))


def teleport_function(
    conn: Classic, func: FunctionType, globals: dict[str, Any] | None = None, def_: bool = True
) -> Any:
    """Rebuild `func` at the peer from its bytecode; returns the peer's function.

    RPyC-compatible. Both sides must run the same Python minor version.
    Globals the function uses must exist at the peer, so import inside it.

    Args:
        conn: a classic connection.
        func: a plain function, not a closure; functions and lambdas
            defined inside it travel with it.
        globals: the peer-side globals for it; defaults to ``conn.namespace``.
        def_: also bind the function under its name in those globals.
    """
    from grpyc.teleportation import export_function

    _require_same_python(conn, func)
    if globals is None:
        globals = conn.namespace
    exported = export_function(func)
    return _remote_teleportation(conn).import_function(exported, globals, def_)


_LOCAL_PYTHON = tuple(sys.version_info[:2])


def _require_same_python(conn: Classic, func: FunctionType) -> None:
    """Refuse to teleport between Python minor versions: their bytecode differs.

    The export format (RPyC's) carries no version, so the peer is asked.
    """
    remote = tuple(conn.modules["sys"].version_info[:2])
    if remote != _LOCAL_PYTHON:
        raise ValueError(
            f"cannot teleport {func.__name__!r}: the peer runs Python "
            f"{remote[0]}.{remote[1]} and this side {_LOCAL_PYTHON[0]}.{_LOCAL_PYTHON[1]}; "
            "bytecode differs between Python versions"
        )


def _remote_teleportation(conn: Classic) -> Any:
    """The peer's teleportation module: that of the RPyC it runs (grpyc or stock).

    The export format is the same for both; preferring the package the peer
    already imported avoids importing the other one there.
    """
    loaded = conn.modules["sys"].modules
    if "grpyc" in loaded or "rpyc" not in loaded:
        with contextlib.suppress(ImportError):
            return conn.modules["grpyc.teleportation"]
    return conn.modules["rpyc.utils.teleportation"]


# ----------------------------------------------------------------- stdio
@contextlib.contextmanager
def redirected_stdio(conn: Classic) -> Iterator[None]:
    """Point the peer's stdin, stdout and stderr at ours for a while. RPyC-compatible.

    Inside the block, what the peer prints appears here and what it reads
    comes from here. The local side must let the peer use our streams, which
    the connections made by this module do.
    """
    remote_sys = conn.modules["sys"]
    saved = (remote_sys.stdin, remote_sys.stdout, remote_sys.stderr)
    try:
        remote_sys.stdin = sys.stdin
        remote_sys.stdout = sys.stdout
        remote_sys.stderr = sys.stderr
        yield
    finally:
        remote_sys.stdin, remote_sys.stdout, remote_sys.stderr = saved


def pm(conn: Classic) -> None:
    """``pdb.pm()`` on the peer's last exception, with its stdio here. RPyC-compatible."""
    with redirected_stdio(conn):
        conn.modules["pdb"].post_mortem(conn.root.getconn()._last_traceback)


def interact(conn: Classic, namespace: dict[str, Any] | None = None) -> None:
    """An interactive interpreter running at the peer, with its stdio here. RPyC-compatible.

    Args:
        conn: a classic connection.
        namespace: names the interpreter starts with (copied at the peer);
            ``conn`` is added to it.
    """
    if namespace is None:
        namespace = {}
    namespace["conn"] = conn
    with redirected_stdio(conn):
        remote_namespace = conn.builtins.dict(namespace)
        conn.modules["code"].interact(local=remote_namespace)


class MockClassicConnection:
    """A stand-in for a classic connection that runs everything locally. RPyC-compatible.

    Lets the same code run against a peer or in-process.
    """

    def __init__(self) -> None:
        self.root = Slave()
        MasterService._install(self, self.root)
