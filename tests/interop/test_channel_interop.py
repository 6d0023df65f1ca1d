"""grpyc.channel against stock rpyc 6.0.2's Channel and Connection over a socketpair.

The stock side uses plain blocking sockets in a real OS thread (gevent's
threadpool), so the hub keeps serving the grpyc side meanwhile.
"""

import os
import socket

import gevent
import pytest
import rpyc
from rpyc.core import consts as stock_consts
from rpyc.core.channel import Channel as StockChannel
from rpyc.core.stream import SocketStream as StockSocketStream

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
