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

File transfers plan first (which directories and files, how many bytes),
then move each file in chunks of ``chunk_size`` bytes, one request per
chunk: time is linear in the size and neither side ever holds more than a
chunk of a file.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

from grpyc import consts, factory
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

# One request per chunk: 256 KiB keeps the per-request cost (a round trip)
# small next to the copying, and a chunk far below any frame limit.
DEFAULT_CHUNK_SIZE = consts.STREAM_CHUNK

# Paths per remote ``map`` call while listing a directory: keeps each request
# a few hundred KiB even for huge directories.
_MAP_BATCH = 4096

Progress = Callable[[int, int], Any]
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


# ------------------------------------------------------------ transfers
@dataclass(frozen=True, slots=True)
class _File:
    source: str
    target: str
    size: int


@dataclass(slots=True)
class _Plan:
    """What a transfer does: directories to create, then files to copy."""

    dirs: list[str]
    files: list[_File]

    @property
    def total(self) -> int:
        return sum(item.size for item in self.files)


class _Meter:
    """Counts bytes moved and reports them to the caller's callback."""

    __slots__ = ("done", "progress", "total")

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        if progress is not None:
            progress(0, total)

    def add(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total)


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")


def _remote_path_module(conn: Classic) -> ModuleType:
    """The peer's ``os.path`` flavour (posixpath or ntpath), imported here.

    Joining remote paths locally saves a round trip per file.
    """
    return importlib.import_module(str(conn.modules["os.path"].__name__))


class _Uploader:
    """Copies local files and directories to the peer."""

    def __init__(self, conn: Classic, chunk_size: int) -> None:
        _check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        # Remote functions fetched once: each attribute read is a round trip.
        self.remote_makedirs = conn.modules["os"].makedirs
        self.remote_open = conn.builtins.open
        self.remote_path = _remote_path_module(conn)

    def plan_dir(self, local: str, remote: str, filter: Callable[[str], bool] | None) -> _Plan:
        plan = _Plan([], [])
        # An explicit stack: no recursion limit, and each entry is handled once
        # whatever the depth. A directory is planned before its contents.
        pending = [(local, remote)]
        while pending:
            local_dir, remote_dir = pending.pop()
            plan.dirs.append(remote_dir)
            for name in sorted(os.listdir(local_dir)):
                if filter is not None and not filter(name):
                    continue
                source = os.path.join(local_dir, name)
                target = self.remote_path.join(remote_dir, name)
                if os.path.isdir(source):
                    pending.append((source, target))
                elif os.path.isfile(source):
                    plan.files.append(_File(source, target, os.path.getsize(source)))
        return plan

    def run(self, plan: _Plan, progress: Progress | None) -> None:
        meter = _Meter(progress, plan.total)
        for directory in plan.dirs:
            self.remote_makedirs(directory, exist_ok=True)
        for item in plan.files:
            self.copy(item, meter)

    def copy(self, item: _File, meter: _Meter) -> None:
        with (
            open(item.source, "rb") as local_file,
            _closing_remote(self.remote_open(item.target, "wb")) as remote_file,
        ):
            write = remote_file.write
            while chunk := local_file.read(self.chunk_size):
                write(chunk)
                meter.add(len(chunk))


