"""Every public name of stock rpyc 6.0.2 exists under `install_as_rpyc`, or is excluded.

The stock names are read at test time from the installed ``rpyc`` package
(its files and the modules as imported), in a fresh interpreter; the
drop-in is checked in another, since `install_as_rpyc` refuses to run where
the real rpyc is imported. The one list of names grpyc leaves out, each
with its reason, is the exclusions table of docs/migration.md: a name
missing and not listed fails, and so does a listed name that exists (the
table only holds what is really missing).

Which stock names are public: every module of the package; in each, the
names its own top-level code binds (``def``, ``class``, assignment, in any
branch, and ``globals()[...]``), and in a package's ``__init__`` also the
names it imports and its submodules; without a leading underscore and
present once the module is imported. A name bound to a module or to a
`safe_import` placeholder (an optional import) is not API, nor is a
standard-library or third-party object kept under its own name
(``next = next``). Some names that reading cannot find, or that RPyC
programs use despite the underscore, are added by hand (`ALSO_PUBLIC`).

Also here: grpyc's own public names, listed once in ``grpyc/__init__.py``,
agree with the imports type checkers read there.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MIGRATION = ROOT / "docs" / "migration.md"

# (module, name) pairs that reading the source cannot find (bound by exec),
# or that RPyC programs use although they start with an underscore.
ALSO_PUBLIC = [
    ("rpyc", "__version__"),
    ("rpyc.version", "__version__"),
    ("rpyc.lib.compat", "execute"),
    # Registering a class here makes a remote exception of that name load as it.
    ("rpyc.core.vinegar", "_generic_exceptions_cache"),
]

STOCK_NAMES = r"""
import ast, importlib, json, pkgutil, sys, types
import rpyc
from rpyc.lib import MissingModule

def bound_names(body, is_package):
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
                    elif (isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Call)
                          and getattr(sub.value.func, "id", None) == "globals"
                          and isinstance(sub.slice, ast.Constant)):
                        names.add(sub.slice.value)
        elif isinstance(node, ast.ImportFrom) and is_package:
            names.update(alias.asname or alias.name for alias in node.names)
        for field in ("body", "orelse", "finalbody", "handlers"):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names |= bound_names(getattr(node, field, []), is_package)
    return names

def is_reexport(name, value):
    owner = getattr(value, "__module__", None)
    if not isinstance(owner, str) or owner.split(".")[0] == "rpyc":
        return False
    return getattr(sys.modules.get(owner), name, None) is value or getattr(
        value, "__name__", None) == name

def public_names(name, module):
    is_package = hasattr(module, "__path__")
    with open(module.__file__, encoding="utf-8") as file:
        tree = ast.parse(file.read())
    names = set()
    for attr in bound_names(tree.body, is_package):
        if attr.startswith("_") or not hasattr(module, attr):
            continue
        value = getattr(module, attr)
        if isinstance(value, types.ModuleType):
            if is_package and value.__name__.startswith("rpyc."):
                names.add(attr)
        elif not isinstance(value, MissingModule) and not is_reexport(attr, value):
            names.add(attr)
    return names

module_names = ["rpyc"] + [info.name for info in pkgutil.walk_packages(rpyc.__path__, "rpyc.")]
modules = {name: importlib.import_module(name) for name in module_names}
for name, module in modules.items():
    if hasattr(module, "__path__"):
        public = public_names(name, module) | {
            child.rpartition(".")[2] for child in module_names
            if child.rpartition(".")[0] == name}
    else:
        public = public_names(name, module)
    modules[name] = sorted(public)
print(json.dumps({"version": rpyc.__version__, "modules": modules}))
"""

DROPIN_MISSING = r"""
import importlib, json, sys
import grpyc
grpyc.install_as_rpyc()
wanted = json.loads(sys.stdin.read())
missing = {}
for name, attrs in wanted.items():
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        missing[name] = f"{type(exc).__name__}: {exc}"
        continue
    for attr in attrs:
        if not hasattr(module, attr):
            missing[f"{name}.{attr}"] = "no such attribute"
