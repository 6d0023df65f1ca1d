"""grpyc.classic over real connections: connecting, moving objects, transfers, stdio.

Most tests use an in-process pair (SlaveService <-> ClassicService). Those
that redirect stdio run against a classic server in a child process (the
stdio server `connect_subproc` starts), since in one process the "remote"
``sys`` is our own.
"""

import importlib
import io
import ntpath
import os
import posixpath
import re
import sys
import sysconfig
from pathlib import Path

import gevent
import gevent.socket
import gevent.subprocess
import pytest

from grpyc import _transfer, classic, consts, factory
from grpyc.channel import Channel
from grpyc.netref import BaseNetref
from grpyc.server import Server
from grpyc.service import ClassicService, SlaveService
from grpyc.stream import SocketStream

MIB = 1024 * 1024


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def classic_pair(make_pair):
    """(server_conn, client_conn): the client is a classic connection."""
    return make_pair(server_service=SlaveService(), client_service=ClassicService())


@pytest.fixture
def conn(classic_pair):
    return classic_pair[1]


@pytest.fixture(scope="module")
def child():
    """A classic connection to `classic._serve_stdio` in a child process."""
    proc = gevent.subprocess.Popen(
        [sys.executable, "-u", "-c", classic._stdio_server_code()],
        stdin=gevent.subprocess.PIPE,
        stdout=gevent.subprocess.PIPE,
    )
    conn = classic.connect_pipes(proc.stdout, proc.stdin)
    yield conn
    conn.close()
    assert proc.wait(timeout=10) == 0


@pytest.fixture
def slave_server():
    server = Server(SlaveService, hostname="127.0.0.1", port=0)
    server.listen()
    yield server
    server.close()


def _check_classic(conn):
    conn.execute("x = 6 * 7")
    assert conn.eval("x") == 42
    assert conn.namespace["x"] == 42
    assert conn.modules.os.path.join("a", "b") == os.path.join("a", "b")
    assert conn.modules["os.path"].basename("/a/b") == "b"
    assert conn.builtins.len([1, 2]) == 2
    assert conn.builtin is conn.builtins


# ------------------------------------------------------------- connecting
def test_constants_match_rpyc():
    assert classic.DEFAULT_SERVER_PORT == 18812
    assert classic.DEFAULT_SERVER_SSL_PORT == 18821


def test_connect_over_tcp(slave_server):
    with classic.connect("127.0.0.1", slave_server.port) as conn:
        _check_classic(conn)


def test_unix_connect(tmp_path):
    path = str(tmp_path / "classic.sock")
    server = Server(SlaveService, socket_path=path)
    server.listen()
    try:
        with classic.unix_connect(path) as conn:
            _check_classic(conn)
    finally:
        server.close()


def test_connect_stream_and_channel():
    left, right = gevent.socket.socketpair()
    right_too, left_too = gevent.socket.socketpair()
    server1 = SlaveService()._connect(Channel(SocketStream(left)), {})
    server2 = SlaveService()._connect(Channel(SocketStream(left_too)), {})
    try:
        with classic.connect_stream(SocketStream(right)) as conn:
            _check_classic(conn)
        with classic.connect_channel(Channel(SocketStream(right_too))) as conn:
            _check_classic(conn)
    finally:
        server1.close()
        server2.close()


def test_connect_pipes_to_stdio_server_in_child(child):
    _check_classic(child)
    assert child.modules.os.getpid() != os.getpid()


def test_classic_connection_serves_classic_service_locally(classic_pair):
    # As in RPyC, the local side of a classic connection is a ClassicService:
    # the peer can drive this process too (redirected_stdio relies on it).
    server, _ = classic_pair
    assert server.root.eval("1 + 1") == 2


def test_connect_subproc_runs_stdio_server():
    conn = classic.connect_subproc()
    try:
        assert conn.modules.os.getpid() == conn.proc.pid
        _check_classic(conn)
    finally:
        conn.close()
        conn.proc.wait()


def test_connect_thread():
    with classic.connect_thread() as conn:
        _check_classic(conn)


def test_factory_connect_thread_with_classic_service_on_both_ends():
    # Both ends' on_connect call the other end (classic services fetch the
    # peer's root): neither may wait for an end that does not exist yet.
    conn = factory.connect_thread(
        ClassicService, remote_service=ClassicService, remote_config={"sync_request_timeout": 2}
    )
    with conn:
        _check_classic(conn)