class _Downloader:
    """Copies the peer's files and directories here."""

    def __init__(self, conn: Classic, chunk_size: int) -> None:
        _check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        # Remote functions fetched once: each attribute read is a round trip.
        remote_ospath = conn.modules["os.path"]
        self.remote_isdir = remote_ospath.isdir
        self.remote_isfile = remote_ospath.isfile
        self.remote_getsize = remote_ospath.getsize
        self.remote_listdir = conn.modules["os"].listdir
        self.remote_open = conn.builtins.open
        self.remote_tuple = conn.builtins.tuple
        self.remote_map = conn.builtins.map
        self.remote_path = _remote_path_module(conn)

    def kind(self, remote: str) -> str | None:
        if self.remote_isdir(remote):
            return "dir"
        if self.remote_isfile(remote):
            return "file"
        return None

    def file_plan(self, remote: str, local: str) -> _Plan:
        return _Plan([], [_File(remote, local, self.remote_getsize(remote))])

    def _remote_map(self, func: Any, items: tuple[str, ...]) -> tuple[Any, ...]:
        """``func`` over ``items`` at the peer: two round trips per batch of paths."""
        results: list[Any] = []
        for start in range(0, len(items), _MAP_BATCH):
            batch = items[start : start + _MAP_BATCH]
            results += self.remote_tuple(self.remote_map(func, batch))
        return tuple(results)

    def plan_dir(self, remote: str, local: str, filter: Callable[[str], bool] | None) -> _Plan:
        plan = _Plan([], [])
        # An explicit stack, as in `_Uploader.plan_dir`.
        pending = [(remote, local)]
        while pending:
            remote_dir, local_dir = pending.pop()
            plan.dirs.append(local_dir)
            for kind, source, target, size in self._list_dir(remote_dir, local_dir, filter):
                if kind == "dir":
                    pending.append((source, target))
                else:
                    plan.files.append(_File(source, target, size))
        return plan

    def _list_dir(
        self, remote: str, local: str, filter: Callable[[str], bool] | None
    ) -> Iterator[tuple[str, str, str, int]]:
        """``(kind, remote path, local path, size)`` of the wanted entries of a directory.

        A fixed number of round trips per directory, not per entry. Entries
        that are neither files nor directories (broken links...) are skipped.
        """
        # tuple() at the peer: the names come back as one value, not item by item.
        listing = self.remote_tuple(self.remote_listdir(remote))
        names = [name for name in sorted(listing) if filter is None or filter(name)]
        paths = tuple(self.remote_path.join(remote, name) for name in names)
        is_dir = self._remote_map(self.remote_isdir, paths)
        is_file = self._remote_map(self.remote_isfile, paths)
        files = tuple(path for path, flag in zip(paths, is_file, strict=True) if flag)
        sizes = dict(zip(files, self._remote_map(self.remote_getsize, files), strict=True))
        for name, path, dir_flag in zip(names, paths, is_dir, strict=True):
            if dir_flag:
                yield "dir", path, os.path.join(local, name), 0
            elif path in sizes:
                yield "file", path, os.path.join(local, name), int(sizes[path])

    def run(self, plan: _Plan, progress: Progress | None) -> None:
        meter = _Meter(progress, plan.total)
        for directory in plan.dirs:
            os.makedirs(directory, exist_ok=True)
        for item in plan.files:
            self.copy(item, meter)

    def copy(self, item: _File, meter: _Meter) -> None:
        with (
            _closing_remote(self.remote_open(item.source, "rb")) as remote_file,
            open(item.target, "wb") as local_file,
        ):
            read = remote_file.read
            while chunk := read(self.chunk_size):
                local_file.write(chunk)
                meter.add(len(chunk))


@contextlib.contextmanager
def _closing_remote(remote_file: Any) -> Iterator[Any]:
    """Close a remote file on the way out (one CALLATTR, no CTXEXIT traceback)."""
    try:
        yield remote_file
    finally:
        remote_file.close()


