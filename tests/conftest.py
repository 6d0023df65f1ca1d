"""Shared fixtures: fail on unhandled greenlet errors, connected pairs, servers."""

import gevent
import pytest


@pytest.fixture(autouse=True)
def no_unhandled_greenlet_errors():
    """Fail any test in which a greenlet error reached the hub unhandled."""
    hub = gevent.get_hub()
    seen = []
    original = hub.handle_error

    def record(context, type_, value, tb):
        if type_ is not None and not issubclass(type_, gevent.GreenletExit):
            seen.append((context, type_, value))
        return original(context, type_, value, tb)

    hub.handle_error = record
    try:
        yield seen
    finally:
        hub.handle_error = original
    assert not seen, f"unhandled greenlet errors: {seen!r}"


def _socketpair_channels():
    from gevent import socket

    from grpyc.channel import Channel
    from grpyc.stream import SocketStream

    left, right = socket.socketpair()
    return Channel(SocketStream(left)), Channel(SocketStream(right))


@pytest.fixture
def make_pair():
    """Factory: ``make_pair(server_service, client_service, server_config, client_config)``
    returns ``(server_conn, client_conn)`` over a socketpair; all closed afterwards."""
    from grpyc.service import VoidService

    made = []

    def make(server_service=None, client_service=None, server_config=None, client_config=None):
        from tests.services import TestService

        server_service = server_service if server_service is not None else TestService()
        client_service = client_service if client_service is not None else VoidService()
        left, right = _socketpair_channels()
        server = server_service._connect(left, dict(server_config or {}))
        client = client_service._connect(right, dict(client_config or {}))
        made.extend([client, server])
        return server, client

    yield make
    for conn in made:
        conn._hub.shutdown(EOFError("test finished"))


@pytest.fixture
def pair(make_pair):
    """A (server_conn, client_conn) pair; the server side runs TestService."""
    return make_pair()


@pytest.fixture
def grpyc_server():
    """A grpyc server for TestService on 127.0.0.1, port 0, accepting in the background."""
    from grpyc.server import Server
    from tests.services import TestService

    server = Server(TestService, hostname="127.0.0.1", port=0)
    server.listen()
    yield server
    server.close()


@pytest.fixture
def make_hub():
    """Factory of (hub, peer_channel, frames, closed); everything is closed after."""
    made = []

    def make(**limits):
        hub, peer, frames, closed = _make_hub(**limits)
        made.append((hub, peer))
        return hub, peer, frames, closed

    yield make
    for hub, peer in made:
        hub.shutdown(EOFError("test finished"))
        peer.close()


def _make_hub(**limits):
    from gevent import socket

    from grpyc.channel import Channel
    from grpyc.config import Limits
    from grpyc.hub import ConnectionHub
    from grpyc.stream import SocketStream

    left, right = socket.socketpair()
    frames = []
    closed = []
    settings = {
        "max_concurrent_requests": 4,
        "max_queued_requests": 2,
        "max_send_buffer": 1 << 20,
        "max_request_bytes": 1 << 30,
        **limits,
    }
    hub = ConnectionHub(
        Channel(SocketStream(left)),
        frames.append,
        closed.append,
        name="test",
        logger=__import__("logging").getLogger("test"),
        limits=Limits(**settings),
    )
    hub.start()
    return hub, Channel(SocketStream(right)), frames, closed
