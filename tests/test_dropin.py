"""RPyC programs on grpyc: top-level names, `install_as_rpyc`, a real program, the example.

Everything runs in fresh interpreters: this test process has stock rpyc
imported for the interop tests, and the import checks need a clean start.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import gevent
import pytest
from gevent import subprocess as gsubprocess

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "tests" / "dropin_program"
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}


def run_python(code, timeout=30, env=None):
    """Run ``python -c code`` in a fresh interpreter; its stdout (stderr shown on failure)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=ENV if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# ------------------------------------------------------------ top-level names
def test_top_level_names_keep_rpyc_meaning_after_every_submodule_import():
    out = run_python(
        "import grpyc.service, grpyc.async_, importlib, pkgutil, json\n"
        "import grpyc\n"
        "for info in pkgutil.iter_modules(grpyc.__path__):\n"
        "    if info.name != '__main__':\n"
        "        importlib.import_module('grpyc.' + info.name)\n"
        "import grpyc.service\n"
        "import grpyc.async_\n"
        "from grpyc import helpers, service, async_\n"
        "print(json.dumps({\n"
        "    'service': grpyc.service is helpers.service,\n"
        "    'async_': grpyc.async_ is helpers.async_,\n"
        "    'from_import': (service, async_) == (helpers.service, helpers.async_),\n"
        "    'modules': [importlib.import_module(n).__name__ for n in ('grpyc.service',\n"
        "                'grpyc.async_')],\n"
        "    'version': type(grpyc.version).__name__,\n"
        "    'classic': grpyc.classic.__name__,\n"
        "    'all_resolve': all(hasattr(grpyc, n) for n in grpyc.__all__),\n"
        "}))\n"
    )
    assert json.loads(out) == {
        "service": True,
        "async_": True,
        "from_import": True,
        "modules": ["grpyc.service", "grpyc.async_"],
        "version": "module",
        "classic": "grpyc.classic",
        "all_resolve": True,
    }


def test_top_level_exports_what_rpyc_exports():
    out = run_python(
        "import json, rpyc, grpyc, grpyc.lib, grpyc.server\n"
        "public = [n for n in dir(rpyc) if not n.startswith('_')]\n"
        "missing = sorted(n for n in public if not hasattr(grpyc, n))\n"
        "not_written = sorted(n for n in missing\n"
        "                     if not hasattr(grpyc.server, n) and not hasattr(grpyc.lib, n))\n"
        "print(json.dumps([missing, not_written]))\n"
    )
    missing, not_written = json.loads(out)
    assert missing == []
    assert not_written == []


def _dependencies_of_grpyc():
    out = run_python(
        "import sys, json; before = set(sys.modules); import grpyc\n"
        "print(json.dumps(sorted(m for m in set(sys.modules) - before\n"
        "                        if m != 'grpyc' and not m.startswith('grpyc.'))))\n"
    )
    return json.loads(out)


BIND_THREADS_VARIABLE = "RPYC_BIND_THREADS"
PURE_PYTHON_VARIABLE = "GRPYC_PURE_PYTHON"  # grpyc/_accel.py


def _environment_read_by_importing(module):
    out = run_python(
        "import json, os\n"
        "environ_type = type(os.environ)\n"
        "read = []\n"
        "real_getitem = environ_type.__getitem__\n"
        "def spy(self, key):\n"
        "    read.append(key)\n"
        "    return real_getitem(self, key)\n"
        "environ_type.__getitem__ = spy\n"
        f"import {module}\n"
        "environ_type.__getitem__ = real_getitem\n"
        "print(json.dumps(read))\n"
    )
    return json.loads(out)


def test_importing_reads_the_bind_threads_default_like_stock():
    assert BIND_THREADS_VARIABLE in _environment_read_by_importing("rpyc")
    assert BIND_THREADS_VARIABLE in _environment_read_by_importing("grpyc")


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "false", "yes", ""])
def test_bind_threads_default_follows_the_variable_like_stock(value):
    probe = "from {0} import DEFAULT_CONFIG as c; print(c['bind_threads'])"
    env = {**ENV, BIND_THREADS_VARIABLE: value}
    stock = run_python(probe.replace("{0}", "rpyc.core.protocol"), env=env)
    ours = run_python(probe.replace("{0}", "grpyc.config"), env=env)
    assert ours == stock


