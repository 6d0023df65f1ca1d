"""Services: the root object each side of a connection exposes to the other.

Owns the service base class, its naming rules (``FooService`` is known as
``"FOO"``) and the classic-mode services. Leaves the attribute policy
(``exposed_`` prefix, safe/public/all attributes, the get/set/del switches) to
the connection in `grpyc.protocol`, exactly as RPyC does: `Service` defines no
``_rpyc_getattr``, so every lookup on a service goes through that policy.
`Service._rpyc_setattr` and `Service._rpyc_delattr` refuse, whatever the
configuration says.

Classic mode (`SlaveService`, `ClassicService`) executes, evaluates and
imports anything the peer sends, by design: it is remote control of this
process. It is opt-in; never expose it beyond a trusted peer.

All names and behaviours here are RPyC-compatible (``rpyc.core.service``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import CodeType, FunctionType, MethodType, ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from grpyc.protocol import Connection

__all__ = [
    "ClassicClient",
    "ClassicService",
    "FakeSlaveService",
    "MasterService",
    "ModuleNamespace",
    "Service",
    "Slave",
    "SlaveService",
    "VoidService",
]

# What SlaveService.on_connect switches on: the peer may touch every attribute,
# pickle, and rebuild its custom exceptions here. The same keys and values as
# RPyC, so a classic peer gets what it expects from either implementation.
_SLAVE_CONFIG: Mapping[str, bool] = {
    "allow_all_attrs": True,
    "allow_pickle": True,
    "allow_getattr": True,
    "allow_setattr": True,
    "allow_delattr": True,
    "allow_exposed_attrs": False,
    "import_custom_exceptions": True,
    "instantiate_custom_exceptions": True,
    "instantiate_oldstyle_exceptions": True,
}


class _HybridMethod:
    """A method that binds to the instance, or to the class when read from it."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __get__(self, obj: object, owner: type | None = None) -> Callable[..., Any]:
        return MethodType(self.func, owner if obj is None else obj)

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError(f"cannot overwrite method {self.func.__name__!r}")


class _DefaultProtocol:
    """Class attribute that reads as `grpyc.protocol.Connection`.

    Resolved on each read rather than at import, so that importing this module
    never imports the protocol; subclasses may set ``_protocol`` to their own
    connection class.
    """

    __slots__ = ()

    def __get__(self, obj: object, owner: type | None = None) -> type[Connection]:
        from grpyc.protocol import Connection

        return Connection


class Service:
    """The service base class. RPyC-compatible.

    Subclass it and prefix the names the peer may use with ``exposed_``::

        class CalcService(Service):
            def exposed_add(self, x, y):
                return x + y

    The peer calls ``conn.root.add(1, 2)``; the default attribute policy maps
    ``add`` to ``exposed_add``. Other names stay local. The service is known
    by its class name, upper-cased, minus a ``Service`` suffix (``"CALC"``),
    unless ``ALIASES`` lists other names.
    """

    __slots__ = ()
    ALIASES: ClassVar[Sequence[str]] = ()
    _protocol: ClassVar[Any] = _DefaultProtocol()

    def on_connect(self, conn: Connection) -> None:
        """Called once the connection is set up, before it is handed out."""

    def on_disconnect(self, conn: Connection) -> None:
        """Called once the connection has closed; it must not do I/O on ``conn``."""

    # Refused whatever the configuration says (even under SlaveService's
    # allow_setattr/allow_delattr): a service's attributes are its interface.
    def _rpyc_delattr(self, name: str) -> None:
        raise AttributeError(f"access denied: cannot delete {name!r} of a service")

    def _rpyc_setattr(self, name: str, value: Any) -> None:
        raise AttributeError(f"access denied: cannot set {name!r} of a service")

    @classmethod
    def get_service_aliases(cls) -> tuple[str, ...]:
        """The service's names, upper-cased: ``ALIASES``, else the class name."""
        if cls.ALIASES:
            return tuple(str(alias).upper() for alias in cls.ALIASES)
        name = cls.__name__.upper()
        return (name.removesuffix("SERVICE"),)

    @classmethod
    def get_service_name(cls) -> str:
        """The canonical name of the service: its first alias."""
        return cls.get_service_aliases()[0]

    exposed_get_service_aliases = get_service_aliases
    exposed_get_service_name = get_service_name

    @_HybridMethod
    def _connect(self, channel: Any, config: dict[str, Any] | None = None) -> Connection:
        """Make a connection over ``channel`` with this service as its root.

        Read from the class, it serves a new instance. ``config`` overrides
        entries of the protocol's default configuration.
        """
        service = self() if isinstance(self, type) else self
        conn: Connection = service._protocol(service, channel, {} if config is None else config)
        service.on_connect(conn)
        return conn


class VoidService(Service):
    """A service that exposes nothing. RPyC-compatible."""

    __slots__ = ()


