"""Classic-mode file transfer: upload and download files and directory trees.

The public functions are RPyC's (``rpyc.utils.classic``) and are exported by
`grpyc.classic`. A transfer plans first (which directories and files, how
many bytes), then moves each file in chunks of ``chunk_size`` bytes, one
request per chunk: time is linear in the size and neither side ever holds
more than a chunk of a file.

Names are checked before anything is written. Each entry name a directory
transfer takes from a listing (the peer's for a download, ours for an upload)
must be one plain path component of the side it is written to: not empty,
``.`` or ``..``, no separator, no NUL, no drive, not absolute. A download
also never writes through a symbolic link that is inside the destination
when it starts. Unlike RPyC, which joins whatever the peer lists, a name
that would leave the destination is refused with `ValueError` and nothing
is written (docs/semantics.md, "Classic file transfer").
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import ntpath
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from grpyc import consts

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "download",
    "download_dir",
    "download_file",
    "upload",
    "upload_dir",
    "upload_file",
    "upload_module",
    "upload_package",
]

# One request per chunk: 256 KiB keeps the per-request cost (a round trip)
# small next to the copying, and a chunk far below any frame limit.
DEFAULT_CHUNK_SIZE = consts.STREAM_CHUNK

# Paths per remote ``map`` call while listing a directory: keeps each request
# a few hundred KiB even for huge directories.
_MAP_BATCH = 4096

# The path flavours a peer may have. Its ``os.path.__name__`` picks one; any
# other answer is refused rather than imported here.
_PATH_FLAVOURS: dict[str, ModuleType] = {"posixpath": posixpath, "ntpath": ntpath}

# Creates a local file of a download; O_NOFOLLOW: never through a symlink.
_CONFINED_OPEN_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
)

Progress = Callable[[int, int], Any]
Classic = Any  # a Connection with the attributes MasterService installs


# ------------------------------------------------------------------ names
def unsafe_name_reason(name: object, path: ModuleType) -> str | None:
    """Why `name` is not one plain path component for `path` (a flavour), or None.

    Pure: no file system access. `path` is ``posixpath`` or ``ntpath``.
    """
    if type(name) is not str:
        return f"it is a {type(name).__name__}, not a str"
    if name in ("", ".", ".."):
        return "it is not a file name"
    if "\0" in name:
        return "it contains NUL"
    if path.isabs(name):
        return "it is an absolute path"
    if path.splitdrive(name)[0]:
        return "it names a drive"
    for separator in (path.sep, path.altsep):
        if separator and separator in name:
            return f"it contains the separator {separator!r}"
    return None


def _check_name(name: object, path: ModuleType, listed_by: str, directory: str, dest: str) -> str:
    reason = unsafe_name_reason(name, path)
    if reason is not None:
        raise ValueError(
            f"refusing the name {name!r} listed by {listed_by} in {directory!r}: {reason}; "
            f"copying it could write outside {dest!r}"
        )
    assert type(name) is str
    return name


def _remote_path_module(conn: Classic) -> ModuleType:
    """The peer's ``os.path`` flavour (posixpath or ntpath), to join its paths here.

    Joining remote paths locally saves a round trip per file. The flavour's
    name comes from the peer, so only the two real ones are accepted.
    """
    name = conn.modules["os.path"].__name__
    flavour = _PATH_FLAVOURS.get(name) if type(name) is str else None
    if flavour is None:
        raise ValueError(f"the peer's os.path is {name!r}, not posixpath or ntpath")
    return flavour


# ------------------------------------------------------------------- plans
@dataclass(frozen=True, slots=True)
class _File:
    source: str
    target: str
    size: int


@dataclass(slots=True)
class _Plan:
    """What a transfer does: directories to create, then files to copy.

    ``confined_to`` is the local directory a download writes into when the
    names below it come from the peer: no write may go through a symlink
    below it. None for uploads and single files (the caller named the path).
    """

    dirs: list[str]
    files: list[_File]
    confined_to: str | None = None

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


@contextlib.contextmanager
def _closing_remote(remote_file: Any) -> Iterator[Any]:
    """Close a remote file on the way out (one CALLATTR, no CTXEXIT traceback)."""
    try:
        yield remote_file
    finally:
        remote_file.close()


# ---------------------------------------------------------------- the walk
_Entry = tuple[str, str, str, int]  # (kind, source path, target path, size)


class _Transfer:
    """One direction of copying: the walk and the run both directions share.

    A subclass supplies its direction's primitives: the `size` of a source
    file, `list_dir` (the wanted entries of a source directory, names
    checked), and `make_dir` and `copy` on the target side.
    """

    # Downloads write names the peer listed: their writes stay below the target.
    CONFINES_DIRS = False

    def __init__(self, conn: Classic, chunk_size: int) -> None:
        _check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        self.remote_path = _remote_path_module(conn)

    def file_plan(self, source: str, target: str) -> _Plan:
        return _Plan([], [_File(source, target, self.size(source))])

    def plan_dir(self, source: str, target: str, filter: Callable[[str], bool] | None) -> _Plan:
        plan = _Plan([], [], confined_to=target if self.CONFINES_DIRS else None)
        # An explicit stack: no recursion limit, and each entry is handled once
        # whatever the depth. A directory is planned before its contents.
        pending = [(source, target)]
        while pending:
            source_dir, target_dir = pending.pop()
            plan.dirs.append(target_dir)
            for kind, entry_source, entry_target, size in self.list_dir(
                source_dir, target_dir, filter, target
            ):
                if kind == "dir":
                    pending.append((entry_source, entry_target))
                else:
                    plan.files.append(_File(entry_source, entry_target, size))
        return plan

    def run(self, plan: _Plan, progress: Progress | None) -> None:
        if plan.confined_to is not None:
            _refuse_links_below(plan.confined_to, plan)
        meter = _Meter(progress, plan.total)
        for directory in plan.dirs:
            self.make_dir(directory)
        for item in plan.files:
            self.copy(item, meter, plan.confined_to is not None)

    def size(self, source: str) -> int:
        raise NotImplementedError

    def list_dir(
        self, source: str, target: str, filter: Callable[[str], bool] | None, dest: str
    ) -> Iterator[_Entry]:
        """``(kind, source path, target path, size)`` of the wanted entries of a directory.

        Every name is checked before it is used (see the module docstring);
        `dest` is the transfer's top target, for the error message.
        """
        raise NotImplementedError

    def make_dir(self, path: str) -> None:
        raise NotImplementedError

    def copy(self, item: _File, meter: _Meter, confined: bool) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- upload
class _Uploader(_Transfer):
    """Copies local files and directories to the peer."""

    def __init__(self, conn: Classic, chunk_size: int) -> None:
        super().__init__(conn, chunk_size)
        # Remote functions fetched once: each attribute read is a round trip.
        self.remote_makedirs = conn.modules["os"].makedirs
        self.remote_open = conn.builtins.open

    def size(self, source: str) -> int:
        return os.path.getsize(source)

    def make_dir(self, path: str) -> None:
        self.remote_makedirs(path, exist_ok=True)

    def list_dir(
        self, source: str, target: str, filter: Callable[[str], bool] | None, dest: str
    ) -> Iterator[_Entry]:
        for name in sorted(os.listdir(source)):
            if filter is not None and not filter(name):
                continue
            path = os.path.join(source, name)
            # A local name is checked in the peer's flavour: "..\\x" is a
            # plain name here but climbs out of the target on Windows.
            _check_name(name, self.remote_path, "this side", source, dest)
            if os.path.isdir(path):
                yield "dir", path, self.remote_path.join(target, name), 0
            elif os.path.isfile(path):
                yield "file", path, self.remote_path.join(target, name), os.path.getsize(path)

    def copy(self, item: _File, meter: _Meter, confined: bool) -> None:
        with (
            open(item.source, "rb") as local_file,
            _closing_remote(self.remote_open(item.target, "wb")) as remote_file,
        ):
            write = remote_file.write
            while chunk := local_file.read(self.chunk_size):
                write(chunk)
                meter.add(len(chunk))


# -------------------------------------------------------------- download
class _Downloader(_Transfer):
    """Copies the peer's files and directories here."""

    CONFINES_DIRS = True

    def __init__(self, conn: Classic, chunk_size: int) -> None:
        super().__init__(conn, chunk_size)
        # Remote functions fetched once: each attribute read is a round trip.
        remote_ospath = conn.modules["os.path"]
        self.remote_isdir = remote_ospath.isdir
        self.remote_isfile = remote_ospath.isfile
        self.remote_getsize = remote_ospath.getsize
        self.remote_listdir = conn.modules["os"].listdir
        self.remote_open = conn.builtins.open
        self.remote_tuple = conn.builtins.tuple
        self.remote_map = conn.builtins.map

    def kind(self, remote: str) -> str | None:
        if self.remote_isdir(remote) is True:
            return "dir"
        if self.remote_isfile(remote) is True:
            return "file"
        return None

    def size(self, source: str) -> int:
        return _size(self.remote_getsize(source), source)

    def make_dir(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def _remote_map(self, func: Any, items: tuple[str, ...]) -> tuple[Any, ...]:
        """``func`` over ``items`` at the peer: two round trips per batch of paths."""
        results: list[Any] = []
        for start in range(0, len(items), _MAP_BATCH):
            batch = items[start : start + _MAP_BATCH]
            results += _by_value(self.remote_tuple(self.remote_map(func, batch)), "answer")
        return tuple(results)

    def list_dir(
        self, source: str, target: str, filter: Callable[[str], bool] | None, dest: str
    ) -> Iterator[_Entry]:
        # A fixed number of round trips per directory, not per entry. Entries
        # that are neither files nor directories (broken links...) are skipped.
        # tuple() at the peer: the names come back as one value, not item by item.
        listing = _by_value(
            self.remote_tuple(self.remote_listdir(source)), f"listing of {source!r}"
        )
        checked = [_check_name(name, os.path, "the peer", source, dest) for name in listing]
        names = [name for name in sorted(checked) if filter is None or filter(name)]
        paths = tuple(self.remote_path.join(source, name) for name in names)
        is_dir = self._remote_map(self.remote_isdir, paths)
        is_file = self._remote_map(self.remote_isfile, paths)
        files = tuple(path for path, flag in zip(paths, is_file, strict=True) if flag is True)
        sizes = dict(zip(files, self._remote_map(self.remote_getsize, files), strict=True))
        for name, path, dir_flag in zip(names, paths, is_dir, strict=True):
            if dir_flag is True:
                yield "dir", path, os.path.join(target, name), 0
            elif path in sizes:
                yield "file", path, os.path.join(target, name), _size(sizes[path], path)

    def copy(self, item: _File, meter: _Meter, confined: bool) -> None:
        with (
            _closing_remote(self.remote_open(item.source, "rb")) as remote_file,
            _open_local_target(item.target, confined) as local_file,
        ):
            read = remote_file.read
            while chunk := _chunk(read(self.chunk_size), item.source):
                local_file.write(chunk)
                meter.add(len(chunk))


def _by_value(value: Any, what: str) -> tuple[Any, ...]:
    # A tuple comes by value; anything else would be a proxy, each use a call.
    if type(value) is not tuple:
        raise ValueError(f"the peer's {what} is a {type(value).__name__}, not a tuple")
    return value


def _chunk(value: Any, path: str) -> bytes:
    if type(value) is not bytes:
        raise ValueError(f"the peer read a {type(value).__name__} from {path!r}, not bytes")
    return value


def _size(value: Any, path: str) -> int:
    # Sizes only feed progress reports, but a non-int would be a remote call.
    if type(value) is not int or value < 0:
        raise ValueError(f"the peer gave the size of {path!r} as {value!r}, not an int >= 0")
    return value


def _refuse_links_below(root: str, plan: _Plan) -> None:
    """Refuse a plan that would write through a symlink below `root` (root may be one)."""
    for path in [*plan.dirs, *(item.target for item in plan.files)]:
        if path != root and os.path.islink(path):
            raise ValueError(
                f"refusing to write {path!r}: it is a symbolic link inside the "
                f"destination {root!r}, and could lead outside it"
            )


def _open_local_target(path: str, confined: bool) -> Any:
    if not confined:
        return open(path, "wb")
    try:
        descriptor = os.open(path, _CONFINED_OPEN_FLAGS, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(
                f"refusing to write {path!r}: it became a symbolic link during the transfer"
            ) from exc
        raise
    return os.fdopen(descriptor, "wb")


# ----------------------------------------------------------- public API
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
            `ignore_invalid`); `chunk_size` < 1; an entry name is not a plain
            file name at the peer (e.g. ``a\\b`` for a Windows peer), or the
            peer's ``os.path`` is neither posixpath nor ntpath. Nothing is
            copied then.
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
    uploader.run(uploader.file_plan(localpath, remotepath), progress)


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
    two paths swapped. Everything a directory download writes stays inside
    `localpath`.

    Raises:
        ValueError: `remotepath` is neither a file nor a directory at the
            peer (unless `ignore_invalid`); `chunk_size` < 1; the peer lists
            a name that is not a plain file name here (``..``, ``/etc/x``,
            ``a/b``, NUL, not a str), or answers with something else than
            a tuple of names, an int size or bytes read; a path to write is
            a symbolic link inside `localpath`. Nothing is written when a
            name is refused. Unlike RPyC, which writes wherever such names
            lead.
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