def test_importing_grpyc_has_no_side_effects():
    """No side effect beyond stock's: the one variable RPyC also reads at import,
    and grpyc's switch between its compiled and pure-Python modules."""
    dependencies = _dependencies_of_grpyc()
    out = run_python(
        "import importlib, json, os, sys, threading\n"
        f"for name in {dependencies!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:  # cython's pseudo-modules are not importable by name\n"
        "        pass\n"
        "environ_type = type(os.environ)\n"
        "read = []\n"
        "real_getitem = environ_type.__getitem__\n"
        "def spy(self, key):\n"
        "    read.append(key)\n"
        "    return real_getitem(self, key)\n"
        "environ_type.__getitem__ = spy\n"
        "fds = sorted(os.listdir('/proc/self/fd'))\n"
        "meta_path = list(sys.meta_path)\n"
        "import grpyc\n"
        "environ_type.__getitem__ = real_getitem\n"
        "import gevent.monkey, gevent._hub_local\n"
        "print(json.dumps({\n"
        "    'env_read': read,\n"
        "    'new_fds': sorted(set(os.listdir('/proc/self/fd')) - set(fds)),\n"
        "    'threads': threading.active_count(),\n"
        "    'hub': gevent._hub_local.get_hub_if_exists() is not None,\n"
        "    'patched': gevent.monkey.is_anything_patched(),\n"
        "    'meta_path_same': sys.meta_path == meta_path,\n"
        "    'loaded': [m for m in ('rpyc', 'plumbum', 'redis', 'multiprocessing',\n"
        "               'gevent.subprocess') if m in sys.modules],\n"
        "}))\n"
    )
    assert json.loads(out) == {
        "env_read": [PURE_PYTHON_VARIABLE, BIND_THREADS_VARIABLE],
        "new_fds": [],
        "threads": 1,
        "hub": False,
        "patched": False,
        "meta_path_same": True,
        "loaded": [],
    }


# ------------------------------------------------------------- install_as_rpyc
@pytest.fixture(scope="module")
def installed():
    """What a fresh interpreter sees after ``grpyc.install_as_rpyc()`` (one run for all)."""
    out = run_python(
        "import importlib, json, sys\n"
        "import grpyc\n"
        "from grpyc import _compat, _colls, _namedpipe, _rpyc_lib, helpers, protocol, vinegar\n"
        "from grpyc._dropin import PROVIDED_MODULES, _DropinFinder\n"
        "installed = grpyc.install_as_rpyc()\n"
        "again = grpyc.install_as_rpyc()\n"
        "import rpyc\n"
        "import rpyc.utils.server\n"
        "import rpyc.core.protocol\n"
        "import rpyc.lib.compat\n"
        "from rpyc.utils.server import ThreadedServer\n"
        "from rpyc.utils import classic as utils_classic\n"
        "from rpyc.core import brine\n"
        "from rpyc.lib import colls\n"
        "core_names = ['SocketStream', 'TunneledSocketStream', 'PipeStream', 'Channel',\n"
        "              'Connection', 'BaseNetref', 'AsyncResult', 'AsyncResultTimeout',\n"
        "              'Service', 'VoidService', 'SlaveService', 'MasterService',\n"
        "              'ClassicService', 'GenericException']\n"
        "modules, failed = {}, {}\n"
        "for name in PROVIDED_MODULES:\n"
        "    try:\n"
        "        modules[name] = importlib.import_module(name).__name__\n"
        "    except ImportError as exc:\n"
        "        failed[name] = str(exc)\n"
        "print(json.dumps({\n"
        "    'same_package': installed is again is rpyc is sys.modules['rpyc'],\n"
        "    'finders': sum(isinstance(f, _DropinFinder) for f in sys.meta_path),\n"
        "    'modules': modules,\n"
        "    'failed': failed,\n"
        "    'same_objects': all(importlib.import_module(name) is sys.modules[target]\n"
        "                        for name, target in PROVIDED_MODULES.items()\n"
        "                        if name in modules),\n"
        "    'attribute_paths': [rpyc.utils.server is sys.modules['grpyc.server'],\n"
        "                        rpyc.core.protocol is sys.modules['grpyc.protocol'],\n"
        "                        ThreadedServer is grpyc.ThreadedServer,\n"
        "                        utils_classic is rpyc.classic is grpyc.classic,\n"
        "                        brine is sys.modules['grpyc.brine'],\n"
        "                        rpyc.lib.compat is _compat and colls is _colls],\n"
        "    'top': [rpyc.connect is grpyc.connect, rpyc.async_ is helpers.async_,\n"
        "            getattr(rpyc, 'async') is helpers.async_, rpyc.service is helpers.service,\n"
        "            rpyc.timed is helpers.timed, rpyc.lib.spawn is grpyc.spawn,\n"
        "            rpyc.setup_logger is rpyc.lib.setup_logger is grpyc.setup_logger],\n"
        "    'versions': [rpyc.__version__, rpyc.version.__version__, rpyc.version.version,\n"
        "                 vinegar.LOCAL_VERSION, grpyc.__version__],\n"
        "    'core': [getattr(rpyc.core, n) is getattr(grpyc, n) for n in core_names],\n"
        "    'core_config': rpyc.core.DEFAULT_CONFIG is protocol.DEFAULT_CONFIG,\n"
        "    'named_pipe': rpyc.core.NamedPipeStream is _namedpipe.NamedPipeStream,\n"
        "    'utils': [rpyc.utils.service is helpers.service,\n"
        "              rpyc.utils.exposed is helpers.exposed,\n"
        "              rpyc.utils.DEFAULT_CONFIG is protocol.DEFAULT_CONFIG],\n"
        "    'lib': [rpyc.lib.safe_import is _rpyc_lib.safe_import,\n"
        "            rpyc.lib.maxint == sys.maxsize, rpyc.lib.Timeout is grpyc.lib.Timeout],\n"
        "}))\n"
    )
    return json.loads(out)