def test_connect_multiprocess_shares_args():
    import multiprocessing

    shared = multiprocessing.get_context("spawn").Value("i", 0)
    conn = classic.connect_multiprocess(args={"shared": shared})
    try:
        assert conn.modules.os.getpid() == conn.proc.pid
        conn.execute("shared.value = 42")
        assert shared.value == 42
    finally:
        conn.close()
        conn.proc.join(10)


def test_ssl_connect(tmp_path):
    from grpyc.authenticators import SSLAuthenticator
    from tests.certs import make_pki

    pki = make_pki(tmp_path)
    authenticator = SSLAuthenticator(pki.server_key, pki.server_cert, ca_certs=pki.ca_cert)
    server = Server(SlaveService, hostname="127.0.0.1", port=0, authenticator=authenticator)
    server.listen()
    try:
        conn = classic.ssl_connect(
            "127.0.0.1",
            server.port,
            keyfile=str(pki.client_key),
            certfile=str(pki.client_cert),
            ca_certs=str(pki.ca_cert),
        )
        with conn:
            _check_classic(conn)
    finally:
        server.close()


class FakeRemoteMachine:
    """Stands in for a plumbum SshMachine: the 'tunnel' is a classic server."""

    def __init__(self):
        self.servers = []

    def tunnel(self, local_port, remote_port):
        server = Server(SlaveService, hostname="127.0.0.1", port=local_port)
        server.listen()
        self.servers.append((remote_port, server))
        return server


def test_ssh_connect_through_tunnel():
    machine = FakeRemoteMachine()
    conn = classic.ssh_connect(machine, 18812)
    try:
        _check_classic(conn)
        assert [port for port, _ in machine.servers] == [18812]
    finally:
        conn.close()
    assert not machine.servers[0][1].active


# ---------------------------------------------------------- moving objects
def test_obtain_copies_remote_object(conn):
    remote = conn.eval("{'a': [1, 2], 'b': (3, 'x')}")
    assert isinstance(remote, BaseNetref)
    local = classic.obtain(remote)
    assert type(local) is dict
    assert local == {"a": [1, 2], "b": (3, "x")}
    local["a"].append(3)
    assert list(remote["a"]) == [1, 2]


def test_obtain_copies_local_object():
    original = {"k": [1]}
    copy = classic.obtain(original)
    assert copy == original
    assert copy is not original
    assert copy["k"] is not original["k"]


def test_obtain_refused_when_peer_forbids_pickle(pair):
    _, client = pair
    with pytest.raises(ValueError, match="pickling is disabled"):
        classic.obtain(client.root.make_list(1, 2))


def test_deliver_copies_local_object_to_peer(conn):
    local = {"a": [1, 2]}
    remote = classic.deliver(conn, local)
    assert isinstance(remote, BaseNetref)
    conn.namespace["delivered"] = remote
    conn.execute("delivered['a'].append(3)")
    assert conn.eval("delivered['a']")[2] == 3
    assert local == {"a": [1, 2]}


def scale(value, factor=3):
    import math

    def floor(x):
        return math.floor(x)

    return floor(value * factor)


def test_teleport_function_runs_at_peer(child):
    remote_scale = classic.teleport_function(child, scale)
    assert isinstance(remote_scale, BaseNetref)
    assert remote_scale(2.5) == 7
    assert child.eval("scale(2, factor=4)") == 8


def test_teleport_function_refuses_another_python_version(child, monkeypatch):
    monkeypatch.setattr(classic, "_LOCAL_PYTHON", (3, 99))

    def answer():
        return 42

    with pytest.raises(ValueError, match=r"peer runs Python 3\.\d+ and this side 3\.99"):
        classic.teleport_function(child, answer)


def test_teleport_function_refuses_closure(child):
    factor = 2

    def closure(x):
        return x * factor

    with pytest.raises(TypeError, match="closure over factor"):
        classic.teleport_function(child, closure)


def test_teleport_function_without_def_leaves_namespace_alone(child):
    def get_pid():
        import os

        return os.getpid()

    remote_globals = child.builtins.dict()
    remote_get_pid = classic.teleport_function(child, get_pid, remote_globals, def_=False)
    assert remote_get_pid() == child.modules.os.getpid()
    assert "get_pid" not in child.namespace
    assert "get_pid" not in remote_globals