def upload(
    conn: Classic,
    localpath: str,
    remotepath: str,
    filter: Callable[[str], bool] | None = None,
    ignore_invalid: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> None:
    """Copy a local file or directory tree to `remotepath` at the peer. RPyC-compatible.

    Args:
        conn: a classic connection.
        localpath: the file or directory to copy.
        remotepath: where it goes at the peer (directories are created).
        filter: ``filter(name) -> bool`` for each entry name inside a
            directory, at every level; None copies everything.
        ignore_invalid: if `localpath` is neither a file nor a directory, do
            nothing instead of raising.
        chunk_size: bytes per request.
        progress: ``progress(bytes_done, bytes_total)``, called with 0 first
            and after every chunk; the total counts every file of the call.

    Raises:
        ValueError: `localpath` is neither a file nor a directory (unless
            `ignore_invalid`), or `chunk_size` < 1.
    """
    if os.path.isdir(localpath):
        upload_dir(conn, localpath, remotepath, filter, chunk_size, progress)
    elif os.path.isfile(localpath):
        upload_file(conn, localpath, remotepath, chunk_size, progress)
    elif not ignore_invalid:
        raise ValueError(f"cannot upload {localpath!r}: not a file or a directory")


def upload_file(
    conn: Classic,
    localpath: str,
    remotepath: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> None:
    """Copy one local file to `remotepath` at the peer. RPyC-compatible; see `upload`."""
    uploader = _Uploader(conn, chunk_size)
    plan = _Plan([], [_File(localpath, remotepath, os.path.getsize(localpath))])
    uploader.run(plan, progress)


def upload_dir(
    conn: Classic,
    localpath: str,
    remotepath: str,
    filter: Callable[[str], bool] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> None:
    """Copy a local directory tree to `remotepath` at the peer. RPyC-compatible; see `upload`."""
    uploader = _Uploader(conn, chunk_size)
    uploader.run(uploader.plan_dir(localpath, remotepath, filter), progress)


def download(
    conn: Classic,
    remotepath: str,
    localpath: str,
    filter: Callable[[str], bool] | None = None,
    ignore_invalid: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> None:
    """Copy the peer's file or directory tree at `remotepath` here. RPyC-compatible.

    The arguments mean what they mean for `upload`, with the roles of the
    two paths swapped.

    Raises:
        ValueError: `remotepath` is neither a file nor a directory at the
            peer (unless `ignore_invalid`), or `chunk_size` < 1.
    """
    downloader = _Downloader(conn, chunk_size)
    kind = downloader.kind(remotepath)
    if kind == "dir":
        plan = downloader.plan_dir(remotepath, localpath, filter)
    elif kind == "file":
        plan = downloader.file_plan(remotepath, localpath)
    elif ignore_invalid:
        return
    else:
        raise ValueError(f"cannot download {remotepath!r}: not a file or a directory at the peer")
    downloader.run(plan, progress)


def download_file(
    conn: Classic,
    remotepath: str,
    localpath: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> None:
    """Copy one file of the peer here. RPyC-compatible; see `download`."""
    downloader = _Downloader(conn, chunk_size)
    downloader.run(downloader.file_plan(remotepath, localpath), progress)


def download_dir(
    conn: Classic,
    remotepath: str,
    localpath: str,
    filter: Callable[[str], bool] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> None:
    """Copy a directory tree of the peer here. RPyC-compatible; see `download`."""
    downloader = _Downloader(conn, chunk_size)
    downloader.run(downloader.plan_dir(remotepath, localpath, filter), progress)


def upload_package(
    conn: Classic,
    module: ModuleType,
    remotepath: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> None:
    """Copy a local package (or single-file module) to the peer. RPyC-compatible.

    Args:
        conn: a classic connection.
        module: the imported package or module.
        remotepath: where it goes; defaults to the peer's ``purelib``
            directory (``sysconfig``) plus the module's dotted path.
        chunk_size: bytes per request.
        progress: as for `upload`.

    Unlike RPyC (which copies the whole directory around a single-file
    module), a plain module is copied as its one file, and ``__pycache__``
    directories are left out.
    """
    source = inspect.getsourcefile(module)
    if source is None:
        raise ValueError(f"cannot upload {module.__name__!r}: it has no source file")
    is_package = hasattr(module, "__path__")
    if remotepath is None:
        site = str(conn.modules["sysconfig"].get_paths()["purelib"])
        parts = module.__name__.split(".")
        if not is_package:
            parts[-1] += ".py"
        remotepath = _remote_path_module(conn).join(site, *parts)
    if is_package:
        upload_dir(
            conn,
            os.path.dirname(os.path.abspath(source)),
            remotepath,
            filter=lambda name: name != "__pycache__",
            chunk_size=chunk_size,
            progress=progress,
        )
    else:
        upload_file(conn, source, remotepath, chunk_size, progress)


upload_module = upload_package


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