def test_install_as_rpyc_serves_every_rpyc_module_from_grpyc(installed):
    # Modules other branches bring may not import yet; those that do are these.
    assert installed["modules"] == {
        name: target
        for name, target in {
            "rpyc.cli": "grpyc.cli",
            "rpyc.cli.rpyc_classic": "grpyc.cli.rpyc_classic",
            "rpyc.cli.rpyc_registry": "grpyc.cli.rpyc_registry",
            "rpyc.core.async": "grpyc.async_",
            "rpyc.core.async_": "grpyc.async_",
            "rpyc.core.brine": "grpyc.brine",
            "rpyc.core.channel": "grpyc.channel",
            "rpyc.core.consts": "grpyc.consts",
            "rpyc.core.netref": "grpyc.netref",
            "rpyc.core.protocol": "grpyc.protocol",
            "rpyc.core.service": "grpyc.service",
            "rpyc.core.stream": "grpyc.stream",
            "rpyc.core.vinegar": "grpyc.vinegar",
            "rpyc.lib.colls": "grpyc._colls",
            "rpyc.lib.compat": "grpyc._compat",
            "rpyc.utils.authenticators": "grpyc.authenticators",
            "rpyc.utils.classic": "grpyc.classic",
            "rpyc.utils.factory": "grpyc.factory",
            "rpyc.utils.helpers": "grpyc.helpers",
            "rpyc.utils.registry": "grpyc.registry",
            "rpyc.utils.server": "grpyc.server",
            "rpyc.utils.teleportation": "grpyc.teleportation",
            "rpyc.utils.zerodeploy": "grpyc.zerodeploy",
            "rpyc.version": "grpyc._rpyc_version",
        }.items()
        if name not in installed["failed"]
    }
    # The only ones allowed to fail are those other branches bring.
    assert set(installed["failed"]) <= {
        "rpyc.cli.rpyc_classic",
        "rpyc.cli.rpyc_registry",
        "rpyc.utils.zerodeploy",
    }
    assert installed["same_objects"] is True
    assert installed["attribute_paths"] == [True] * 6


def test_install_as_rpyc_packages_carry_rpyc_attributes(installed):
    assert installed["top"] == [True] * 7
    assert installed["core"] == [True] * 14
    assert installed["core_config"] is True
    assert installed["named_pipe"] is True
    assert installed["utils"] == [True, True, True]
    assert installed["lib"] == [True, True, True]


def test_rpyc_version_under_the_dropin_is_the_version_grpyc_reports(installed):
    assert installed["versions"] == [
        "6.0.2+grpyc.0.1.0",
        "6.0.2+grpyc.0.1.0",
        ["6", "0", "2"],
        "6.0.2+grpyc.0.1.0",
        "0.1.0",
    ]


def test_a_grpyc_peer_reports_the_dropin_rpyc_version():
    out = run_python(
        "import grpyc\n"
        "rpyc = grpyc.install_as_rpyc()\n"
        "conn = rpyc.classic.connect_thread()\n"
        "try:\n"
        "    conn.modules.builtins.int('not a number')\n"
        "except ValueError as exc:\n"
        "    print(exc._remote_version)\n"
        "print(rpyc.__version__)\n"
        "conn.close()\n"
    )
    assert out.splitlines() == ["6.0.2+grpyc.0.1.0", "6.0.2+grpyc.0.1.0"]


def test_install_as_rpyc_twice_is_harmless(installed):
    assert installed["same_package"] is True
    assert installed["finders"] == 1


