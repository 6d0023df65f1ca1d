"""grpyc.channel against stock rpyc 6.0.2's Channel and Connection over a socketpair.

The stock side uses plain blocking sockets in a real OS thread (gevent's
threadpool), so the hub keeps serving the grpyc side meanwhile.
"""

import contextlib
import os
import socket
import threading

import gevent
import pytest
import rpyc
from rpyc.core import async_ as stock_async
from rpyc.core import consts as stock_consts
from rpyc.core.channel import Channel as StockChannel
from rpyc.core.stream import SocketStream as StockSocketStream

from grpyc import brine as grpyc_brine
from grpyc.channel import Channel, FrameError
from grpyc.stream import SocketStream

TEXT = b"\x02 stock rpyc and grpyc agree on every frame byte; " * 3000

PAYLOADS = [
    b"\x01",
    b"\x01" + bytes(2999),
    TEXT,
    b"\x03" + os.urandom(20_000),
    b"\x02" + os.urandom(1_000_000),
    TEXT * 40,
]


@pytest.fixture
def mixed_pair():
    """(grpyc Channel, stock rpyc Channel) on the two ends of one socketpair."""
    ours, theirs = socket.socketpair()
    grpyc_channel = Channel(SocketStream(ours))
    stock_channel = StockChannel(StockSocketStream(theirs))
    yield grpyc_channel, stock_channel
    grpyc_channel.close()
    stock_channel.close()


def in_thread(func, *args):
    return gevent.get_hub().threadpool.spawn(func, *args)


@pytest.mark.parametrize("compress", [False, True, "auto"])
def test_stock_rpyc_reads_what_grpyc_sends(mixed_pair, compress):
    ours, theirs = mixed_pair
    ours.compress = compress
    receiving = in_thread(lambda: [theirs.recv() for _ in PAYLOADS])
    for payload in PAYLOADS:
        ours.send(payload)
    assert receiving.get(timeout=20) == PAYLOADS


def test_stock_rpyc_reads_what_grpyc_sends_in_batches(mixed_pair):
    ours, theirs = mixed_pair
    receiving = in_thread(lambda: [theirs.recv() for _ in PAYLOADS])
    ours.send_many(PAYLOADS)
    assert receiving.get(timeout=20) == PAYLOADS


@pytest.mark.parametrize("compress", [False, True])
def test_grpyc_reads_what_stock_rpyc_sends(mixed_pair, compress):
    ours, theirs = mixed_pair
    theirs.compress = compress

    def send_all():
        for payload in PAYLOADS:
            theirs.send(payload)

    sending = in_thread(send_all)
    assert [ours.recv() for _ in PAYLOADS] == PAYLOADS
    sending.get(timeout=20)


def test_stock_compressed_frames_really_are_compressed(mixed_pair):
    ours, theirs = mixed_pair
    theirs.compress = True
    in_thread(theirs.send, TEXT).get(timeout=10)
    header = ours.stream.read(5)
    length, flag = StockChannel.FRAME_HEADER.unpack(header)
    assert flag == 1
    assert length < len(TEXT) // 5


def _stock_connection(sock, config):
    return rpyc.connect_stream(StockSocketStream(sock), rpyc.VoidService, config)


def test_stock_rpyc6_request_passes_the_message_check():
    ours, theirs = socket.socketpair()
    channel = Channel(SocketStream(ours))
    stock = _stock_connection(theirs, {})
    try:
        stock.async_request(stock_consts.HANDLE_PING, "hello")
        payload = channel.recv()
        assert payload[0] == stock_consts.MSG_REQUEST
    finally:
        channel.close()
        stock.close()


def test_stock_bind_threads_peer_is_refused_by_name():
    ours, theirs = socket.socketpair()
    channel = Channel(SocketStream(ours))
    stock = _stock_connection(theirs, {"bind_threads": True})
    try:
        stock.async_request(stock_consts.HANDLE_PING, "hello")
        with pytest.raises(FrameError, match=r"a bind_threads peer"):
            channel.recv()
        assert channel.closed is True
    finally:
        channel.close()
        stock.close()


