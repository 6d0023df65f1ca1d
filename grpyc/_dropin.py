"""`install_as_rpyc`: make ``import rpyc`` load grpyc, for RPyC programs run unchanged.

Owns the table of RPyC 6 module names and the grpyc module behind each, and
the four package objects (``rpyc``, ``rpyc.core``, ``rpyc.utils``,
``rpyc.lib``) that carry the attributes RPyC's packages have. Every other
``rpyc.*`` module is the grpyc module object itself (one module object
under two names, no copies), so ``import rpyc.utils.server`` and ``from
rpyc.utils.server import ThreadedServer`` give grpyc's objects.

How: the packages go into `sys.modules`, and a finder placed first in
`sys.meta_path` answers every other ``rpyc.*`` name. For a name in the
table its loader imports the grpyc module and puts that module object in
`sys.modules` under the RPyC name, which the import system then returns. A
name not in the table fails with a `ModuleNotFoundError` that says so;
grpyc never falls back to the real rpyc. `install_as_rpyc` itself loads
the modules stock ``import rpyc`` loads; the others (``rpyc.cli``,
``rpyc.utils.zerodeploy``, ...) load on first import or attribute access,
so a module that needs an optional dependency costs nothing until used.

Nothing happens on import of this module; `install_as_rpyc` changes
``sys.modules`` and ``sys.meta_path`` when called.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["PROVIDED_MODULES", "install_as_rpyc", "subpackage"]

# RPyC 6's module name -> the grpyc module that stands in for it.
PROVIDED_MODULES: dict[str, str] = {
    "rpyc.cli": "grpyc.cli",
    "rpyc.cli.rpyc_classic": "grpyc.cli.rpyc_classic",
    "rpyc.cli.rpyc_registry": "grpyc.cli.rpyc_registry",
    # RPyC's module from before ``async`` became a keyword (importlib only).
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
}

# The modules stock ``import rpyc`` loads, which `install_as_rpyc` loads too
# (``rpyc.cli`` aside: grpyc's is the command-line tool, which programs do
# not need). Every other name loads on first import or attribute access.
_LOADED_BY_INSTALL = frozenset(
    {
        "rpyc.core.async_",
        "rpyc.core.brine",
        "rpyc.core.channel",
        "rpyc.core.consts",
        "rpyc.core.netref",
        "rpyc.core.protocol",
        "rpyc.core.service",
        "rpyc.core.stream",
        "rpyc.core.vinegar",
        "rpyc.lib.colls",
        "rpyc.lib.compat",
        "rpyc.utils.authenticators",
        "rpyc.utils.classic",
        "rpyc.utils.factory",
        "rpyc.utils.helpers",
        "rpyc.utils.registry",
        "rpyc.utils.server",
        "rpyc.version",
    }
)

# grpyc module -> the names taken from it; None takes its whole ``__all__``.
Names = tuple[tuple[str, tuple[str, ...] | None], ...]

# What the package objects define besides their submodules. ``rpyc`` itself
# takes grpyc's public names (`grpyc._names`).
_PACKAGE_NAMES: dict[str, Names] = {
    "rpyc.core": (
        ("grpyc.stream", ("SocketStream", "TunneledSocketStream", "PipeStream")),
        ("grpyc._namedpipe", ("NamedPipeStream",)),
        ("grpyc.channel", ("Channel",)),
        ("grpyc.protocol", ("Connection", "DEFAULT_CONFIG")),
        ("grpyc.netref", ("BaseNetref",)),
        ("grpyc.async_", ("AsyncResult", "AsyncResultTimeout")),
        (
            "grpyc.service",
            ("Service", "VoidService", "SlaveService", "MasterService", "ClassicService"),
        ),
        ("grpyc.vinegar", ("GenericException",)),
    ),
    "rpyc.utils": (
        ("grpyc.helpers", ("service", "exposed")),
        ("grpyc.protocol", ("DEFAULT_CONFIG",)),
    ),
    "rpyc.lib": (
        (
            "grpyc.lib",
            ("Timeout", "get_id_pack", "get_methods", "hasattr_static", "setup_logger", "spawn"),
        ),
        # The module exists to complete rpyc.lib: all of its public names.
        ("grpyc._rpyc_lib", None),
        ("grpyc._compat", ("maxint",)),
    ),
}

_PACKAGE_DOCS = {
    "rpyc": "RPyC's package name, served by grpyc (grpyc.install_as_rpyc).",
    "rpyc.core": "rpyc.core, served by grpyc.",
    "rpyc.utils": "rpyc.utils, served by grpyc.",
    "rpyc.lib": "rpyc.lib, served by grpyc.",
}

# Marks the package objects made here, to tell them from the real rpyc.
_MARKER = "__grpyc_dropin__"


class _AliasLoader(importlib.abc.Loader):
    """Loads an ``rpyc.*`` name as the grpyc module behind it (no copy)."""

    def __init__(self, grpyc_name: str) -> None:
        self.grpyc_name = grpyc_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        # The import system returns what sys.modules holds under the name
        # once this returns: the grpyc module, not the placeholder.
        sys.modules[module.__name__] = importlib.import_module(self.grpyc_name)


class _DropinFinder:
    """Finds ``rpyc.*`` names in `PROVIDED_MODULES`; refuses the others, naming the reason."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "rpyc" and not fullname.startswith("rpyc."):
            return None
        grpyc_name = PROVIDED_MODULES.get(fullname)
        if grpyc_name is None:
            provided = ", ".join([*_PACKAGE_DOCS, *sorted(PROVIDED_MODULES)])
            raise ModuleNotFoundError(
                f"{fullname} is not provided by grpyc's RPyC drop-in "
                f"(grpyc.install_as_rpyc); it provides {provided}",
                name=fullname,
            )
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(grpyc_name))


