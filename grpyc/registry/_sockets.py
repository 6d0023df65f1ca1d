"""Socket helpers both ends of the registry use: binding, reading a request, local sources.

Private to ``grpyc.registry``. The sockets are gevent's, so every wait
here yields to the hub.
"""

from __future__ import annotations

from typing import Final

from gevent import socket as gsocket

from grpyc.consts import DEFAULT_REGISTRY_PORT
from grpyc.lib import Timeout
from grpyc.registry.wire import is_complete

REGISTRY_PORT: Final = DEFAULT_REGISTRY_PORT
# The one default bind of every registry server and of `grpyc registry`.
LOCAL_HOST: Final = "127.0.0.1"
LIMITED_BROADCAST: Final = "255.255.255.255"


def bound_socket(
    host: str, port: int, socktype: int, *, reuse_addr: bool = False, backlog: int = 0
) -> gsocket.socket:
    """A socket bound to ``host:port`` (listening when ``backlog``), or an error and no socket."""
    family, socktype, proto, _, sockaddr = gsocket.getaddrinfo(host, port, 0, socktype)[0]
    sock = gsocket.socket(family, socktype, proto)
    try:
        if reuse_addr:
            sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        if backlog:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def read_message(sock: gsocket.socket, max_size: int, deadline: Timeout) -> bytes:
    """Bytes from ``sock`` until they form a brine value, EOF, or pass ``max_size``.

    Raises:
        TimeoutError: ``deadline`` passed first.
        OSError: the connection failed.
    """
    data = bytearray()
    while len(data) <= max_size:
        if deadline.expired():
            raise TimeoutError(f"no complete message within the deadline ({len(data)} bytes)")
        sock.settimeout(deadline.timeleft())
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if is_complete(bytes(data)):
            break
    return bytes(data)


def is_local_address(ip: str) -> bool:
    """Whether ``ip`` is an IPv4 address of this machine (only those can be bound).

    Linux drops packets that arrive from the network claiming one of the
    machine's own addresses as source (martians, unless ``accept_local`` is
    set), so a datagram whose source passes this test was sent from here.
    """
    with gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, 0))
        except OSError:
            return False
    return True
