"""The public names of the `grpyc` package and the module behind each (pure data).

`grpyc/__init__.py` loads each name from its module on first use, and the
drop-in (`install_as_rpyc`) publishes the same names as ``rpyc``'s.
"""

__all__ = ["PUBLIC_NAMES"]

# Every public name -> the module that defines it; a name equal to its
# module's last component is the module itself. The names bound by the
# imports above are here too; the others load on first use.
PUBLIC_NAMES: dict[str, str] = {
    "AsyncResult": "grpyc.async_",
    "AsyncResultTimeout": "grpyc.async_",
    "BaseNetref": "grpyc.netref",
    "BgServingThread": "grpyc.helpers",
    "Channel": "grpyc.channel",
    "ClassicService": "grpyc.service",
    "Connection": "grpyc.protocol",
    "DiscoveryError": "grpyc.factory",
    "ForkingServer": "grpyc.server",
    "GenericException": "grpyc.vinegar",
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
    "__version__": "grpyc.version",
    "async_": "grpyc.helpers",
    "buffiter": "grpyc.helpers",
    "classic": "grpyc.classic",
    "classpartial": "grpyc.helpers",
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
    "exposed": "grpyc.helpers",
    "install_as_rpyc": "grpyc._dropin",
    "list_services": "grpyc.factory",
    "restricted": "grpyc.helpers",
    "service": "grpyc.helpers",
    "setup_logger": "grpyc.lib",
    "spawn": "grpyc.lib",
    "ssh_connect": "grpyc.factory",
    "ssl_connect": "grpyc.factory",
    "timed": "grpyc.helpers",
    "unix_connect": "grpyc.factory",
    "version": "grpyc.version",
}