print(json.dumps(missing))
"""


def run_python(code, stdin=""):
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=ENV,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def read_exclusions():
    """The exclusions table of docs/migration.md: {name or ``prefix*``: reason}."""
    text = MIGRATION.read_text(encoding="utf-8")
    marker = "<!-- api-surface-exclusions -->"
    assert text.count(marker) == 1, f"{MIGRATION} must hold the marker {marker} once"
    rows = {}
    for line in text.split(marker, 1)[1].lstrip("\n").splitlines():
        if not line.startswith("|"):
            break
        names, reason = (cell.strip() for cell in line.strip("|").split("|", 1))
        for name in re.findall(r"`(rpyc[\w.]*\*?)`", names):
            rows[name] = reason
    return rows


def covers(row, qualified):
    """Whether exclusion ``row`` (a name, a module, or ``prefix*``) covers ``qualified``."""
    if row.endswith("*"):
        return qualified.startswith(row[:-1])
    return qualified == row or qualified.startswith(row + ".")


@pytest.fixture(scope="module")
def stock_surface():
    found = run_python(STOCK_NAMES)
    assert found["version"] == "6.0.2"
    surface = found["modules"]
    for module, name in ALSO_PUBLIC:
        surface[module] = sorted({*surface[module], name})
    return surface


@pytest.fixture(scope="module")
def missing_under_dropin(stock_surface):
    return run_python(DROPIN_MISSING, stdin=json.dumps(stock_surface))


def test_stock_surface_is_read_in_full(stock_surface):
    # A reading that lost modules or names would make the check below vacuous.
    assert len(stock_surface) == 29
    assert sum(len(names) for names in stock_surface.values()) > 300
    assert "ThreadedServer" in stock_surface["rpyc.utils.server"]
    assert "execute" in stock_surface["rpyc.lib.compat"]
    assert "async" in stock_surface["rpyc"]
    assert {"compat", "colls", "safe_import", "setup_logger"} <= set(stock_surface["rpyc.lib"])
    # Imports are not API: stdlib modules, optional imports, stdlib re-exports.
    assert "socket" not in stock_surface["rpyc.utils.server"]
    assert "gevent" not in stock_surface["rpyc.utils.server"]
    assert "next" not in stock_surface["rpyc.lib.compat"]
    assert "AsyncResultTimeout" in stock_surface["rpyc.core"]


def test_every_stock_name_exists_under_the_dropin_or_is_excluded(missing_under_dropin):
    exclusions = read_exclusions()
    unexplained = {
        name: why
        for name, why in missing_under_dropin.items()
        if not any(covers(row, name) for row in exclusions)
    }
    listing = "\n".join(f"{name}: {why[:100]}" for name, why in sorted(unexplained.items()))
    assert not unexplained, f"missing under install_as_rpyc() and not excluded:\n{listing}"


def test_every_exclusion_is_still_missing_and_has_a_reason(missing_under_dropin):
    exclusions = read_exclusions()
    assert len(exclusions) >= 10, "the exclusions table is unreadable"
    provided = sorted(
        row for row in exclusions if not any(covers(row, name) for name in missing_under_dropin)
    )
    assert provided == []
    assert {row: reason for row, reason in exclusions.items() if len(reason) < 20} == {}


# What ``import X as rpyc`` reaches by attributes alone: {module: its stock
# names found there}, or None where the module is not reachable.
REACHED_BY_ATTRIBUTES = r"""
import importlib, json, sys
top = importlib.import_module(sys.argv[1])
reached = {}
for name, attrs in json.loads(sys.stdin.read()).items():
    obj = top
    for part in name.split(".")[1:]:
        obj = getattr(obj, part, None)
    reached[name] = None if obj is None else sorted(a for a in attrs if hasattr(obj, a))
