"""Optional compiled build of grpyc's hot modules (see grpyc/_accel.py).

Everything else about the package is in pyproject.toml and setup.cfg. With
Cython and a C compiler, the modules listed in `grpyc._accel.ACCELERATED`
are compiled from their unchanged ``.py`` sources; without either, or with
``GRPYC_PURE_PYTHON`` set at build time, grpyc installs as pure Python and
works the same, slower.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "grpyc"


def _accel_constant(name: str) -> object:
    # Read from the source: importing grpyc here would need gevent at build time.
    tree = ast.parse((PACKAGE / "_accel.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name:
            return ast.literal_eval(node.value)  # type: ignore[arg-type]
    raise LookupError(name)


ACCELERATED: tuple[str, ...] = _accel_constant("ACCELERATED")  # type: ignore[assignment]
MANIFEST_NAME: str = _accel_constant("MANIFEST_NAME")  # type: ignore[assignment]
PURE_PYTHON_VARIABLE: str = _accel_constant("PURE_PYTHON_VARIABLE")  # type: ignore[assignment]


class OptionalBuildExt(build_ext):
    """Compiles what it can; a failed compile leaves that module pure Python."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1  # one compiler per CPU

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - no compiler: install pure Python
            self._warn(f"compiled modules not built ({error}); grpyc runs as pure Python")
        self._write_manifest()

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001 - that module stays pure Python
            self._warn(f"{ext.name} not compiled ({error})")

    def _write_manifest(self) -> None:
        # Digests of the sources actually compiled, beside the extensions:
        # grpyc/_accel.py trusts an extension only if its source is unchanged.
        import hashlib

        built: dict[str, str] = {}
        target_dir: Path | None = None
        for ext in self.extensions:
            path = Path(self.get_ext_fullpath(ext.name))
            target_dir = path.parent
            name = ext.name.rpartition(".")[2]
            if path.exists():
                # As grpyc._accel.module_source: the .py, then its .pxd if any.
                source = (PACKAGE / f"{name}.py").read_bytes()
                declarations = PACKAGE / f"{name}.pxd"
                if declarations.exists():
                    source += declarations.read_bytes()
                built[name] = hashlib.sha256(source).hexdigest()
        if target_dir is not None:
            target_dir.mkdir(parents=True, exist_ok=True)
            manifest = json.dumps(built, indent=1, sort_keys=True)
            (target_dir / MANIFEST_NAME).write_text(manifest + "\n", encoding="utf-8")

    @staticmethod
    def _warn(message: str) -> None:
        sys.stderr.write(f"grpyc setup: {message}\n")


def _extensions() -> list[Extension]:
    if os.environ.get(PURE_PYTHON_VARIABLE, "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    sources = [f"grpyc/{name}.py" for name in ACCELERATED]
    return cythonize(  # type: ignore[no-any-return]
        sources,
        build_dir="build/cython",  # the generated C stays out of the package
        language_level=3,
        quiet=True,
        nthreads=os.cpu_count() or 1,
        compiler_directives={
            "binding": True,  # functions keep their Python introspection
            "annotation_typing": False,  # hints stay hints: same semantics as Python
        },
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
