"""Registry servers and clients: RPyC's service discovery (PROTOCOL.md section 8).

A registry keeps a table ``name -> {(host, port): last seen}``. Servers
announce themselves with REGISTER (again every ``REREGISTER_INTERVAL``),
clients look them up with QUERY and LIST, and entries not refreshed within
the pruning timeout are dropped. ``import grpyc.registry`` offers every
public name of RPyC's ``rpyc.utils.registry``.

The package, lowest layer first:

- ``wire``: requests and replies as bytes, checked and sized; no I/O.
- ``table``: the table, the four commands and the limits
  (``RegistryTable.handle_request(data, host, max_reply_size)``); no I/O.
- ``servers``: ``UDPRegistryServer`` and ``TCPRegistryServer`` move bytes
  between gevent sockets and the table.
- ``clients``: ``UDPRegistryClient``, ``TCPRegistryClient`` and the loop a
  server runs to stay registered, ``register_periodically``.
- ``redis_backend``: ``RedisRegistryClient``, the table kept in Redis.

Defaults, limits and their reasons: docs/registry.md.
"""

from grpyc.registry._sockets import LOCAL_HOST, REGISTRY_PORT
from grpyc.registry.clients import (
    RegistryClient,
    StopSignal,
    TCPRegistryClient,
    UDPRegistryClient,
    register_periodically,
)
from grpyc.registry.redis_backend import RedisRegistryClient
from grpyc.registry.servers import RegistryServer, TCPRegistryServer, UDPRegistryServer
from grpyc.registry.table import (
    DEFAULT_PRUNING_TIMEOUT,
    RegistrationRefusedError,
    RegistryLimits,
    RegistryTable,
)
from grpyc.registry.wire import MAX_DGRAM_SIZE

# The largest request a server accepts by default (``RegistryLimits.max_request_size``).
DEFAULT_MAX_REQUEST_SIZE = MAX_DGRAM_SIZE

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE",
    "DEFAULT_PRUNING_TIMEOUT",
    "LOCAL_HOST",
    "MAX_DGRAM_SIZE",
    "REGISTRY_PORT",
    "RedisRegistryClient",
    "RegistrationRefusedError",
    "RegistryClient",
    "RegistryLimits",
    "RegistryServer",
    "RegistryTable",
    "StopSignal",
    "TCPRegistryClient",
    "TCPRegistryServer",
    "UDPRegistryClient",
    "UDPRegistryServer",
    "register_periodically",
]
