"""`install_as_rpyc`: make ``import rpyc`` load grpyc, for RPyC programs run unchanged.

Owns the table of RPyC 6 module names and the grpyc module behind each, and
the three package objects (``rpyc``, ``rpyc.core``, ``rpyc.utils``) that
carry the attributes RPyC's packages have. Every ``rpyc.*`` module is the
grpyc module object itself (one ``sys.modules`` entry per name, no copies),
so ``import rpyc.utils.server`` and ``from rpyc.utils.server import
ThreadedServer`` give grpyc's objects. Module names RPyC has and grpyc does
not provide (``rpyc.utils.zerodeploy``, ``rpyc.core.reactor``, ``rpyc.cli``,
...) fail to import with a `ModuleNotFoundError` that says so.

Nothing happens on import of this module; `install_as_rpyc` changes
``sys.modules`` and ``sys.meta_path`` when called.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["PROVIDED_MODULES", "install_as_rpyc"]

# RPyC 6's module name -> the grpyc module that stands in for it.
PROVIDED_MODULES: dict[str, str] = {
    "rpyc.core.async_": "grpyc.async_",
    "rpyc.core.brine": "grpyc.brine",
    "rpyc.core.channel": "grpyc.channel",
    "rpyc.core.consts": "grpyc.consts",
    "rpyc.core.netref": "grpyc.netref",
    "rpyc.core.protocol": "grpyc.protocol",
    "rpyc.core.service": "grpyc.service",
    "rpyc.core.stream": "grpyc.stream",
    "rpyc.core.vinegar": "grpyc.vinegar",
    "rpyc.lib": "grpyc.lib",
    "rpyc.utils.authenticators": "grpyc.authenticators",
    "rpyc.utils.classic": "grpyc.classic",
    "rpyc.utils.factory": "grpyc.factory",
    "rpyc.utils.helpers": "grpyc.helpers",
    "rpyc.utils.registry": "grpyc.registry",
    "rpyc.utils.server": "grpyc.server",
    "rpyc.utils.teleportation": "grpyc.teleportation",
    "rpyc.version": "grpyc.version",
}

# What ``rpyc.core`` and ``rpyc.utils`` themselves define, besides submodules.
_CORE_NAMES = (
    ("grpyc.stream", ("SocketStream", "TunneledSocketStream", "PipeStream")),
    ("grpyc.channel", ("Channel",)),
    ("grpyc.protocol", ("Connection", "DEFAULT_CONFIG")),
    ("grpyc.netref", ("BaseNetref",)),
    ("grpyc.async_", ("AsyncResult", "AsyncResultTimeout")),
    (
        "grpyc.service",
        ("Service", "VoidService", "SlaveService", "MasterService", "ClassicService"),
    ),
    ("grpyc.vinegar", ("GenericException",)),
)
_UTILS_NAMES = (
    ("grpyc.helpers", ("service", "exposed")),
    ("grpyc.protocol", ("DEFAULT_CONFIG",)),
)

# Marks the package objects made here, to tell them from the real rpyc.
_MARKER = "__grpyc_dropin__"


class _UnprovidedModuleFinder:
    """Refuses ``rpyc.*`` names the drop-in does not provide, naming the reason."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> None:
        if fullname == "rpyc" or fullname.startswith("rpyc."):
            provided = ", ".join(sorted(PROVIDED_MODULES))
            raise ModuleNotFoundError(
                f"{fullname} is not provided by grpyc's RPyC drop-in "
                f"(grpyc.install_as_rpyc); it provides rpyc, rpyc.core, rpyc.utils, {provided}",
                name=fullname,
            )


def _package(name: str, doc: str) -> ModuleType:
    package = ModuleType(name, doc)
    package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    package.__path__ = []
    package.__package__ = name
    setattr(package, _MARKER, True)
    return package


def _foreign_rpyc_modules() -> list[str]:
    """Names of ``rpyc`` modules in `sys.modules` that this drop-in did not put there."""
    ours = {id(sys.modules.get(grpyc_name)) for grpyc_name in PROVIDED_MODULES.values()}
    return sorted(
        name
        for name, module in sys.modules.items()
        if (name == "rpyc" or name.startswith("rpyc."))
        and module is not None
        and not getattr(module, _MARKER, False)
        and id(module) not in ours
    )


def _copy_names(target: ModuleType, sources: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    for module_name, names in sources:
        module = sys.modules[module_name]
        for name in names:
            setattr(target, name, getattr(module, name))


def _build_packages() -> dict[str, ModuleType]:
    import grpyc

    root = _package("rpyc", "RPyC's package name, served by grpyc (grpyc.install_as_rpyc).")
    core = _package("rpyc.core", "rpyc.core, served by grpyc.")
    utils = _package("rpyc.utils", "rpyc.utils, served by grpyc.")
    for name in grpyc.__all__:
        setattr(root, name, getattr(grpyc, name))
    # RPyC's alias from before ``async`` became a keyword.
    setattr(root, "async", grpyc.async_)
    _copy_names(core, _CORE_NAMES)
    _copy_names(utils, _UTILS_NAMES)
    setattr(root, "core", core)  # noqa: B010 - ModuleType declares no such attributes
    setattr(root, "utils", utils)  # noqa: B010 - ModuleType declares no such attributes
    return {"rpyc": root, "rpyc.core": core, "rpyc.utils": utils}


def _attach_submodules(packages: dict[str, ModuleType]) -> dict[str, ModuleType]:
    modules = {}
    for rpyc_name, grpyc_name in PROVIDED_MODULES.items():
        module = importlib.import_module(grpyc_name)
        parent, _, leaf = rpyc_name.rpartition(".")
        setattr(packages[parent], leaf, module)
        modules[rpyc_name] = module
    return modules


def install_as_rpyc() -> ModuleType:
    """Make ``import rpyc`` (and its submodules) load grpyc from now on.

    Call it before anything imports ``rpyc``, e.g. as the first two lines of
    a program: ``import grpyc; grpyc.install_as_rpyc()``. Calling it again
    does nothing more. It changes `sys.modules` and puts a finder first in
    `sys.meta_path` that refuses the ``rpyc.*`` names grpyc does not provide.

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
    modules = _attach_submodules(packages)
    if not any(isinstance(finder, _UnprovidedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _UnprovidedModuleFinder())
    sys.modules.update(modules)
    sys.modules.update(packages)
    return packages["rpyc"]