def _submodule_getter(package: ModuleType) -> Callable[[str], ModuleType]:
    """A package's ``__getattr__``: a submodule not loaded yet loads on first access.

    It loads the grpyc module itself, not the ``rpyc.*`` name, so it works
    without the finder too (``import grpyc as rpyc; rpyc.utils.server``)
    and never reaches a real rpyc installed beside grpyc.
    """
    package_name = package.__name__

    def __getattr__(name: str) -> ModuleType:  # noqa: N807 - the module hook's name
        missing = f"module {package_name!r} has no attribute {name!r}"
        grpyc_name = PROVIDED_MODULES.get(f"{package_name}.{name}")
        if grpyc_name is None:
            raise AttributeError(missing)
        try:
            module = importlib.import_module(grpyc_name)
        except ImportError as exc:
            # An attribute lookup answers AttributeError, so that hasattr()
            # and getattr(..., default) work; ``import`` shows the ImportError.
            raise AttributeError(f"{missing} ({exc})") from exc
        setattr(package, name, module)
        return module

    return __getattr__


def _package(name: str) -> ModuleType:
    package = ModuleType(name, _PACKAGE_DOCS[name])
    package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    package.__path__ = []
    package.__package__ = name
    setattr(package, "__getattr__", _submodule_getter(package))  # noqa: B010 - the module hook
    setattr(package, _MARKER, True)
    return package


@functools.cache
def subpackage(name: str) -> ModuleType:
    """RPyC's ``rpyc.core``, ``rpyc.utils`` or ``rpyc.lib`` as grpyc serves it, made once.

    `install_as_rpyc` publishes these objects under their names; without it,
    ``import grpyc as rpyc`` reaches the first two as ``rpyc.core`` and
    ``rpyc.utils`` (`grpyc.__getattr__`), as a stock ``import rpyc`` binds
    them; its ``rpyc.lib`` is `grpyc.lib`, a module of a lower layer.
    """
    package = _package(name)
    _copy_names(package, _PACKAGE_NAMES[name])
    return package


def _foreign_rpyc_modules() -> list[str]:
    """Names of ``rpyc`` modules in `sys.modules` that this drop-in did not put there."""
    return sorted(
        name
        for name, module in sys.modules.items()
        if (name == "rpyc" or name.startswith("rpyc."))
        and module is not None
        and not getattr(module, _MARKER, False)
        and not str(getattr(module, "__name__", "")).startswith("grpyc")
    )


def _copy_names(target: ModuleType, sources: Names) -> None:
    for module_name, names in sources:
        module = importlib.import_module(module_name)
        for name in module.__all__ if names is None else names:
            setattr(target, name, getattr(module, name))


def _build_packages() -> dict[str, ModuleType]:
    from grpyc import _rpyc_version
    from grpyc._names import PUBLIC_NAMES

    root = _package("rpyc")
    packages = {"rpyc": root, **{name: subpackage(name) for name in _PACKAGE_NAMES}}
    for name, module_name in PUBLIC_NAMES.items():
        module = importlib.import_module(module_name)
        value = module if module_name.rpartition(".")[2] == name else getattr(module, name)
        setattr(root, name, value)
    # RPyC's alias from before ``async`` became a keyword.
    setattr(root, "async", root.async_)
    # The RPyC version grpyc stands in for, as a grpyc peer reports it.
    setattr(root, "version", _rpyc_version)  # noqa: B010 - ModuleType declares no such attributes
    setattr(root, "__version__", _rpyc_version.__version__)  # noqa: B010 - as above
    for package_name in _PACKAGE_NAMES:
        setattr(root, package_name.rpartition(".")[2], packages[package_name])
    return packages


def install_as_rpyc() -> ModuleType:
    """Make ``import rpyc`` (and its submodules) load grpyc from now on.

    Call it before anything imports ``rpyc``, e.g. as the first two lines of
    a program: ``import grpyc; grpyc.install_as_rpyc()``. Calling it again
    does nothing more. It changes `sys.modules` and puts a finder first in
    `sys.meta_path` that serves the ``rpyc.*`` modules and refuses the
    names grpyc does not provide.

    Returns:
        The ``rpyc`` package object.

    Raises:
        RuntimeError: the real rpyc (or one of its modules) is already
            imported in this process; two implementations in one process
            would mix their objects.
    """
    current = sys.modules.get("rpyc")
    if current is not None and getattr(current, _MARKER, False):
        return current
    foreign = _foreign_rpyc_modules()
    if foreign:
        raise RuntimeError(
            f"grpyc.install_as_rpyc(): the real rpyc is already imported in this process "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
            f"call install_as_rpyc() before anything imports rpyc"
        )
    packages = _build_packages()
    # Everything that can fail is imported before anything is published.
    modules = {
        rpyc_name: importlib.import_module(PROVIDED_MODULES[rpyc_name])
        for rpyc_name in sorted(_LOADED_BY_INSTALL)
    }
    for rpyc_name, module in modules.items():
        parent, _, leaf = rpyc_name.rpartition(".")
        setattr(packages[parent], leaf, module)
    if not any(isinstance(finder, _DropinFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _DropinFinder())
    sys.modules.update(modules)
    sys.modules.update(packages)
    return packages["rpyc"]