def test_install_as_rpyc_refuses_when_real_rpyc_is_imported():
    out = run_python(
        "import rpyc, sys, grpyc\n"
        "real = sys.modules['rpyc']\n"
        "try:\n"
        "    grpyc.install_as_rpyc()\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
        "print(sys.modules['rpyc'] is real, 'grpyc' in repr(sys.modules['rpyc.core.protocol']))\n"
    )
    message, untouched = out.splitlines()
    assert message.startswith(
        "grpyc.install_as_rpyc(): the real rpyc is already imported in this process (rpyc, "
    )
    assert message.endswith("call install_as_rpyc() before anything imports rpyc")
    assert untouched == "True False"


def test_unprovided_rpyc_modules_fail_with_a_clear_error():
    out = run_python(
        "import grpyc\n"
        "rpyc = grpyc.install_as_rpyc()\n"
        "for name in ('rpyc.core.reactor', 'rpyc.lib.nothing'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        print(type(exc).__name__, exc.name, '|', exc)\n"
        "print(hasattr(rpyc.core, 'reactor'), hasattr(rpyc.utils, 'teleportation'))\n"
    )
    reactor, nothing, attributes = out.splitlines()
    assert reactor.startswith(
        "ModuleNotFoundError rpyc.core.reactor | rpyc.core.reactor is not provided "
        "by grpyc's RPyC drop-in (grpyc.install_as_rpyc); it provides rpyc, rpyc.core, "
        "rpyc.utils, rpyc.lib, rpyc.cli, "
    )
    assert nothing.startswith("ModuleNotFoundError rpyc.lib.nothing | rpyc.lib.nothing is not ")
    # Submodules that load on first use load on attribute access too.
    assert attributes == "False True"


def test_a_lazy_module_that_cannot_load_is_a_missing_attribute_not_an_import_error():
    out = run_python(
        "import sys, grpyc\n"
        "from grpyc import _dropin\n"
        "_dropin.PROVIDED_MODULES['rpyc.utils.ghost'] = 'grpyc.no_such_module'\n"
        "rpyc = grpyc.install_as_rpyc()\n"
        "print(getattr(rpyc.utils, 'ghost', 'absent'))\n"
        "try:\n"
        "    import rpyc.utils.ghost\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc.name, 'rpyc.utils.ghost' in sys.modules)\n"
    )
    assert out.splitlines() == ["absent", "grpyc.no_such_module False"]


# An RPyC program that reaches everything through the package's attributes
# (``rpyc.utils.server.ThreadedServer``, ``rpyc.core.netref``, ...), run with
# ``import rpyc as R`` and with ``import grpyc as R``: the same output.
ATTRIBUTE_PATHS_PROGRAM = """
import importlib, json, sys
if sys.argv[2] == "patched":
    from gevent import monkey

    monkey.patch_all()
import threading, time

R = importlib.import_module(sys.argv[1])

class Calc(R.Service):
    def exposed_add(self, a, b):
        return a + b

    def exposed_call(self, func):
        return func(3)

server = R.utils.server.ThreadedServer(Calc, hostname="127.0.0.1", port=0)
threading.Thread(target=server.start, daemon=True).start()
for _ in range(500):  # start() listens in its thread: retry until it does
    try:
        conn = R.connect("127.0.0.1", server.port)
        break
    except ConnectionRefusedError:
        time.sleep(0.01)
out = {
    "add": conn.root.add(2, 3),
    "callback": conn.root.call(lambda x: x * 2),
    "netref": isinstance(conn.root, R.core.netref.BaseNetref),
    "ping_handler": R.core.consts.HANDLE_PING,
    "async": getattr(R, "async") is R.async_,
    "lib": [callable(R.lib.spawn), R.lib.Timeout(None).expired()],
    "helpers": R.utils.helpers.BgServingThread is R.BgServingThread,
    "factory": R.utils.factory.connect is R.connect,
    "classic": callable(R.utils.classic.connect),
    "timeout": R.core.AsyncResultTimeout.__name__,
    "unknown": hasattr(R.utils, "no_such_module"),
}
conn.close()
server.close()
print(json.dumps(out, sort_keys=True))
"""


@pytest.mark.parametrize("mode", ["threads", "patched"])
def test_import_grpyc_as_rpyc_runs_a_program_of_attribute_paths_as_stock_does(mode):
    outputs = {
        library: run_python(
            f"import sys; sys.argv[1:] = [{library!r}, {mode!r}]\n{ATTRIBUTE_PATHS_PROGRAM}"
        )
        for library in ("rpyc", "grpyc")
    }
    assert json.loads(outputs["grpyc"]) == json.loads(outputs["rpyc"])
    assert json.loads(outputs["grpyc"])["callback"] == 6


