"""Overload and slow peers: slowloris, peers that never read, request floods.

The limits under test are the protocol's (`idle_timeout`, `max_send_buffer`,
`max_concurrent_requests`, `max_queued_requests`), set small so each attack
trips them within about a second. Throughout, a normal client must still get
answers.
"""

import logging
import random
import socket as stdlib_socket
import struct
import time

import gevent
import pytest
from gevent import socket
from rpyc.core.protocol import Connection as StockConnection

import grpyc
from grpyc import consts
from tests.hostile.conftest import V, assert_serves, boxed, frame, request

KIB = 1024


def open_quiet_connections(port, count):
    socks = []
    for _ in range(count):
        sock = socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
        sock.connect(("127.0.0.1", port))
        socks.append(sock)
    return socks


def wait_all_closed(socks, timeout):
    """True when the server closed every socket within `timeout` seconds."""

    def wait_eof(sock):
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass

    workers = [gevent.spawn(wait_eof, sock) for sock in socks]
    done = gevent.joinall(workers, timeout=timeout)
    gevent.killall(workers)
    return len(done) == len(socks)


def timed_call(conn):
    started = time.monotonic()
    assert conn.root.echo("ping") == "ping"
    return time.monotonic() - started


def ping_frame(seq, value="hello"):
    return frame(request(seq, consts.HANDLE_PING, boxed((V, value))))


def test_slowloris_thousand_connections_are_dropped_while_others_are_served(make_server, caplog):
    caplog.set_level(logging.INFO, logger="grpyc")
    # idle_timeout is longer so that each connection meets exactly one of them.
    server = make_server(handshake_timeout=1.0, idle_timeout=1.5)
    # 400 say nothing, 400 trickle a frame one byte at a time (it never
    # completes), 200 send one ping and then trickle: the first two groups
    # meet handshake_timeout, the third idle_timeout.
    silent = open_quiet_connections(server.port, 400)
    tricklers = open_quiet_connections(server.port, 400)
    late_tricklers = open_quiet_connections(server.port, 200)
    for sock in late_tricklers:
        sock.sendall(ping_frame(0))
    trickle = struct.pack("!LB", 100, 0) + b"x" * 100

    def trickle_bytes(sock):
        for byte in trickle:
            try:
                sock.send(bytes([byte]))
            except OSError:
                return
            gevent.sleep(0.25)

    trickling = [gevent.spawn(trickle_bytes, sock) for sock in tricklers + late_tricklers]
    normal = grpyc.connect("127.0.0.1", server.port)
    latencies = []

    def keep_calling():
        # A real client talks all along, so idle_timeout never touches it.
        while True:
            latencies.append(timed_call(normal))
            gevent.sleep(0.1)

    caller = gevent.spawn(keep_calling)
    attackers = silent + tricklers + late_tricklers
    try:
        started = time.monotonic()
        assert wait_all_closed(attackers, timeout=5.0)
        assert time.monotonic() - started < 5.0
        assert not caller.dead, caller.exception
    finally:
        caller.kill()
        gevent.killall(trickling)
        normal.close()
        for sock in attackers:
            sock.close()
    assert len(latencies) >= 3
    assert max(latencies) < 2.0
    messages = [r.getMessage() for r in caplog.records]
    handshake = [m for m in messages if "longer than handshake_timeout=1.0 s" in m]
    idle = [m for m in messages if "idle_timeout=1.5" in m]
    # Under load a late trickler's ping may still be unread at its handshake
    # deadline; either way each of the 1000 was closed once, for a reason.
    assert len(handshake) + len(idle) == 1000
    assert len(handshake) >= 800
    assert_serves(server.port)


def test_default_server_drops_silent_clients_but_not_idle_ones():
    # Documented: handshake_timeout (10 s) bounds a client that never sends
    # a frame; idle_timeout is off by default, so a peer that sent one frame
    # may stay silent forever unless the server sets idle_timeout.
    assert grpyc.server.DEFAULT_HANDSHAKE_TIMEOUT == 10.0
    assert grpyc.protocol.DEFAULT_CONFIG["idle_timeout"] is None


def test_connection_cap_refuses_then_recovers(make_server, caplog):
    server = make_server(max_connections=20)
    holders = open_quiet_connections(server.port, 20)
    for seq, sock in enumerate(holders):
        sock.sendall(ping_frame(seq))
    for sock in holders:
        assert sock.recv(4096)  # the ping's answer: the slot is taken
    extra = open_quiet_connections(server.port, 5)
    assert wait_all_closed(extra, timeout=2.0)
    with pytest.raises(EOFError):
        assert_serves(server.port)
    refusals = [r for r in caplog.records if "max_connections=20 reached" in r.getMessage()]
    assert len(refusals) == 6
    for sock in holders[:10]:
        sock.close()
    # Slots come back as soon as connections close.
    deadline = time.monotonic() + 2.0
    while len(server.clients) > 10 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert len(server.clients) == 10
    assert_serves(server.port)
    for sock in holders[10:] + extra:
        sock.close()


