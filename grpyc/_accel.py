"""Compiled or pure Python: which of grpyc's hot modules run as C extensions.

The modules in `ACCELERATED` are plain Python that Cython can also compile
unchanged (setup.py does it when `pip install` finds Cython and a C
compiler). An extension beside a ``.py`` file wins the import by default;
this module decides, before any of them is imported, when the source must
win instead:

- ``GRPYC_PURE_PYTHON`` is set (to anything but ``""`` or ``"0"``): every
  module runs from its source, as on a machine without a compiler;
- a source (its ``.py`` file, or the ``.pxd`` typing it) changed since its
  extension was built (an editable install being edited): that module runs
  from its source, so a stale extension never hides an edit.

The build records a digest of each compiled source in `MANIFEST_NAME`;
no manifest means no extension is trusted.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

__all__ = [
    "ACCELERATED",
    "MANIFEST_NAME",
    "PURE_PYTHON_VARIABLE",
    "compiled_modules",
    "module_source",
    "source_digest",
    "source_path",
]

# Chosen by measurement (gevent client and server, one CPU, interleaved runs;
# docs/benchmarks.md): compiled, the brine codec gives 1.12x on a sequential
# call and 1.05x on a call with one callback. The rest of the codecs that
# never switch greenlets (boxing, framing, messages) added 1.05-1.06x on S1
# bound calls, 1.03-1.05x on S5 and 1.03-1.05x on 16 callback callers, with
# the callback figures unchanged (two same-run comparisons against the
# build without them). Compiling the runtime modules (hub, baton, dispatch)
# gave nothing on the sequential path and cost 10 % on callbacks (a greenlet
# switch copies the C stack compiled frames live on); the I/O modules were
# neutral (`channel`: 1.02x on S1, 0.98x on one callback; typed as an
# extension type with a .pxd, 6 % fewer instructions per bound call, the same
# wall time, and 0.96x on one callback). netref stays
# Python in any case: proxies rely on plain-function semantics (pickling
# hooks, introspection).
ACCELERATED: Final = (
    "_brine_decode",
    "_brine_small",
    "_brine_encode",
    "_brine_limits",
    "brine",
    "boxing",
    "framing",
    "messages",
    "_incompressible",
)
PURE_PYTHON_VARIABLE: Final = "GRPYC_PURE_PYTHON"
MANIFEST_NAME: Final = "_accel_manifest.json"
_PACKAGE: Final = "grpyc"


def source_digest(source: bytes) -> str:
    """The digest the build records for a module's source (see `module_source`)."""
    return hashlib.sha256(source).hexdigest()


def module_source(package_dir: Path, name: str) -> bytes:
    """What the build of module `name` compiles: its ``.py`` file, then the
    ``.pxd`` beside it if there is one (the C types of a typed module)."""
    source = (package_dir / f"{name}.py").read_bytes()
    declarations = package_dir / f"{name}.pxd"
    if declarations.exists():
        source += declarations.read_bytes()
    return source


def source_path(module: ModuleType) -> Path:
    """The ``.py`` file a grpyc module is (or was compiled) from."""
    file = Path(module.__file__ or "")
    if file.suffix == ".py":
        return file
    return file.with_name(module.__name__.rpartition(".")[2] + ".py")


def compiled_modules() -> list[str]:
    """The accelerated modules imported so far that run as extensions."""
    compiled = []
    for name in ACCELERATED:
        module = sys.modules.get(f"{_PACKAGE}.{name}")
        if module is not None and not (module.__file__ or "").endswith(".py"):
            compiled.append(name)
    return compiled


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the listed modules in their ``.py`` files, ahead of any extension."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self._sources = sources

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self._sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def _has_extension(package_dir: Path, name: str) -> bool:
    return any(
        (package_dir / f"{name}{suffix}").exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def _built_digests(package_dir: Path) -> dict[str, str]:
    try:
        with open(package_dir / MANIFEST_NAME, encoding="utf-8") as file:
            digests = json.load(file)
    except (OSError, ValueError):
        return {}
    return digests if isinstance(digests, dict) else {}


def _sources_to_prefer(package_dir: Path) -> dict[str, Path]:
    pure = os.environ.get(PURE_PYTHON_VARIABLE, "") not in ("", "0")
    compiled = [name for name in ACCELERATED if _has_extension(package_dir, name)]
    if not compiled:
        return {}
    digests = {} if pure else _built_digests(package_dir)
    preferred = {}
    for name in compiled:
        if pure or digests.get(name) != source_digest(module_source(package_dir, name)):
            preferred[f"{_PACKAGE}.{name}"] = package_dir / f"{name}.py"
    return preferred


def _install(package_dir: Path) -> None:
    sources = _sources_to_prefer(package_dir)
    if sources:
        sys.meta_path.insert(0, _SourceFinder(sources))


# Runs once, when grpyc/__init__.py imports this module first of all.
_install(Path(__file__).resolve().parent)