# ------------------------------------------------ the drop-in program, both ways
def _start(args, env=None, stdin=None):
    return gsubprocess.Popen(
        [sys.executable, *args],
        cwd=PROGRAM,
        env=env or ENV,
        stdin=stdin,
        stdout=gsubprocess.PIPE,
        stderr=gsubprocess.PIPE,
        text=True,
    )


def _read_line(proc, timeout=15):
    with gevent.Timeout(timeout, AssertionError(f"no output from {proc.args!r}")):
        return proc.stdout.readline().rstrip("\n")


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def expected_client_output(connection_class):
    return [
        "compat: b'ok' True True",
        "safe_import: zlib False",
        "colls: 1 True",
        "named pipes: not on this platform",
        f"connection class: {connection_class}",
        "add: 5",
        "apply with callback: (10, 20, 30)",
        "async ready at once: False",
        "async value: 49",
        "timed: expired",
        "remote error: ZeroDivisionError",
        "registered remote error: CalcError ('negative', -4)",
        "remote major version: 6",
        "pickled copy: list [2, 3, 5, 7]",
        "discovered: [True]",
        "connect_by_service: 42",
        "classic eval: 42",
        "classic runs elsewhere: True",
        "classic upload: uploaded by the client",
        "log: rpyc ERROR: client finished",
        "client: done",
    ]


LAUNCHERS = {"grpyc": ["run_on_grpyc.py"], "stock": []}
CONNECTION_CLASSES = {
    "grpyc": "grpyc.protocol.Connection",
    "stock": "rpyc.core.protocol.Connection",
}


@pytest.mark.parametrize("bind_threads", [False, True], ids=["", "bind_threads"])
@pytest.mark.parametrize(
    ("server_side", "client_side"),
    [("grpyc", "grpyc"), ("stock", "stock"), ("grpyc", "stock"), ("stock", "grpyc")],
    ids=["grpyc", "stock-rpyc", "grpyc-server-stock-client", "stock-server-grpyc-client"],
)
def test_rpyc_program_runs_unchanged(server_side, client_side, bind_threads):
    """The program's server side (a registry, a fixture-style server that
    registers, RPyC's classic command line) on one library, its client on the
    other; with RPYC_BIND_THREADS=true, every process speaks RPyC's
    thread-bound framing."""
    env = {**ENV, BIND_THREADS_VARIABLE: "true" if bind_threads else ""}
    launcher = LAUNCHERS[server_side]
    registry = _start([*launcher, "registry.py"], env)
    calc = classic = None
    try:
        registry_port = _read_line(registry).removeprefix("registry: listening on port ")
        calc = _start([*launcher, "server.py", registry_port], env, gsubprocess.PIPE)
        classic = _start([*launcher, "classic_server.py"], env)
        calc_port = _read_line(calc).removeprefix("server: listening on port ")
        assert _read_line(classic) == "rpyc-oneshot"
        classic_host, classic_port = _read_line(classic).split("\t")
        client = _start(
            [*LAUNCHERS[client_side], "client.py", calc_port, classic_host, classic_port,
             registry_port],
            env,
        )  # fmt: skip
        with gevent.Timeout(30, AssertionError("client did not finish")):
            output, errors = client.communicate()
        assert client.returncode == 0, errors
        assert output.splitlines() == expected_client_output(CONNECTION_CLASSES[client_side])
        with gevent.Timeout(10, AssertionError("classic oneshot server did not exit")):
            assert classic.wait() == 0
        calc.stdin.close()  # the server closes and reports it
        lines = [_read_line(calc) for _ in range(5)]
        assert lines == ["server: client connected", "server: client disconnected"] * 2 + [
            "server: closed True"
        ]
        with gevent.Timeout(10, AssertionError("server did not exit")):
            returncode = calc.wait()
        # Its stderr shows where, if it crashed (faulthandler is on: see ENV).
        assert returncode == 0, calc.stderr.read()
    finally:
        for proc in (classic, calc, registry):
            if proc is not None:
                _stop(proc)


# ------------------------------------------------------------------ the example
def test_rpyc_style_example_runs_and_reports_every_step():
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "rpyc_style.py")],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "join: welcome, ada",
        "say: reached 1 listener(s); the callback got ['HELLO']",
        "async_: ready at once? False",
        "async_: value 'later'",
        "timed: expired? True",
        "remote exception: AttributeError",
        "classic upload: 'sent with rpyc.classic.upload\\n'",
        "classic eval: 1024",
        "classic server pid differs: True",
        "all steps as expected",
    ]