class ModuleNamespace:
    """The peer's modules as ``ns["os.path"]`` or ``ns.os``. RPyC-compatible.

    Args:
        getmodule: imports a module by name (usually the peer's
            `Slave.getmodule`); each module is fetched once and cached.
    """

    # Private names are mangled, so they never shadow a module such as ``_io``.
    __slots__ = ("__cache", "__getmodule", "__weakref__")

    def __init__(self, getmodule: Callable[[str], Any]) -> None:
        self.__getmodule = getmodule
        self.__cache: dict[str, Any] = {
            name: getmodule(name) for name in ("builtins", "importlib.util")
        }

    def __contains__(self, name: str) -> bool:
        """Whether the module can be found; importing it may still fail."""
        finder = self.__cache["importlib.util"]._find_spec_from_path
        return finder(name) is not None

    def __getitem__(self, name: str) -> Any:
        if name not in self.__cache:
            self.__cache[name] = self.__getmodule(name)
        return self.__cache[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except ImportError as exc:
            raise AttributeError(f"no module named {name!r}", name=name, obj=self) from exc


class Slave:
    """The classic namespace: run code and import modules here. RPyC-compatible.

    ``namespace`` is the globals dict shared by `execute` and `eval`.
    """

    __slots__ = ("_conn", "namespace")

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self.namespace: dict[str, Any] = {}

    def execute(self, text: str | bytes | CodeType) -> None:
        """Run ``text`` with ``exec`` in `namespace`."""
        exec(text, self.namespace)  # noqa: S102 - classic mode runs code by design

    def eval(self, text: str | bytes | CodeType) -> Any:
        """Evaluate ``text`` with ``eval`` in `namespace` and return the value."""
        return eval(text, self.namespace)  # noqa: S307 - classic mode runs code by design

    def getmodule(self, name: str | tuple[str, ...]) -> ModuleType:
        """Import a module by dotted name, or by a tuple of its name's parts."""
        if isinstance(name, tuple):
            name = ".".join(name)
        return importlib.import_module(name)

    def getconn(self) -> Connection | None:
        """The connection to the peer, once connected."""
        return self._conn


class SlaveService(Slave, Service):
    """Lets the peer import, execute and evaluate anything here. RPyC-compatible.

    On connect it turns on the permissive configuration classic mode needs
    (every attribute, pickle, custom exceptions). Use it only with a trusted
    peer: it hands over full control of this process.
    """

    __slots__ = ()

    def on_connect(self, conn: Connection) -> None:
        self._conn = conn
        conn.update_config(_SLAVE_CONFIG)
        super().on_connect(conn)


class FakeSlaveService(VoidService):
    """Looks like a classic slave to the peer but exposes nothing. RPyC-compatible.

    For connecting to a `MasterService` or `ClassicService` peer without
    giving it any control here.
    """

    __slots__ = ()
    exposed_namespace = None
    exposed_execute = None
    exposed_eval = None
    exposed_getmodule = None
    exposed_getconn = None


# The classic helpers take ``Any`` for the connection: `MasterService` adds
# ``modules``, ``namespace`` and the rest at runtime, so they are not on
# Connection's type.


def _teleport(
    conn: Any,
    func: FunctionType,
    globals: dict[str, Any] | None = None,
    def_: bool = True,
) -> Any:
    """Rebuild ``func`` at the peer from its code; return the peer's function.

    ``globals`` (RPyC's keyword name) defaults to the peer's classic namespace;
    with ``def_`` the function is also bound there under its name.
    """
    from grpyc.teleportation import export_function

    if globals is None:
        globals = conn.namespace
    exported = export_function(func)
    return _remote_teleportation(conn).import_function(exported, globals, def_)


def _remote_teleportation(conn: Any) -> Any:
    """The peer's teleportation module: grpyc's, else (a stock RPyC peer) RPyC's."""
    try:
        return conn.modules["grpyc.teleportation"]
    except ImportError:
        return conn.modules["rpyc.utils.teleportation"]


class MasterService(Service):
    """Client side of classic mode, exposing nothing. RPyC-compatible.

    On connect it gives the connection the peer's classic namespace:
    ``conn.modules``, ``conn.eval``, ``conn.execute``, ``conn.namespace``,
    ``conn.builtins`` (also as ``conn.builtin``) and ``conn.teleport``. The
    peer must serve a `SlaveService` or `ClassicService`.
    """

    __slots__ = ()

    def on_connect(self, conn: Connection) -> None:
        super().on_connect(conn)
        self._install(conn, conn.root)

    @staticmethod
    def _install(conn: Any, slave: Any) -> None:
        """Attach ``slave``'s classic namespace to ``conn``."""
        modules = ModuleNamespace(slave.getmodule)
        conn.modules = modules
        conn.eval = slave.eval
        conn.execute = slave.execute
        conn.namespace = slave.namespace
        conn.builtins = modules.builtins
        conn.builtin = modules.builtins
        conn.teleport = partial(_teleport, conn)


class ClassicService(MasterService, SlaveService):
    """Classic mode in both directions: each side controls the other. RPyC-compatible.

    Both sides must serve it.
    """

    __slots__ = ()


class ClassicClient(MasterService, FakeSlaveService):
    """Controls a classic peer and gives it nothing back. RPyC-compatible."""

    __slots__ = ()
