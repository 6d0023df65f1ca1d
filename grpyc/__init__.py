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

`grpyc._names.PUBLIC_NAMES` is the one list of public names: ``__all__`` is made from
it and the lazy lookup reads it. Type checkers cannot run that lookup, so
the imports under ``TYPE_CHECKING`` name the same objects for them, in the
``name as name`` form that marks a re-export without a literal ``__all__``;
tests/test_api_surface.py checks that the imports and the table agree.
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# First of all: decides whether the hot modules load compiled or from source.
from grpyc import _accel  # noqa: F401 - imported for its effect

# The two modules whose names are rebound to functions right after are
# loaded first: the import system sets a submodule as its parent's attribute
# only when it loads it, so a later ``import grpyc.service`` finds it loaded
# and leaves ``grpyc.service`` (the decorator) alone.
from grpyc import async_ as _async_module
from grpyc import service as _service_module
from grpyc import version as version
from grpyc.helpers import BgServingThread as BgServingThread
from grpyc.helpers import async_ as async_
from grpyc.helpers import buffiter as buffiter
from grpyc.helpers import classpartial as classpartial
from grpyc.helpers import exposed as exposed
from grpyc.helpers import restricted as restricted
from grpyc.helpers import service as service
from grpyc.helpers import timed as timed
from grpyc.version import __version__ as __version__

del _async_module, _service_module

from grpyc._names import PUBLIC_NAMES as _PUBLIC_NAMES  # noqa: E402 - after the two modules above

__all__ = sorted(_PUBLIC_NAMES)

if _TYPE_CHECKING:
    from grpyc import classic as classic
    from grpyc._dropin import install_as_rpyc as install_as_rpyc
    from grpyc.async_ import AsyncResult as AsyncResult
    from grpyc.async_ import AsyncResultTimeout as AsyncResultTimeout
    from grpyc.channel import Channel as Channel
    from grpyc.factory import DiscoveryError as DiscoveryError
    from grpyc.factory import connect as connect
    from grpyc.factory import connect_by_service as connect_by_service
    from grpyc.factory import connect_channel as connect_channel
    from grpyc.factory import connect_multiprocess as connect_multiprocess
    from grpyc.factory import connect_pipes as connect_pipes
    from grpyc.factory import connect_stdpipes as connect_stdpipes
    from grpyc.factory import connect_stream as connect_stream
    from grpyc.factory import connect_subproc as connect_subproc
    from grpyc.factory import connect_thread as connect_thread
    from grpyc.factory import discover as discover
    from grpyc.factory import list_services as list_services
    from grpyc.factory import ssh_connect as ssh_connect
    from grpyc.factory import ssl_connect as ssl_connect
    from grpyc.factory import unix_connect as unix_connect
    from grpyc.lib import setup_logger as setup_logger
    from grpyc.lib import spawn as spawn
    from grpyc.netref import BaseNetref as BaseNetref
    from grpyc.protocol import Connection as Connection
    from grpyc.server import ForkingServer as ForkingServer
    from grpyc.server import GeventServer as GeventServer
    from grpyc.server import OneShotServer as OneShotServer
    from grpyc.server import Server as Server
    from grpyc.server import ThreadedServer as ThreadedServer
    from grpyc.server import ThreadPoolServer as ThreadPoolServer
    from grpyc.service import ClassicService as ClassicService
    from grpyc.service import MasterService as MasterService
    from grpyc.service import Service as Service
    from grpyc.service import SlaveService as SlaveService
    from grpyc.service import VoidService as VoidService
    from grpyc.stream import PipeStream as PipeStream
    from grpyc.stream import SocketStream as SocketStream
    from grpyc.stream import TunneledSocketStream as TunneledSocketStream
    from grpyc.vinegar import GenericException as GenericException


# What a stock ``import rpyc`` also binds in the package besides its public
# names: the subpackages (``rpyc.utils.server.ThreadedServer``,
# ``rpyc.core.netref``), the command-line package and the old alias of
# ``async_``. Reached here, ``import grpyc as rpyc`` reads them the same way.
_RPYC_ATTRIBUTES = ("async", "cli", "core", "utils")


def __getattr__(name: str) -> _Any:
    """Load a public name's module on first use, then keep the name here."""
    module_name = _PUBLIC_NAMES.get(name)
    if module_name is not None:
        module = _import_module(module_name)
        value = module if module_name.rpartition(".")[2] == name else getattr(module, name)
    elif name in ("core", "utils"):
        value = _import_module("grpyc._dropin").subpackage(f"rpyc.{name}")
    elif name == "cli":
        value = _import_module("grpyc.cli")
    elif name == "async":
        value = async_
    else:
        raise AttributeError(f"module 'grpyc' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_RPYC_ATTRIBUTES))
