"""Classic mode between grpyc and stock rpyc 6.0.2, both directions.

grpyc's classic client drives a stock ``SlaveService`` server (a subprocess);
a stock classic client (in an OS thread) drives a grpyc classic server.
"""

import io
import os
import sys
from pathlib import Path

import pytest

from grpyc import classic
from grpyc.helpers import async_, buffiter
from grpyc.netref import BaseNetref
from grpyc.server import Server
from grpyc.service import ClassicService, SlaveService
from tests.interop.conftest import in_os_thread, start_rpyc_server, stop_process
from tests.test_classic import make_listing_hostile, peer_tree
from tests.test_classic import snapshot as tree_snapshot

MIB = 1024 * 1024


def scale(value, factor=3):
    import math

    def floor(x):
        return math.floor(x)

    return floor(value * factor)


def make_tree(root: Path) -> Path:
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "empty_dir").mkdir()
    (root / "empty.txt").write_bytes(b"")
    (root / "small.txt").write_bytes(b"hello\n")
    (root / "nested" / "deeper" / "data.bin").write_bytes(os.urandom(1000))
    (root / "big.bin").write_bytes(os.urandom(MIB + 4321))
    return root


def snapshot(root: Path) -> dict:
    """Relative path -> bytes (files) or None (directories)."""
    return {
        path.relative_to(root).as_posix(): None if path.is_dir() else path.read_bytes()
        for path in root.rglob("*")
    }


# ----------------------------------------- grpyc client -> stock rpyc server
@pytest.fixture(scope="module")
def stock_classic_server():
    """(process, port) of a stock rpyc SlaveService ThreadedServer."""
    proc, port = start_rpyc_server("classic")
    yield proc, port
    stop_process(proc)


@pytest.fixture
def to_stock(stock_classic_server):
    conn = classic.connect("127.0.0.1", stock_classic_server[1])
    yield conn
    conn.close()


def test_grpyc_classic_client_evaluates_at_stock_server(to_stock, stock_classic_server):
    to_stock.execute("x = 6 * 7")
    assert to_stock.eval("x") == 42
    assert to_stock.namespace["x"] == 42
    assert to_stock.modules.os.getpid() == stock_classic_server[0].pid
    assert to_stock.modules["os.path"].basename("/a/b") == "b"
    assert to_stock.builtins.sum([1, 2, 3]) == 6


def test_grpyc_obtains_and_delivers_with_stock_server(to_stock):
    remote = to_stock.eval("{'a': [1, 2], 'b': (3, 'x')}")
    assert isinstance(remote, BaseNetref)
    assert classic.obtain(remote) == {"a": [1, 2], "b": (3, "x")}
    delivered = classic.deliver(to_stock, {"k": [5, 6]})
    to_stock.namespace["delivered"] = delivered
    assert to_stock.eval("delivered['k'][1] + 1") == 7


