"""grpyc/_accel.py: compiled hot modules, the pure-Python switch, stale extensions.

The compiled build is what `pip install` makes where Cython and a C compiler
are found; the pure build is what runs without them or with
GRPYC_PURE_PYTHON set. Both must behave the same: the core test modules run
here once more under the pure build.
"""

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grpyc import _accel

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "grpyc"
BUILT = [
    name
    for name in _accel.ACCELERATED
    if any((PACKAGE / f"{name}{s}").exists() for s in importlib.machinery.EXTENSION_SUFFIXES)
]
needs_build = pytest.mark.skipif(
    not BUILT and os.environ.get("CI") != "true",
    reason="no compiled modules in this checkout (pip install without Cython or a compiler)",
)

LOADED = """
import importlib, json, grpyc
from grpyc import _accel
for name in _accel.ACCELERATED:
    importlib.import_module("grpyc." + name)
print(json.dumps(_accel.compiled_modules()))
"""


def _compiled_in_child(env_extra=None, path=None):
    env = {k: v for k, v in os.environ.items() if k != _accel.PURE_PYTHON_VARIABLE}
    env.update(env_extra or {})
    if path is not None:
        env["PYTHONPATH"] = str(path)
    done = subprocess.run(
        [sys.executable, "-c", LOADED],
        cwd=path or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_build
def test_every_hot_module_is_built_and_runs_compiled_by_default():
    assert list(_accel.ACCELERATED) == BUILT
    assert _compiled_in_child() == list(_accel.ACCELERATED)


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_the_variable_makes_every_module_run_from_source(value):
    assert _compiled_in_child({_accel.PURE_PYTHON_VARIABLE: value}) == []


@needs_build
@pytest.mark.parametrize("value", ["", "0"])
def test_empty_or_zero_keeps_the_compiled_modules(value):
    assert _compiled_in_child({_accel.PURE_PYTHON_VARIABLE: value}) == list(_accel.ACCELERATED)


def _copy_package(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "grpyc", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "grpyc"


@needs_build
@pytest.mark.parametrize(
    ("edited", "module"),
    [("_brine_decode.py", "_brine_decode"), ("_brine_small.pxd", "_brine_small")],
)
def test_an_edited_source_runs_from_source_and_the_rest_stays_compiled(tmp_path, edited, module):
    # The .pxd beside a typed module is part of its source.
    package = _copy_package(tmp_path)
    with open(package / edited, "a", encoding="utf-8") as file:
        file.write("\n# edited after the build\n")
    compiled = _compiled_in_child(path=tmp_path)
    assert module not in compiled
    assert compiled == [name for name in _accel.ACCELERATED if name != module]


@needs_build
def test_without_the_manifest_no_extension_is_trusted(tmp_path):
    package = _copy_package(tmp_path)
    (package / _accel.MANIFEST_NAME).unlink()
    assert _compiled_in_child(path=tmp_path) == []


@needs_build
def test_the_manifest_records_the_digest_of_each_compiled_source():
    digests = json.loads((PACKAGE / _accel.MANIFEST_NAME).read_text(encoding="utf-8"))
    for name in BUILT:
        assert digests[name] == _accel.source_digest(_accel.module_source(PACKAGE, name)), name


def test_source_path_names_the_py_file_of_compiled_and_pure_modules():
    from grpyc import brine, netref

    assert _accel.source_path(brine) == PACKAGE / "brine.py"
    assert _accel.source_path(netref) == PACKAGE / "netref.py"
    assert _accel.source_path(sys.modules["grpyc"]) == PACKAGE / "__init__.py"


# The tests of the compiled modules (brine) and of what decodes with them,
# run once more on their pure-Python source.
CORE_TESTS = [
    "tests/test_brine.py",
    "tests/test_brine_limits.py",
    "tests/test_incompressible.py",
    "tests/test_protocol.py",
    "tests/hostile/test_raw_input.py",
    "tests/hostile/test_peers_are_data.py",
]


@pytest.mark.timeout(240)
def test_the_core_tests_pass_on_the_pure_python_build_too():
    env = dict(os.environ, **{_accel.PURE_PYTHON_VARIABLE: "1"})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CORE_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]
