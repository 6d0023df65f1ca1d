"""The import contracts and size bounds of ../shared/DESIGN.md, checked on the source.

Every ``import`` in grpyc/ counts, type-only and function-level ones too:
imports only point down the layers (codecs < io < runtime < core < services
< edges), nothing imports in a cycle, and the forbidden pairs stay apart.
"""

import ast
import pathlib
import re

import pytest

GRPYC = pathlib.Path(__file__).resolve().parent.parent / "grpyc"

# DESIGN.md's layers, lowest first; a module not listed is an edge.
LAYERS = {
    "codecs": [
        "consts", "version", "brine", "_brine_decode", "_brine_small", "_brine_encode",
        "_brine_limits",
        "vinegar", "messages", "policy", "config", "teleportation", "framing",
        "_introspect", "_checks", "_names", "_accel", "_payloads", "_incompressible", "_tbtext",
        "_firstuse",
    ],
    "io": ["stream", "_streambase", "_pipestream", "_namedpipe", "channel"],
    "runtime": [
        "hub", "_callers", "_owned", "_runtime", "_admission", "_writer", "_baton", "_readers",
        "_crossthread", "_blockhook", "_waitlists", "_threadhub", "async_", "lib",
    ],
    "core": [
        "protocol", "netref", "boxing", "_handlers", "_answering", "_serving",
        "_keepalive", "_threadbind",
    ],
    "services": ["service", "helpers"],
}  # fmt: skip
EDGES = len(LAYERS)
FORBIDDEN = [
    ("grpyc.netref", "grpyc.protocol"),
    ("grpyc.hub", "grpyc.protocol"),
    ("grpyc.hub", "grpyc.netref"),
    ("grpyc.async_", "grpyc.protocol"),
]


def module_name(path):
    parts = path.relative_to(GRPYC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(GRPYC.rglob("*.py"))}
RANK = {f"grpyc.{name}": rank for rank, names in enumerate(LAYERS.values()) for name in names}


def imports_of(path):
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "grpyc":
                found |= {f"grpyc.{alias.name}" for alias in node.names}
            elif node.module.startswith("grpyc."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("grpyc")}
    return {name for name in found if name in MODULES}


IMPORTS = {name: imports_of(path) for name, path in MODULES.items()}


def test_every_layer_module_exists():
    assert set(RANK) <= set(MODULES), set(RANK) - set(MODULES)


def test_imports_only_point_down():
    upward = [
        (module, target)
        for module, targets in IMPORTS.items()
        for target in targets
        if RANK.get(target, EDGES) > RANK.get(module, EDGES)
    ]
    assert upward == []


def test_no_import_cycle():
    cycles = []

    def visit(module, path):
        for target in IMPORTS[module]:
            if target == path[0]:
                cycles.append([*path, target])
            elif target not in path and len(path) < len(MODULES):
                visit(target, [*path, target])

    for module in MODULES:
        visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize(("module", "target"), FORBIDDEN)
def test_forbidden_import(module, target):
    assert target not in IMPORTS[module]


def test_no_module_over_600_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: size for name, size in sizes.items() if size > 600} == {}


def test_no_function_over_80_lines_and_connection_under_450():
    long_defs = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            size = (getattr(node, "end_lineno", 0) or 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and size > 80:
                long_defs.append((name, node.name, size))
            if isinstance(node, ast.ClassDef) and node.name == "Connection":
                assert size <= 450, size
    assert long_defs == []


def test_the_architecture_page_lists_every_module():
    page = (GRPYC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([\w.]+)` \|", page, flags=re.M))
    modules = {path.stem for path in GRPYC.glob("*.py")}
    assert listed == modules


def test_the_architecture_page_marks_exactly_the_compiled_modules():
    from grpyc._accel import ACCELERATED

    page = (GRPYC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    marked = set(re.findall(r"^\| `([\w.]+)` \|.*\(compiled\) \|$", page, flags=re.M))
    assert marked == set(ACCELERATED)