def test_grpyc_uploads_and_downloads_tree_with_stock_server(to_stock, tmp_path):
    source = make_tree(tmp_path / "source")
    classic.upload(to_stock, str(source), str(tmp_path / "remote"))
    assert snapshot(tmp_path / "remote") == snapshot(source)
    classic.download(to_stock, str(tmp_path / "remote"), str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(source)


def test_grpyc_teleports_function_through_stock_teleportation(to_stock):
    remote_scale = classic.teleport_function(to_stock, scale)
    assert remote_scale(2.5) == 7
    assert to_stock.eval("scale(2, factor=4)") == 8
    # The stock server rebuilt it with its own module, never importing grpyc.
    assert "grpyc" not in to_stock.modules.sys.modules


def test_stock_server_output_redirected_to_grpyc_client(to_stock, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("typed\n"))
    to_stock.execute("import sys")
    with classic.redirected_stdio(to_stock):
        to_stock.execute("print('hello from stock'); print('err', file=sys.stderr)")
        assert to_stock.eval("sys.stdin.readline()") == "typed\n"
    out, err = capsys.readouterr()
    assert out == "hello from stock\n"
    assert err == "err\n"
    assert to_stock.eval("sys.stdout is sys.__stdout__")


def test_grpyc_pm_on_stock_server_exception(to_stock, capsys, monkeypatch):
    with pytest.raises(ZeroDivisionError):
        to_stock.eval("1 / 0")
    monkeypatch.setattr(sys, "stdin", io.StringIO("p 6 * 7\nq\n"))
    classic.pm(to_stock)
    assert "(Pdb) 42\n" in capsys.readouterr().out


def test_grpyc_interact_with_stock_server(to_stock, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("print(answer * 2)\n"))
    classic.interact(to_stock, {"answer": 21})
    out, err = capsys.readouterr()
    assert ">>> 42\n>>> " in out
    assert "now exiting InteractiveConsole" in err


def test_grpyc_helpers_against_stock_server(to_stock):
    sleep = async_(to_stock.modules.time.sleep)
    result = sleep(0.01)
    assert result.value is None
    assert list(buffiter(to_stock.eval("iter(range(50))"), chunk=4)) == list(range(50))


def test_grpyc_connect_subproc_runs_stock_classic_stdio_server():
    # Installed next to the interpreter by the test extra (rpyc 6.0.2).
    script = Path(sys.executable).with_name("rpyc_classic.py")
    assert script.is_file(), f"stock rpyc_classic.py not found next to {sys.executable}"
    conn = classic.connect_subproc(str(script))
    try:
        assert conn.modules.os.getpid() == conn.proc.pid
        assert "rpyc" in conn.modules.sys.modules
        conn.execute("y = [1, 2]")
        assert classic.obtain(conn.namespace["y"]) == [1, 2]
    finally:
        conn.close()
        conn.proc.wait()


# ----------------------------------------- stock rpyc client -> grpyc server
@pytest.fixture(params=[SlaveService, ClassicService], ids=["slave", "classic"])
def grpyc_classic_server(request):
    server = Server(request.param, hostname="127.0.0.1", port=0)
    server.listen()
    yield server
    server.close()


def _stock_session(port, action):
    import rpyc.utils.classic as stock_classic

    conn = stock_classic.connect("127.0.0.1", port)
    try:
        return action(conn, stock_classic)
    finally:
        conn.close()


def test_stock_classic_client_evaluates_at_grpyc_server(grpyc_classic_server):
    def action(conn, stock_classic):
        conn.execute("x = 6 * 7")
        return (
            conn.eval("x"),
            conn.namespace["x"],
            conn.modules.os.getpid(),
            conn.modules["os.path"].basename("/a/b"),
        )

    assert in_os_thread(_stock_session, grpyc_classic_server.port, action) == (
        42,
        42,
        os.getpid(),
        "b",
    )


@pytest.fixture
def slave_server():
    server = Server(SlaveService, hostname="127.0.0.1", port=0)
    server.listen()
    yield server
    server.close()


def test_stock_client_obtains_delivers_and_teleports_with_grpyc_server(slave_server):
    def action(conn, stock_classic):
        obtained = stock_classic.obtain(conn.eval("{'a': [1, 2]}"))
        conn.namespace["delivered"] = stock_classic.deliver(conn, {"k": (5, 6)})
        delivered = conn.eval("delivered['k'][1] + 1")
        remote_scale = stock_classic.teleport_function(conn, scale)
        return obtained, delivered, remote_scale(2.5), conn.eval("scale(2, factor=4)")

    assert in_os_thread(_stock_session, slave_server.port, action) == ({"a": [1, 2]}, 7, 7, 8)


def test_stock_client_uploads_and_downloads_tree_with_grpyc_server(slave_server, tmp_path):
    source = make_tree(tmp_path / "source")

    def action(conn, stock_classic):
        stock_classic.upload(conn, str(source), str(tmp_path / "remote"))
        stock_classic.download(conn, str(tmp_path / "remote"), str(tmp_path / "back"))

    in_os_thread(_stock_session, slave_server.port, action)
    assert snapshot(tmp_path / "remote") == snapshot(source)
    assert snapshot(tmp_path / "back") == snapshot(source)


def test_grpyc_server_output_redirected_to_stock_client(slave_server, capsys):
    # One process: the grpyc server's sys is the stock client's, so its
    # stdout becomes, for the block, a stock proxy of the captured stream.
    def action(conn, stock_classic):
        with stock_classic.redirected_stdio(conn):
            conn.execute("print('hello from grpyc')")

    original = sys.stdout
    in_os_thread(_stock_session, slave_server.port, action)
    assert sys.stdout is original
    assert capsys.readouterr().out == "hello from grpyc\n"


# ---------------------------------------------- transfers from hostile peers
@pytest.fixture
def hostile_stock():
    """A grpyc classic connection to a stock server of its own, to be made hostile."""
    proc, port = start_rpyc_server("classic")
    conn = classic.connect("127.0.0.1", port)
    yield conn, port
    conn.close()
    stop_process(proc)


def _stock_download_dir(port, remote, local):
    def action(conn, stock_classic):
        stock_classic.download_dir(conn, remote, local)

    return in_os_thread(_stock_session, port, action)


@pytest.mark.parametrize(
    ("names_code", "message"),
    [
        ("['../escaped.txt']", r"'\.\./escaped\.txt' .*: it contains the separator '/'"),
        ("[VICTIM]", r"'/.*victim\.txt' .*: it is an absolute path"),
    ],
)
def test_names_from_a_hostile_stock_server_stay_inside_unlike_stock(
    hostile_stock, tmp_path, names_code, message
):
    conn, port = hostile_stock
    source = peer_tree(tmp_path)
    victim = tmp_path / "peer" / "victim.txt"
    conn.execute(f"VICTIM = {str(victim)!r}")
    make_listing_hostile(conn, "srv", names_code)
    before = tree_snapshot(tmp_path)
    with pytest.raises(ValueError, match=f"refusing the name {message}"):
        classic.download_dir(conn, str(source), str(tmp_path / "local" / "dest"))
    assert tree_snapshot(tmp_path) == before
    # Stock rpyc, same peer, same call: writes where the name leads.
    _stock_download_dir(port, str(source), str(tmp_path / "local" / "stock"))
    if names_code == "[VICTIM]":
        assert victim.read_bytes() == b""  # truncated by opening it for writing
    else:
        assert (tmp_path / "local" / "escaped.txt").read_bytes() == b"from the peer"


def test_peer_symlinks_are_followed_as_stock_does(to_stock, stock_classic_server, tmp_path):
    source = peer_tree(tmp_path)
    outside = tmp_path / "peer" / "outside"
    outside.mkdir()
    (outside / "o.txt").write_bytes(b"outside")
    (source / "dirlink").symlink_to(outside)
    (source / "filelink").symlink_to(tmp_path / "peer" / "escaped.txt")
    classic.download_dir(to_stock, str(source), str(tmp_path / "local" / "grpyc"))
    _stock_download_dir(stock_classic_server[1], str(source), str(tmp_path / "local" / "stock"))
    grpyc_tree = tree_snapshot(tmp_path / "local" / "grpyc")
    assert grpyc_tree == tree_snapshot(tmp_path / "local" / "stock")
    assert grpyc_tree["dirlink/o.txt"] == b"outside"
    assert grpyc_tree["filelink"] == b"from the peer"
    assert sorted(os.listdir(tmp_path / "local")) == ["grpyc", "stock"]


def test_upload_to_a_stock_server_with_windows_paths_refuses_backslash_names(
    hostile_stock, tmp_path
):
    conn, _ = hostile_stock
    conn.execute("import sys, ntpath\nsys.modules['os.path'] = ntpath")
    source = tmp_path / "src"
    source.mkdir()
    (source / "ok.txt").write_bytes(b"ok")
    (source / "..\\escaped.txt").write_bytes(b"evil")
    before = tree_snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"listed by this side in .*: it contains the separator"):
        classic.upload_dir(conn, str(source), str(tmp_path / "up"))
    assert tree_snapshot(tmp_path) == before