# ------------------------------------------------- bind_threads framing (thread ids)


def _ping_reply(payload, ids):
    """The reply a PING request in ``payload`` asks for, with the given thread ids."""
    seq, (handler, boxed_args) = grpyc_brine.load(payload, start=1)
    assert handler == stock_consts.HANDLE_PING
    label, (data,) = boxed_args  # stock boxes the all-brine argument tuple as one value
    assert label == stock_consts.LABEL_VALUE
    return b"\x02" + grpyc_brine.dump((seq, (stock_consts.LABEL_VALUE, data))), ids


def test_stock_bind_threads_requests_carry_the_calling_thread_and_no_recipient():
    ours, theirs = socket.socketpair()
    channel = Channel(SocketStream(ours), thread_ids=True)
    stock = _stock_connection(theirs, {"bind_threads": True})
    try:
        caller = in_thread(
            lambda: (stock.async_request(stock_consts.HANDLE_PING, "x"), threading.get_ident())[1]
        ).get(timeout=10)
        payload, sender, recipient = channel.recv_with_ids()
        assert (sender, recipient) == (caller, 0)  # 0: rpyc's UNBOUND_THREAD_ID
        assert payload[0] == stock_consts.MSG_REQUEST
    finally:
        channel.close()
        stock.close()


def test_stock_bind_threads_callers_get_replies_addressed_to_their_thread():
    ours, theirs = socket.socketpair()
    channel = Channel(SocketStream(ours), thread_ids=True)
    stock = _stock_connection(theirs, {"bind_threads": True, "sync_request_timeout": 10})
    try:
        pings = [in_thread(stock.ping, data, 10) for data in ("first", "second")]
        requests = [channel.recv_with_ids() for _ in pings]
        assert len({sender for _, sender, _ in requests}) == 2  # one thread each
        # Answered in reverse order, each to the thread that asked.
        for payload, sender, _ in reversed(requests):
            channel.send(*_ping_reply(payload, (7, sender)))
        for ping in pings:
            assert ping.get(timeout=10) is None  # stock's ping checks the echo
    finally:
        channel.close()
        stock.close()


def test_a_reply_addressed_to_another_thread_never_reaches_a_stock_caller():
    ours, theirs = socket.socketpair()
    channel = Channel(SocketStream(ours), thread_ids=True)
    stock = _stock_connection(theirs, {"bind_threads": True})
    try:
        ping = in_thread(_ping_outcome, stock, "lost", 1)
        payload, sender, _ = channel.recv_with_ids()
        channel.send(*_ping_reply(payload, (7, sender + 1)))
        assert ping.get(timeout=10) == "timed out"
    finally:
        channel.close()
        stock.close()


def test_a_stock_bind_threads_server_addresses_its_reply_to_the_requesting_thread():
    ours, theirs = socket.socketpair()
    channel = Channel(SocketStream(ours), thread_ids=True)
    stock = _stock_connection(theirs, {"bind_threads": True})
    serving = threading.Thread(target=_serve_until_closed, args=(stock,), daemon=True)
    serving.start()
    try:
        request = grpyc_brine.dump(
            (5, (stock_consts.HANDLE_PING, (stock_consts.LABEL_TUPLE, ((1, "hi"),))))
        )
        channel.send(b"\x01" + request, ids=(4242, 0))
        payload, sender, recipient = channel.recv_with_ids()
        assert recipient == 4242
        assert sender == serving.ident
        assert grpyc_brine.load(payload, start=1) == (5, (stock_consts.LABEL_VALUE, "hi"))
    finally:
        channel.close()
        serving.join(timeout=10)
        stock.close()
    assert not serving.is_alive()


def _ping_outcome(stock, data, timeout):
    try:
        stock.ping(data, timeout)
    except stock_async.AsyncResultTimeout:
        return "timed out"
    return "answered"


def _serve_until_closed(stock):
    with contextlib.suppress(EOFError, OSError):
        stock.serve_all()