def test_connection_teleport_attribute(conn):
    def double(x):
        return x * 2

    assert conn.teleport(double)(21) == 42


def test_mock_classic_connection_runs_locally():
    mock = classic.MockClassicConnection()
    mock.execute("y = 5")
    assert mock.eval("y * 2") == 10
    assert mock.modules.os is os
    assert mock.builtins.len("abc") == 3


# -------------------------------------------------------------- transfers
def make_tree(root: Path) -> Path:
    root.mkdir()
    (root / "empty.txt").write_bytes(b"")
    (root / "small.txt").write_bytes(b"hello\n")
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "nested" / "deeper" / "data.bin").write_bytes(os.urandom(1000))
    (root / "nested" / "skip.log").write_bytes(b"log")
    (root / "empty_dir").mkdir()
    (root / "big.bin").write_bytes(os.urandom(3 * MIB + 12345))
    return root


def snapshot(root: Path) -> dict:
    """Relative path -> bytes (files), None (directories) or ("link", target),
    for the whole tree."""
    tree = {}
    for path in root.rglob("*"):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            tree[key] = ("link", os.readlink(path))
        else:
            tree[key] = None if path.is_dir() else path.read_bytes()
    return tree


def test_upload_and_download_tree_byte_for_byte(conn, tmp_path):
    source = make_tree(tmp_path / "source")
    classic.upload(conn, str(source), str(tmp_path / "remote" / "copy"))
    assert snapshot(tmp_path / "remote" / "copy") == snapshot(source)
    classic.download(conn, str(tmp_path / "remote" / "copy"), str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(source)


def test_upload_and_download_tree_with_child_process(child, tmp_path):
    source = make_tree(tmp_path / "source")
    classic.upload_dir(child, str(source), str(tmp_path / "remote"))
    assert snapshot(tmp_path / "remote") == snapshot(source)
    classic.download_dir(child, str(tmp_path / "remote"), str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(source)


def test_deep_and_wide_tree_round_trip(conn, tmp_path, monkeypatch):
    # Small listing batches exercise the batched remote map at the peer.
    monkeypatch.setattr(_transfer, "_MAP_BATCH", 3)
    source = tmp_path / "source"
    level = source
    for depth in range(40):
        level = level / f"d{depth}"
        level.mkdir(parents=True)
        (level / "f.txt").write_bytes(b"x" * depth)
    for index in range(10):
        (source / f"wide{index}.txt").write_bytes(bytes([index]) * index)
    classic.upload(conn, str(source), str(tmp_path / "up"))
    assert snapshot(tmp_path / "up") == snapshot(source)
    classic.download(conn, str(tmp_path / "up"), str(tmp_path / "down"))
    assert snapshot(tmp_path / "down") == snapshot(source)


def test_upload_and_download_single_file(conn, tmp_path):
    source = tmp_path / "one.bin"
    source.write_bytes(os.urandom(200_000))
    classic.upload(conn, str(source), str(tmp_path / "up.bin"))
    classic.download(conn, str(tmp_path / "up.bin"), str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == source.read_bytes()
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(1000))
    classic.upload_file(conn, str(small), str(tmp_path / "up2.bin"), chunk_size=7)
    classic.download_file(conn, str(tmp_path / "up2.bin"), str(tmp_path / "down2.bin"))
    assert (tmp_path / "down2.bin").read_bytes() == small.read_bytes()


def test_empty_file_round_trip(conn, tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    calls = []
    progress = lambda done, total: calls.append((done, total))  # noqa: E731
    classic.upload_file(conn, str(tmp_path / "empty"), str(tmp_path / "up"), progress=progress)
    classic.download_file(conn, str(tmp_path / "up"), str(tmp_path / "down"), progress=progress)
    assert (tmp_path / "down").read_bytes() == b""
    assert calls == [(0, 0), (0, 0)]


def test_filter_applies_to_names_at_every_level(conn, tmp_path):
    source = make_tree(tmp_path / "source")
    wanted = {key: value for key, value in snapshot(source).items() if not key.endswith(".log")}
    classic.upload(conn, str(source), str(tmp_path / "up"), filter=lambda n: n != "skip.log")
    assert snapshot(tmp_path / "up") == wanted
    classic.download(
        conn, str(source), str(tmp_path / "down"), filter=lambda n: not n.endswith(".log")
    )
    assert snapshot(tmp_path / "down") == wanted


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_progress_reports_every_chunk_of_the_whole_tree(conn, tmp_path, direction):
    source = make_tree(tmp_path / "source")
    sizes = [p.stat().st_size for p in source.rglob("*") if p.is_file()]
    total = sum(sizes)
    chunk = 64 * 1024
    calls = []
    transfer = classic.upload if direction == "upload" else classic.download
    transfer(
        conn,
        str(source),
        str(tmp_path / "dest"),
        chunk_size=chunk,
        progress=lambda done, of: calls.append((done, of)),
    )
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    assert len(calls) == 1 + sum(-(-size // chunk) for size in sizes)
    done = [d for d, _ in calls]
    assert done == sorted(set(done))
    assert {of for _, of in calls} == {total}


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_no_message_carries_more_than_a_chunk(classic_pair, tmp_path, monkeypatch, direction):
    server, client = classic_pair
    (tmp_path / "big.bin").write_bytes(os.urandom(2 * MIB))
    chunk = 64 * 1024
    largest = []
    channel = (client if direction == "upload" else server)._channel
    original_send_many = channel.send_many
    original_send = channel.send

    def recording_send_many(payloads):
        largest.extend(len(payload) for payload in payloads)
        return original_send_many(payloads)

    def recording_send(payload):
        largest.append(len(payload))
        return original_send(payload)

    monkeypatch.setattr(channel, "send_many", recording_send_many)
    monkeypatch.setattr(channel, "send", recording_send)
    if direction == "upload":
        classic.upload(client, str(tmp_path / "big.bin"), str(tmp_path / "copy"), chunk_size=chunk)
    else:
        classic.download(
            client, str(tmp_path / "big.bin"), str(tmp_path / "copy"), chunk_size=chunk
        )
    assert (tmp_path / "copy").read_bytes() == (tmp_path / "big.bin").read_bytes()
    assert chunk < max(largest) < chunk + 200


def test_upload_invalid_path(conn, tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"cannot upload '.*missing': not a file or a directory"):
        classic.upload(conn, missing, str(tmp_path / "dest"))
    classic.upload(conn, missing, str(tmp_path / "dest"), ignore_invalid=True)
    assert not (tmp_path / "dest").exists()


def test_download_invalid_path(conn, tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"cannot download '.*missing': not a file or a dir"):
        classic.download(conn, missing, str(tmp_path / "dest"))
    classic.download(conn, missing, str(tmp_path / "dest"), ignore_invalid=True)
    assert not (tmp_path / "dest").exists()


def test_chunk_size_must_be_positive(conn, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        classic.upload(conn, str(tmp_path / "f"), str(tmp_path / "g"), chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got -1"):
        classic.download(conn, str(tmp_path / "f"), str(tmp_path / "g"), chunk_size=-1)


def _import_from(directory, name, monkeypatch):
    monkeypatch.syspath_prepend(str(directory))
    module = importlib.import_module(name)
    monkeypatch.delitem(sys.modules, name)
    return module


def test_upload_package_copies_package_without_pycache(conn, tmp_path, monkeypatch):
    package = tmp_path / "src" / "grpyc_test_upload_pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "mod.py").write_text("def f():\n    return 2\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "junk.pyc").write_bytes(b"junk")
    module = _import_from(tmp_path / "src", "grpyc_test_upload_pkg", monkeypatch)
    classic.upload_package(conn, module, str(tmp_path / "dest"))
    assert snapshot(tmp_path / "dest") == {
        "__init__.py": b"VALUE = 1\n",
        "mod.py": b"def f():\n    return 2\n",
        "sub": None,
        "sub/__init__.py": b"",
    }


def test_upload_package_defaults_to_peer_purelib(conn, tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "grpyc_test_upload_mod.py").write_text("X = 3\n")
    module = _import_from(tmp_path / "src", "grpyc_test_upload_mod", monkeypatch)
    # In-process pair: the peer's sysconfig is ours.
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"purelib": str(tmp_path / "site")})
    (tmp_path / "site").mkdir()
    classic.upload_module(conn, module)
    assert (tmp_path / "site" / "grpyc_test_upload_mod.py").read_text() == "X = 3\n"


# ------------------------------------------------------------------ stdio
def test_redirected_stdio_brings_peer_output_here(child, capsys):
    child.execute("import sys")
    with classic.redirected_stdio(child):
        child.execute("print('hello from the peer'); print('oops', file=sys.stderr)")
    child.execute("print('after the block')")
    out, err = capsys.readouterr()
    assert out == "hello from the peer\n"
    assert err == "oops\n"
    assert child.eval("sys.stdout is sys.__stdout__")
    assert child.eval("sys.stderr is sys.__stderr__")
    assert child.eval("sys.stdin is sys.__stdin__")


def test_redirected_stdio_lets_peer_read_our_stdin(child, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("typed here\n"))
    with classic.redirected_stdio(child):
        assert child.eval("__import__('sys').stdin.readline()") == "typed here\n"


def test_pm_debugs_peer_last_exception(child, capsys, monkeypatch):
    with pytest.raises(ZeroDivisionError):
        child.eval("1 / 0")
    monkeypatch.setattr(sys, "stdin", io.StringIO("p 6 * 7\nq\n"))
    classic.pm(child)
    out = capsys.readouterr().out
    assert "(Pdb) 42\n" in out


def test_interact_runs_interpreter_at_peer(child, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("print(answer * 2)\nprint(conn is not None)\n"))
    namespace = {"answer": 21}
    classic.interact(child, namespace)
    out, err = capsys.readouterr()
    assert ">>> 42\n>>> True\n>>> " in out
    assert "now exiting InteractiveConsole" in err
    assert namespace["conn"] is child


def test_chunk_default_is_stream_chunk():
    assert classic.DEFAULT_CHUNK_SIZE == consts.STREAM_CHUNK == 256 * 1024


def test_concurrent_transfers_on_one_connection(conn, tmp_path):
    sources = []
    for index in range(4):
        path = tmp_path / f"f{index}.bin"
        path.write_bytes(os.urandom(300_000 + index))
        sources.append(path)
    jobs = [
        gevent.spawn(classic.upload, conn, str(path), str(tmp_path / f"copy{index}"))
        for index, path in enumerate(sources)
    ]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    for index, path in enumerate(sources):
        assert (tmp_path / f"copy{index}").read_bytes() == path.read_bytes()


# ------------------------------------------------ transfers: hostile peers
@pytest.mark.parametrize(
    ("flavour", "name", "reason"),
    [
        (posixpath, "..", "it is not a file name"),
        (posixpath, ".", "it is not a file name"),
        (posixpath, "", "it is not a file name"),
        (posixpath, "../escaped.txt", "it contains the separator '/'"),
        (posixpath, "a/b", "it contains the separator '/'"),
        (posixpath, "/etc/passwd", "it is an absolute path"),
        (posixpath, "a\0b", "it contains NUL"),
        (posixpath, b"name", "it is a bytes, not a str"),
        (posixpath, 7, "it is a int, not a str"),
        (posixpath, "..\\escaped.txt", None),
        (posixpath, "C:x", None),
        (posixpath, "..x", None),
        (posixpath, "ok name.txt", None),
        (ntpath, "..\\escaped.txt", "it contains the separator '\\\\'"),
        (ntpath, "a/b", "it contains the separator '/'"),
        (ntpath, "C:\\Windows", "it is an absolute path"),
        (ntpath, "\\\\server\\share", "it is an absolute path"),
        (ntpath, "C:x", "it names a drive"),
        (ntpath, "..", "it is not a file name"),
        (ntpath, "file.txt:stream", None),
    ],
)
def test_unsafe_name_reason(flavour, name, reason):
    assert _transfer.unsafe_name_reason(name, flavour) == reason


HOSTILE_LISTDIR = """
import os
if "_real_listdir" not in globals():
    _real_listdir = os.listdir
def _hostile_listdir(path="."):
    names = list(_real_listdir(path))
    if os.path.basename(os.path.normpath(path)) == hostile_dir:
        names.extend(hostile_names)
    return names
os.listdir = _hostile_listdir
"""


def make_listing_hostile(conn, directory, names_code):
    """Make the peer's ``os.listdir(.../directory)`` also list the names
    `names_code` (a Python list expression evaluated at the peer)."""
    conn.execute(f"hostile_dir = {directory!r}\nhostile_names = {names_code}")
    conn.execute(HOSTILE_LISTDIR)


def peer_tree(root: Path) -> Path:
    """The peer's files: ``srv`` is what gets downloaded; the rest are what
    hostile names reach at the peer."""
    (root / "peer" / "srv" / "sub").mkdir(parents=True)
    (root / "peer" / "srv" / "a.txt").write_bytes(b"a")
    (root / "peer" / "srv" / "sub" / "b.txt").write_bytes(b"b")
    (root / "peer" / "escaped.txt").write_bytes(b"from the peer")
    (root / "peer" / "victim.txt").write_bytes(b"victim")
    (root / "local").mkdir()
    return root / "peer" / "srv"


@pytest.fixture
def hostile_child(tmp_path):
    """A classic stdio server in a child of its own, to be made hostile.

    It runs in `tmp_path`: a relative path that slips through lands there,
    where the tests look."""
    proc = gevent.subprocess.Popen(
        [sys.executable, "-u", "-c", classic._stdio_server_code()],
        cwd=tmp_path,
        stdin=gevent.subprocess.PIPE,
        stdout=gevent.subprocess.PIPE,
    )
    conn = classic.connect_pipes(proc.stdout, proc.stdin)
    yield conn
    conn.close()
    assert proc.wait(timeout=10) == 0


HOSTILE_NAMES = [
    ("srv", "['../escaped.txt']", r"'\.\./escaped\.txt' .*: it contains the separator '/'"),
    ("sub", "['../../escaped.txt']", r"'\.\./\.\./escaped\.txt' .*: it contains the separator"),
    ("srv", "['..']", r"'\.\.' .*: it is not a file name"),
    ("srv", "[VICTIM]", r"'/.*victim\.txt' .*: it is an absolute path"),
    ("sub", "['x\\0y']", r"'x\\x00y' .*: it contains NUL"),
    ("srv", "[b'escaped.txt']", r"b'escaped\.txt' .*: it is a bytes, not a str"),
    ("srv", "[object()]", r"<object object .*: it is a builtins\.object, not a str"),
]


@pytest.mark.parametrize("transfer", [classic.download, classic.download_dir])
@pytest.mark.parametrize(("directory", "names_code", "message"), HOSTILE_NAMES)
def test_download_refuses_names_that_leave_the_destination(
    hostile_child, tmp_path, transfer, directory, names_code, message
):
    source = peer_tree(tmp_path)
    hostile_child.execute(f"VICTIM = {str(tmp_path / 'peer' / 'victim.txt')!r}")
    make_listing_hostile(hostile_child, directory, names_code)
    before = snapshot(tmp_path)
    dest = tmp_path / "local" / "dest"
    with pytest.raises(ValueError, match=f"refusing the name {message}") as raised:
        transfer(hostile_child, str(source), str(dest))
    assert "listed by the peer in" in str(raised.value)
    assert f"could write outside {str(dest)!r}" in str(raised.value)
    # Nothing written anywhere: not outside, and not even the destination.
    assert snapshot(tmp_path) == before
    # The same peer still serves honest directories.
    make_listing_hostile(hostile_child, "none", "[]")
    transfer(hostile_child, str(source), str(dest))
    assert snapshot(dest) == {"a.txt": b"a", "sub": None, "sub/b.txt": b"b"}


def test_download_follows_peer_symlinks_but_writes_only_inside(conn, tmp_path):
    source = peer_tree(tmp_path)
    outside = tmp_path / "peer" / "outside"
    outside.mkdir()
    (outside / "o.txt").write_bytes(b"outside")
    (source / "dirlink").symlink_to(outside)
    (source / "filelink").symlink_to(tmp_path / "peer" / "escaped.txt")
    (source / "broken").symlink_to(tmp_path / "nowhere")
    peer_before = snapshot(tmp_path / "peer")
    classic.download(conn, str(source), str(tmp_path / "local" / "dest"))
    dest = tmp_path / "local" / "dest"
    assert snapshot(dest) == {
        "a.txt": b"a",
        "sub": None,
        "sub/b.txt": b"b",
        "dirlink": None,
        "dirlink/o.txt": b"outside",
        "filelink": b"from the peer",
    }
    assert not any(path.is_symlink() for path in dest.rglob("*"))
    assert os.listdir(tmp_path / "local") == ["dest"]
    assert snapshot(tmp_path / "peer") == peer_before


@pytest.mark.parametrize("link", ["sub", "a.txt"])
def test_download_refuses_to_write_through_a_symlink_in_the_destination(conn, tmp_path, link):
    source = peer_tree(tmp_path)
    dest = tmp_path / "local" / "dest"
    dest.mkdir()
    elsewhere = tmp_path / "local" / "elsewhere"
    elsewhere.mkdir()
    (dest / link).symlink_to(elsewhere / link if link == "a.txt" else elsewhere)
    with pytest.raises(
        ValueError,
        match=rf"refusing to write '.*dest/{re.escape(link)}': it is a symbolic link inside "
        r"the destination '.*dest'",
    ):
        classic.download_dir(conn, str(source), str(dest))
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in dest.iterdir()) == [link]


def test_download_into_a_destination_that_is_itself_a_symlink(conn, tmp_path):
    source = peer_tree(tmp_path)
    real = tmp_path / "local" / "real"
    real.mkdir()
    (tmp_path / "local" / "dest").symlink_to(real)
    classic.download_dir(conn, str(source), str(tmp_path / "local" / "dest"))
    assert snapshot(real) == {"a.txt": b"a", "sub": None, "sub/b.txt": b"b"}


def test_a_target_that_turns_into_a_symlink_is_not_followed(tmp_path):
    (tmp_path / "target").write_bytes(b"keep")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(ValueError, match=r"refusing to write '.*link': it became a symbolic"):
        _transfer._open_local_target(str(tmp_path / "link"), confined=True)
    assert (tmp_path / "target").read_bytes() == b"keep"


def test_download_refuses_a_size_that_is_not_an_int(hostile_child, tmp_path):
    source = peer_tree(tmp_path)
    hostile_child.execute(
        "import os.path\n_real_getsize = os.path.getsize\n"
        "os.path.getsize = lambda path: -1 if path.endswith('a.txt') else _real_getsize(path)"
    )
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"the peer gave the size of '.*a\.txt' as -1"):
        classic.download(hostile_child, str(source), str(tmp_path / "local" / "dest"))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("name", "reason"),
    [("..\\escaped.txt", "it contains the separator '\\\\'"), ("C:evil", "it names a drive")],
)
def test_upload_refuses_local_names_that_leave_the_target_at_a_windows_peer(
    hostile_child, tmp_path, name, reason
):
    # A POSIX file name may hold a backslash; at an ntpath peer it climbs out.
    hostile_child.execute("import sys, ntpath\nsys.modules['os.path'] = ntpath")
    source = tmp_path / "src"
    source.mkdir()
    (source / "ok.txt").write_bytes(b"ok")
    (source / name).write_bytes(b"evil")
    before = snapshot(tmp_path)
    expected = (
        f"refusing the name {name!r} listed by this side in {str(source)!r}: {reason}; "
        f"copying it could write outside {str(tmp_path / 'up')!r}"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        classic.upload(hostile_child, str(source), str(tmp_path / "up"))
    assert snapshot(tmp_path) == before


def test_transfers_refuse_a_peer_path_flavour_they_do_not_know(hostile_child, tmp_path):
    hostile_child.execute("import sys, types\nsys.modules['os.path'] = types.ModuleType('this')")
    (tmp_path / "f").write_bytes(b"f")
    loaded_before = "this" in sys.modules
    for transfer in (classic.upload, classic.download):
        with pytest.raises(ValueError, match=r"the peer's os\.path is 'this', not posixpath or"):
            transfer(hostile_child, str(tmp_path / "f"), str(tmp_path / "g"))
    assert ("this" in sys.modules) == loaded_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_download_refuses_chunks_that_are_not_bytes(hostile_child, tmp_path):
    source = peer_tree(tmp_path)
    hostile_child.execute(
        "import builtins, io\n_real_open = builtins.open\n"
        "def _open(path, mode='r', *args, **kwargs):\n"
        "    if path.endswith('a.txt'):\n"
        "        return io.StringIO('text')\n"
        "    return _real_open(path, mode, *args, **kwargs)\n"
        "builtins.open = _open\n"
    )
    with pytest.raises(ValueError, match=r"the peer read a str from '.*a\.txt', not bytes"):
        classic.download(hostile_child, str(source), str(tmp_path / "local" / "dest"))
    assert (tmp_path / "local" / "dest" / "a.txt").read_bytes() == b""


def test_answers_that_are_proxies_are_refused(conn):
    with pytest.raises(ValueError, match=r"the peer's listing of 'x' is a builtins\.list, not a"):
        _transfer._by_value(conn.eval("['a']"), "listing of 'x'")
    assert _transfer._by_value(("a",), "answer") == ("a",)