def test_peer_that_never_reads_is_dropped_at_max_send_buffer(make_server, caplog):
    server = make_server(protocol_config={"max_send_buffer": 1024 * KIB})
    sock = socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 64 * KIB)
    sock.connect(("127.0.0.1", server.port))
    try:
        # 200 pings, each answered with 256 KiB: 50 MiB that nobody reads.
        # Random bytes: compression must not shrink the answers.
        ping = ping_frame(0, random.Random(0).randbytes(256 * KIB))
        for _ in range(200):
            try:
                sock.sendall(ping)
            except OSError:
                break
        assert wait_all_closed([sock], timeout=5.0)
    finally:
        sock.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "queued for a peer that does not read (max_send_buffer=1048576)" in m for m in messages
    ), messages
    assert_serves(server.port)


class CountingService(grpyc.Service):
    """The flooding client's service: the server calls back into it."""

    calls = 0

    def exposed_answer(self, value):
        CountingService.calls += 1
        return value * 2


def test_flood_over_the_limits_gets_error_replies_and_callbacks_get_through(make_server):
    server = make_server(protocol_config={"max_concurrent_requests": 4, "max_queued_requests": 8})
    conn = grpyc.connect("127.0.0.1", server.port, service=CountingService)
    try:
        root = conn.root

        def slow_callback(value):
            gevent.sleep(0.3)
            return conn._local_root.exposed_answer(value)

        # The server runs `call(slow_callback, i)`: each handler calls back into us.
        # One GETATTR for `call`, then the 60 calls at once.
        call = grpyc.async_(root.call)
        results = [call(slow_callback, i) for i in range(60)]
        gevent.wait(results, timeout=10)
        values, refused = [], []
        for i, result in enumerate(results):
            if result.error:
                with pytest.raises(RuntimeError, match="too many requests") as info:
                    result.value
                refused.append(info.value)
            else:
                values.append((i, result.value))
        # Handlers waiting on their callback do not count against the 4, but at
        # most 4 + 8 handlers exist: 12 running + 8 queued were served.
        assert len(values) == 20
        assert all(value == 2 * i for i, value in values)
        assert len(refused) == 40
        assert "12 running, 12 of them waiting on nested calls" in str(refused[0])
        assert "8 queued (max_queued_requests=8)" in str(refused[0])
        # Over the limit is not broken: the same connection works again.
        assert root.echo("after") == "after"
    finally:
        conn.close()
    assert_serves(server.port)


def test_flood_of_pings_and_dels_is_answered_even_when_handlers_are_full(make_server, raw_peers):
    server = make_server(protocol_config={"max_concurrent_requests": 2, "max_queued_requests": 0})
    peer = raw_peers(server.port)
    root = peer.root_id_pack()
    # Two handlers busy for a while; PING is answered by the reader meanwhile.
    for seq in (1, 2):
        peer.send_request(
            seq, consts.HANDLE_CALLATTR, boxed((3, root), (V, "sleep"), (V, (1.0,)), (V, ()))
        )
    started = time.monotonic()
    answer = peer.call(3, consts.HANDLE_PING, boxed((V, "alive")))
    assert answer[2] == (V, "alive")
    # ... and in the form clients send: stock's (and grpyc's) box of
    # ``("alive",)`` is one value, the whole tuple (it was sent to a
    # handler, refused here as overload).
    stock_box = StockConnection._box(None, ("alive",))
    assert stock_box == (V, ("alive",))
    answer = peer.call(4, consts.HANDLE_PING, stock_box)
    assert answer[0] == consts.MSG_REPLY
    assert answer[2] == (V, "alive")
    assert time.monotonic() - started < 0.5
    assert_serves(server.port)


def test_server_close_with_unresponsive_peers_takes_one_close_timeout(make_server):
    server = make_server(protocol_config={"close_timeout": 0.5})
    # Peers that sent a frame (the connection is set up) and then stop
    # answering: each CLOSE waits its close_timeout, all at the same time.
    socks = open_quiet_connections(server.port, 20)
    for seq, sock in enumerate(socks):
        sock.sendall(ping_frame(seq))
        assert sock.recv(4096)
    try:
        started = time.monotonic()
        server.close()
        elapsed = time.monotonic() - started
        assert wait_all_closed(socks, timeout=1.0)
    finally:
        for sock in socks:
            sock.close()
    assert 0.4 < elapsed < 1.5
