"""``rpyc.lib`` and its submodules under the drop-in behave as stock rpyc 6.0.2's.

Each probe runs on stock's object and on grpyc's and compares. The pure
ones run here (stock rpyc is importable in this process; grpyc's modules
are imported directly); `setup_logger` configures the root logger, so its
probes run in fresh interpreters.
"""

import gc
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import gevent
import pytest
import rpyc.core.stream
import rpyc.lib
import rpyc.lib.colls
import rpyc.lib.compat

from grpyc import _colls, _compat, _namedpipe, _rpyc_lib, lib

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# ------------------------------------------------------------------ compat
def test_compat_values_are_stocks():
    names = [
        "is_py_3k",
        "is_py_gte37",
        "is_py_gte38",
        "is_py_gte310",
        "is_py_gte311",
        "maxint",
        "select_error",
        "TimeoutError",
        "next",
        "callable",
        "Struct",
        "BytesIO",
        "select",
        "pickle",
        "select_module",
    ]
    assert {name: getattr(_compat, name) for name in names} == {
        name: getattr(rpyc.lib.compat, name) for name in names
    }
    assert _compat.execute is exec
    assert _compat.BYTES_LITERAL("é") == rpyc.lib.compat.BYTES_LITERAL("é") == b"\xc3\xa9"
    error = OSError(5, "io")
    assert _compat.get_exc_errno(error) == rpyc.lib.compat.get_exc_errno(error) == 5


@pytest.mark.parametrize("compat", [rpyc.lib.compat, _compat], ids=["stock", "grpyc"])
def test_with_metaclass_makes_classes_of_the_metaclass(compat):
    class Meta(type):
        pass

    class Base:
        pass

    class Made(compat.with_metaclass(Meta, Base)):
        pass

    assert (type(Made), Made.__bases__, Made.__name__) == (Meta, (Base,), "Made")


@pytest.mark.parametrize(
    ("compat", "timeout_class"),
    [(rpyc.lib.compat, rpyc.lib.Timeout), (_compat, lib.Timeout)],
    ids=["stock", "grpyc"],
)
def test_acquire_lock_waits_at_most_until_the_deadline(compat, timeout_class):
    lock = threading.Lock()
    assert compat.acquire_lock(lock, True, timeout_class(None)) is True
    started = time.monotonic()
    assert compat.acquire_lock(lock, True, timeout_class(0.05)) is False
    assert time.monotonic() - started >= 0.04
    assert compat.acquire_lock(lock, False, timeout_class(None)) is False


def _poll_probe(poll_class):
    read_fd, write_fd = os.pipe()
    try:
        poller = poll_class()
        poller.register(read_fd, "r")
        poller.register(write_fd, "w")
        before = sorted(poller.poll(0))
        os.write(write_fd, b"x")
        after = sorted(poller.poll(0.5))
        poller.unregister(write_fd)
        os.close(write_fd)
        write_fd = None
        hung_up = sorted(poller.poll(0.5))
    finally:
        os.close(read_fd)
        if write_fd is not None:
            os.close(write_fd)
    return before, after, hung_up


def test_poll_reports_what_stocks_reports():
    grpyc_view = _poll_probe(_compat.poll)
    assert grpyc_view == _poll_probe(rpyc.lib.compat.poll)
    assert grpyc_view[1][0][1] == "r"


# ------------------------------------------------------------------- colls
def _refcount_probe(coll_class):
    coll = coll_class()
    steps = []
    coll.add("k", "first")
    coll.add("k", "second")
    steps.append((coll["k"], repr(coll)))
    coll.decref("k")
    steps.append(repr(coll))
    coll.decref("k")
    steps.append(repr(coll))
    with pytest.raises(KeyError, match="k"):
        coll.decref("k")
    coll.add("a", 1)
    coll.add("a", 1)
    coll.decref("a", 5)
    steps.append(repr(coll))
    return steps


def test_refcounting_coll_counts_as_stocks():
    assert _refcount_probe(_colls.RefCountingColl) == _refcount_probe(
        rpyc.lib.colls.RefCountingColl
    )
    assert _refcount_probe(_colls.RefCountingColl)[0] == ("first", "{'k': ['first', 1]}")


class _Value:
    pass


def _weak_probe(dict_class):
    mapping = dict_class()
    kept, dropped = _Value(), _Value()
    mapping["kept"] = kept
    mapping["dropped"] = dropped
    seen = [len(mapping), "kept" in mapping, mapping.get("kept") is kept, sorted(mapping.keys())]
    del dropped
    seen += [len(mapping), "dropped" in mapping, mapping.get("dropped", "gone")]
    with pytest.raises(KeyError, match="missing"):
        mapping["missing"]
    del mapping["kept"]
    seen += [len(mapping)]
    mapping["again"] = kept
    mapping.clear()
    seen += [len(mapping)]
    return seen


