"""Ways to get a `Connection`: from a channel, a stream, TCP, a Unix socket, pipes.

RPyC-compatible names and arguments. Each function builds the stream, wraps
it in a `Channel` and hands it to the service, which makes the connection.
"""

from __future__ import annotations

from typing import Any

from grpyc.channel import Channel
from grpyc.protocol import Connection
from grpyc.service import VoidService
from grpyc.stream import PipeStream, SocketStream

__all__ = [
    "connect",
    "connect_channel",
    "connect_pipes",
    "connect_stream",
    "unix_connect",
]


def _service_instance(service: Any) -> Any:
    return service() if isinstance(service, type) else service


def connect_channel(
    channel: Channel, service: Any = VoidService, config: dict[str, Any] | None = None
) -> Connection:
    """A connection over an existing channel. RPyC-compatible.

    Args:
        channel: the channel to the peer.
        service: the local service (class or instance) exposed to the peer.
        config: overrides of `protocol.DEFAULT_CONFIG`.
    """
    return _service_instance(service)._connect(channel, dict(config or {}))


def connect_stream(
    stream: Any, service: Any = VoidService, config: dict[str, Any] | None = None
) -> Connection:
    """A connection over an existing stream. RPyC-compatible."""
    return connect_channel(Channel(stream), service, config)


def connect_pipes(
    input: Any, output: Any, service: Any = VoidService, config: dict[str, Any] | None = None
) -> Connection:
    """A connection over a pair of pipes (read end, write end). RPyC-compatible."""
    return connect_stream(PipeStream(input, output), service, config)


def connect(
    host: str,
    port: int,
    service: Any = VoidService,
    config: dict[str, Any] | None = None,
    ipv6: bool = False,
    keepalive: bool = False,
) -> Connection:
    """Connect over TCP (TCP_NODELAY on). RPyC-compatible.

    Args:
        host: host name or address.
        port: TCP port.
        service: the local service exposed to the peer (callbacks land here).
        config: overrides of `protocol.DEFAULT_CONFIG`.
        ipv6: connect over IPv6.
        keepalive: turn on TCP keepalive on the socket.
    """
    stream = SocketStream.connect(host, port, ipv6=ipv6, keepalive=keepalive)
    return connect_stream(stream, service, config)


def unix_connect(
    path: str, service: Any = VoidService, config: dict[str, Any] | None = None
) -> Connection:
    """Connect over a Unix domain socket. RPyC-compatible."""
    return connect_stream(SocketStream.unix_connect(path), service, config)