print(json.dumps(reached))
"""


# ``rpyc.lib`` after ``import grpyc as rpyc`` is grpyc's own `grpyc.lib`, a
# lower layer than the drop-in's shims; these come with ``install_as_rpyc()``
# (docs/migration.md says so).
RPYC_LIB_WITH_THE_DROPIN_ONLY = [
    *(f"rpyc.lib.{name}" for name in ("compat", "colls", "maxint", "MissingModule")),
    *(f"rpyc.lib.{name}" for name in ("SPAWN_THREAD_PREFIX", "exp_backoff", "hybridmethod")),
    *(f"rpyc.lib.{name}" for name in ("safe_import", "socket_backoff_connect", "spawn_waitready")),
]


def test_import_grpyc_as_rpyc_reaches_what_import_rpyc_reaches_by_attributes(stock_surface):
    # ``import rpyc`` binds its subpackages and the modules it loads, so RPyC
    # code reads ``rpyc.utils.server.ThreadedServer`` or ``rpyc.core.netref``
    # without importing them: each such path, and each name there, works on
    # ``import grpyc as rpyc`` too (or is in the exclusions table).
    stock = run_python(
        f"import sys; sys.argv[1:] = ['rpyc']\n{REACHED_BY_ATTRIBUTES}",
        stdin=json.dumps(stock_surface),
    )
    ours = run_python(
        f"import sys; sys.argv[1:] = ['grpyc']\n{REACHED_BY_ATTRIBUTES}",
        stdin=json.dumps(stock_surface),
    )
    exclusions = read_exclusions()
    exclusions.update(dict.fromkeys(RPYC_LIB_WITH_THE_DROPIN_ONLY, "docs/migration.md"))
    reachable = {name: attrs for name, attrs in stock.items() if attrs is not None}
    assert {
        "rpyc",
        "rpyc.core",
        "rpyc.utils",
        "rpyc.utils.server",
        "rpyc.core.netref",
        "rpyc.lib",
        "rpyc.lib.compat",
    } <= set(reachable)
    unexplained = sorted(
        f"{name}.{attr}" if attr else name
        for name, attrs in reachable.items()
        for attr in ([None] if ours[name] is None else sorted(set(attrs) - set(ours[name])))
        if not any(covers(row, f"{name}.{attr}" if attr else name) for row in exclusions)
    )
    assert unexplained == []


# ------------------------------------------------------- grpyc's own name table
def _imported_public_names(tree):
    """{name: module} of the ``from M import X as X`` lines at top level and under TYPE_CHECKING."""
    names = {}
    for node in tree.body:
        body = [node]
        if isinstance(node, ast.If) and ast.unparse(node.test).lstrip("_") == "TYPE_CHECKING":
            body = node.body
        for statement in body:
            if not isinstance(statement, ast.ImportFrom):
                continue
            for alias in statement.names:
                if alias.asname == alias.name:
                    # ``from grpyc import classic as classic`` imports a module.
                    is_module = statement.module == "grpyc"
                    names[alias.name] = f"grpyc.{alias.name}" if is_module else statement.module
    return names


GRPYC_TABLE = r"""
import importlib, json, grpyc
def target(name, module_name):
    module = importlib.import_module(module_name)
    return module if module_name.rpartition(".")[2] == name else getattr(module, name)
table = grpyc._PUBLIC_NAMES
print(json.dumps({
    "table": table,
    "all": grpyc.__all__,
    "unresolved": sorted(n for n, m in table.items() if getattr(grpyc, n) is not target(n, m)),
}))
"""


def test_grpyc_public_names_are_listed_once_and_imported_for_type_checkers():
    tree = ast.parse((ROOT / "grpyc" / "__init__.py").read_text(encoding="utf-8"))
    out = run_python(GRPYC_TABLE)
    assert out["all"] == sorted(out["table"])
    assert out["unresolved"] == []
    assert _imported_public_names(tree) == out["table"]


# ------------------------------------------------------------- distribution
def test_distribution_grpyc_gevent_installs_the_grpyc_package_and_command():
    out = run_python(
        "import importlib.metadata as metadata, json, grpyc\n"
        "dist = metadata.distribution('grpyc-gevent')\n"
        "scripts = {ep.name: ep.value for ep in dist.entry_points\n"
        "           if ep.group == 'console_scripts'}\n"
        "print(json.dumps([dist.metadata['Name'], dist.version, grpyc.__version__, scripts]))\n"
    )
    assert out == ["grpyc-gevent", "0.1.0", "0.1.0", {"grpyc": "grpyc.cli:main"}]