def test_weak_value_dict_holds_values_weakly_as_stocks():
    grpyc_view = _weak_probe(_colls.WeakValueDict)
    assert grpyc_view == _weak_probe(rpyc.lib.colls.WeakValueDict)
    assert grpyc_view == [2, True, True, ["dropped", "kept"], 1, False, "gone", 0, 0]


def test_weak_value_dict_iterates_where_stock_raises():
    value = _Value()
    stock = rpyc.lib.colls.WeakValueDict()
    stock["a"] = value
    with pytest.raises(TypeError, match="non-iterator"):
        stock.values()
    ours = _colls.WeakValueDict()
    ours["a"] = value
    assert (list(ours), ours.values(), ours.items()) == (["a"], [value], [("a", value)])


# ---------------------------------------------------------------- rpyc.lib
@pytest.mark.parametrize("lib_module", [rpyc.lib, _rpyc_lib], ids=["stock", "grpyc"])
def test_safe_import_gives_the_module_or_a_false_placeholder(lib_module):
    assert lib_module.safe_import("os.path") is os.path
    missing = lib_module.safe_import("no_such_module_for_grpyc")
    assert not missing
    with pytest.raises(ImportError, match="module 'no_such_module_for_grpyc' not found"):
        missing.anything
    with pytest.raises(AttributeError, match="module 'no_such_module_for_grpyc' not found"):
        missing.__wrapped__
    assert not hasattr(missing, "__path__")


@pytest.mark.parametrize("lib_module", [rpyc.lib, _rpyc_lib], ids=["stock", "grpyc"])
def test_hybridmethod_binds_to_the_instance_or_the_class(lib_module):
    class Thing:
        @lib_module.hybridmethod
        def who(self_or_cls):  # noqa: N805 - bound to the instance or the class
            return self_or_cls

    thing = Thing()
    assert (Thing.who(), thing.who()) == (Thing, thing)
    with pytest.raises(AttributeError):
        thing.who = None


def test_exp_backoff_draws_as_stock():
    def draws(lib_module):
        random.seed(7)
        return [lib_module.exp_backoff(collision) for collision in range(1, 13)]

    ours = draws(_rpyc_lib)
    assert ours == draws(rpyc.lib)
    assert max(ours) < 2**10 * 0.0000512


def test_constants_are_stocks():
    assert _rpyc_lib.SPAWN_THREAD_PREFIX == rpyc.lib.SPAWN_THREAD_PREFIX
    assert _compat.maxint == rpyc.lib.maxint == sys.maxsize


# Stock leaks the socket of a refused attempt (a ResourceWarning when collected).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("lib_module", [rpyc.lib, _rpyc_lib], ids=["stock", "grpyc"])
def test_socket_backoff_connect_connects_and_raises_as_stock(lib_module):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        sock = lib_module.socket_backoff_connect(
            socket.AF_INET, socket.SOCK_STREAM, 0, address, 1.0, 3
        )
        with sock:
            assert (sock.getpeername(), sock.gettimeout()) == (address, 1.0)
    # The listener is closed: nothing listens there now.
    with pytest.raises(ConnectionRefusedError):
        lib_module.socket_backoff_connect(socket.AF_INET, socket.SOCK_STREAM, 0, address, 1.0, 3)
    gc.collect()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # stock leaks
@pytest.mark.parametrize("lib_module", [rpyc.lib, _rpyc_lib], ids=["stock", "grpyc"])
def test_socket_backoff_connect_retries_timeouts_then_raises(lib_module):
    # A listener whose accept queue is full drops SYNs, so connects time out.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        with socket.create_connection(address, timeout=1):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                lib_module.socket_backoff_connect(
                    socket.AF_INET, socket.SOCK_STREAM, 0, address, 0.1, 3
                )
            elapsed = time.monotonic() - started
    # Three attempts of 0.1 s each, with backoffs of at most 0.4 ms between.
    assert 0.29 <= elapsed < 2
    gc.collect()


def test_spawn_waitready_returns_after_init_and_runs_main():
    events = []

    def init():
        events.append("init")
        return 42

    def main():
        events.append("main")
        return "done"

    greenlet, value = _rpyc_lib.spawn_waitready(init, main)
    assert (value, events[0]) == (42, "init")
    assert (greenlet.get(timeout=5), events) == ("done", ["init", "main"])
    thread, stock_value = rpyc.lib.spawn_waitready(init, lambda: None)
    thread.join(5)
    assert stock_value == value


def test_spawn_waitready_raises_what_init_raised():
    ran_main = []

    def init():
        raise LookupError("no config")

    with pytest.raises(LookupError, match="no config"):
        _rpyc_lib.spawn_waitready(init, lambda: ran_main.append(True))
    gevent.sleep(0)
    assert ran_main == []


