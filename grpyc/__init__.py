"""grpyc: RPyC rebuilt on gevent and greenlets, wire-compatible with rpyc 6.

``import grpyc as rpyc`` runs code written for RPyC 6: this package exposes
the names ``rpyc/__init__.py`` exposes, with RPyC's meaning, and
`install_as_rpyc` makes ``import rpyc`` itself load grpyc.

Two names here are also grpyc module names, and keep RPyC's meaning:
``grpyc.async_`` is the helper function and ``grpyc.service`` the class
decorator, as ``rpyc.async_`` and ``rpyc.service`` are. The modules stay
reachable as ``from grpyc.service import Service`` or
``sys.modules["grpyc.service"]`` (not ``import grpyc.service as m``, which
reads the attribute). ``grpyc.version`` is the version module, as
``rpyc.version`` is.

Importing grpyc has no side effects (no environment reads, sockets or
monkey patching) and is cheap: the names below load their module on first
use, except the helpers, which are bound at import (see below why).
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING, Any

# The two modules whose names are rebound to functions right after are
# loaded first: the import system sets a submodule as its parent's attribute
# only when it loads it, so a later ``import grpyc.service`` finds it loaded
# and leaves ``grpyc.service`` (the decorator) alone.
from grpyc import async_ as _async_module
from grpyc import service as _service_module
from grpyc import version
from grpyc.helpers import (
    BgServingThread,
    async_,
    buffiter,
    classpartial,
    exposed,
    restricted,
    service,
    timed,
)
from grpyc.version import __version__

del _async_module, _service_module

# Public name -> the module that defines it; a name equal to its module's
# last component is the module itself.
_LAZY_NAMES: dict[str, str] = {
    "AsyncResult": "grpyc.async_",
    "AsyncResultTimeout": "grpyc.async_",
    "BaseNetref": "grpyc.netref",
    "Channel": "grpyc.channel",
    "ClassicService": "grpyc.service",
    "Connection": "grpyc.protocol",
    "DiscoveryError": "grpyc.factory",
    "GenericException": "grpyc.vinegar",
    "ForkingServer": "grpyc.server",
    "GeventServer": "grpyc.server",
    "MasterService": "grpyc.service",
    "OneShotServer": "grpyc.server",
    "PipeStream": "grpyc.stream",
    "Server": "grpyc.server",
    "Service": "grpyc.service",
    "SlaveService": "grpyc.service",
    "SocketStream": "grpyc.stream",
    "ThreadPoolServer": "grpyc.server",
    "ThreadedServer": "grpyc.server",
    "TunneledSocketStream": "grpyc.stream",
    "VoidService": "grpyc.service",
    "classic": "grpyc.classic",
    "connect": "grpyc.factory",
    "connect_by_service": "grpyc.factory",
    "connect_channel": "grpyc.factory",
    "connect_multiprocess": "grpyc.factory",
    "connect_pipes": "grpyc.factory",
    "connect_stdpipes": "grpyc.factory",
    "connect_stream": "grpyc.factory",
    "connect_subproc": "grpyc.factory",
    "connect_thread": "grpyc.factory",
    "discover": "grpyc.factory",
    "install_as_rpyc": "grpyc._dropin",
    "list_services": "grpyc.factory",
    "setup_logger": "grpyc.lib",
    "spawn": "grpyc.lib",
    "ssh_connect": "grpyc.factory",
    "ssl_connect": "grpyc.factory",
    "unix_connect": "grpyc.factory",
}

if TYPE_CHECKING:
    from grpyc import classic
    from grpyc._dropin import install_as_rpyc
    from grpyc.async_ import AsyncResult, AsyncResultTimeout
    from grpyc.channel import Channel
    from grpyc.factory import (
        DiscoveryError,
        connect,
        connect_by_service,
        connect_channel,
        connect_multiprocess,
        connect_pipes,
        connect_stdpipes,
        connect_stream,
        connect_subproc,
        connect_thread,
        discover,
        list_services,
        ssh_connect,
        ssl_connect,
        unix_connect,
    )
    from grpyc.lib import setup_logger, spawn
    from grpyc.netref import BaseNetref
    from grpyc.protocol import Connection
    from grpyc.server import (
        ForkingServer,
        GeventServer,
        OneShotServer,
        Server,
        ThreadedServer,
        ThreadPoolServer,
    )
    from grpyc.service import ClassicService, MasterService, Service, SlaveService, VoidService
    from grpyc.stream import PipeStream, SocketStream, TunneledSocketStream
    from grpyc.vinegar import GenericException


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use, then keep the name here."""
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'grpyc' has no attribute {name!r}")
    module = _import_module(module_name)
    value = module if module_name.rpartition(".")[2] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AsyncResult",
    "AsyncResultTimeout",
    "BaseNetref",
    "BgServingThread",
    "Channel",
    "ClassicService",
    "Connection",
    "DiscoveryError",
    "ForkingServer",
    "GenericException",
    "GeventServer",
    "MasterService",
    "OneShotServer",
    "PipeStream",
    "Server",
    "Service",
    "SlaveService",
    "SocketStream",
    "ThreadPoolServer",
    "ThreadedServer",
    "TunneledSocketStream",
    "VoidService",
    "__version__",
    "async_",
    "buffiter",
    "classic",
    "classpartial",
    "connect",
    "connect_by_service",
    "connect_channel",
    "connect_multiprocess",
    "connect_pipes",
    "connect_stdpipes",
    "connect_stream",
    "connect_subproc",
    "connect_thread",
    "discover",
    "exposed",
    "install_as_rpyc",
    "list_services",
    "restricted",
    "service",
    "setup_logger",
    "spawn",
    "ssh_connect",
    "ssl_connect",
    "timed",
    "unix_connect",
    "version",
]