# ------------------------------------------------------------ named pipes
def _pipe_failures(stream_module):
    named, win32 = stream_module.NamedPipeStream, stream_module.Win32PipeStream
    calls = {
        "create_server": lambda: named.create_server("grpyc_test"),
        "create_client": lambda: named.create_client("grpyc_test"),
        "named_init": lambda: named(None, True),
        "from_std": named.from_std,
        "create_pair": named.create_pair,
        "win32_init": lambda: win32(None, None),
        "win32_pair": win32.create_pair,
    }
    failures = {}
    for name, call in calls.items():
        try:
            call()
        except (ImportError, NotImplementedError) as exc:
            failures[name] = ImportError.__name__ if isinstance(exc, ImportError) else "NotImpl"
    return failures


def test_windows_pipe_streams_fail_when_used_as_stocks_do_here():
    ours = _pipe_failures(_namedpipe)
    assert ours == _pipe_failures(rpyc.core.stream)
    assert ours == {
        "create_server": "ImportError",
        "create_client": "ImportError",
        "named_init": "ImportError",
        "from_std": "NotImpl",
        "create_pair": "NotImpl",
        "win32_init": "ImportError",
        "win32_pair": "ImportError",
    }


def test_windows_pipe_stream_constants_are_stocks():
    names = ["NAMED_PIPE_PREFIX", "PIPE_IO_TIMEOUT", "CONNECT_TIMEOUT", "PIPE_BUFFER_SIZE"]
    stock = rpyc.core.stream.NamedPipeStream
    assert {n: getattr(_namedpipe.NamedPipeStream, n) for n in names} == {
        n: getattr(stock, n) for n in names
    }
    assert _namedpipe.NamedPipeStream.MAX_IO_CHUNK == stock.MAX_IO_CHUNK
    assert issubclass(_namedpipe.NamedPipeStream, _namedpipe.Win32PipeStream)


# ------------------------------------------------------------- setup_logger
LOGGER_PROBE = r"""
import json, logging, re, sys
{setup}
args = json.loads(sys.argv[1])
if args.pop("preconfigured"):
    logging.basicConfig(level=logging.WARNING, format="pre %(message)s")
logger = setup_logger(**args)
logger.info("info line")
logger.error("error line")
logging.getLogger("other").debug("debug line")
root = logging.getLogger()
handler = root.handlers[0]
print(json.dumps({{
    "logger": logger.name,
    "root_level": logging.getLevelName(root.level),
    "handlers": [type(h).__name__ for h in root.handlers],
    "format": handler.formatter._fmt,
    "datefmt": handler.formatter.datefmt,
    "stream": getattr(handler, "stream", None) is sys.stderr,
}}))
"""

# RPyC's date format, "%b %d %H:%M:%S", at the start of a record.
TIMESTAMP = re.compile(r"^[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d ")

SETUPS = {
    "stock": "from rpyc.lib import setup_logger",
    "dropin": "import grpyc; grpyc.install_as_rpyc()\nfrom rpyc.lib import setup_logger",
    "grpyc": "from grpyc import setup_logger",
}


def _run_logger_probe(setup, args):
    done = subprocess.run(
        [sys.executable, "-c", LOGGER_PROBE.format(setup=SETUPS[setup]), json.dumps(args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Timestamps differ from run to run; thread names and levels must not.
    stderr = [TIMESTAMP.sub("", line) for line in done.stderr.splitlines()]
    return json.loads(done.stdout), stderr


@pytest.mark.parametrize(
    "args",
    [
        {"preconfigured": False},
        {"preconfigured": False, "quiet": True, "namespace": "calc"},
        {"preconfigured": True, "namespace": "calc"},
    ],
    ids=["defaults", "quiet", "root-already-configured"],
)
def test_setup_logger_configures_logging_as_stock(args):
    stock = _run_logger_probe("stock", dict(args))
    assert _run_logger_probe("dropin", dict(args)) == stock
    assert _run_logger_probe("grpyc", dict(args)) == stock


def test_setup_logger_defaults_log_everything_to_stderr_under_rpyc():
    config, stderr = _run_logger_probe("grpyc", {"preconfigured": False})
    assert config["logger"] == "rpyc"
    assert config["root_level"] == "DEBUG"
    assert stderr == [
        "INFO rpyc[MainThread]: info line",
        "ERROR rpyc[MainThread]: error line",
        "DEBUG other[MainThread]: debug line",
    ]


def test_setup_logger_appends_to_a_logfile_as_stock(tmp_path):
    lines = {}
    for setup in ("stock", "grpyc"):
        logfile = tmp_path / f"{setup}.log"
        logfile.write_text("earlier\n")
        config, stderr = _run_logger_probe(
            setup, {"preconfigured": False, "quiet": True, "logfile": str(logfile)}
        )
        assert (config["handlers"], stderr) == (["FileHandler"], [])
        text = logfile.read_text().splitlines()
        lines[setup] = [TIMESTAMP.sub("", line) for line in text]
    assert lines["grpyc"] == lines["stock"] == ["earlier", "ERROR: error line"]
