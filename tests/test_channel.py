"""grpyc.channel: the frame codec fed bytes, limits, older peers, and Channel over a socketpair."""

import ctypes
import itertools
import os
import random
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib

import gevent
import pytest
from gevent import socket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpyc import channel as channel_module
from grpyc.channel import (
    COMPRESSION_THRESHOLD,
    MAX_DECOMPRESSED_SIZE,
    MAX_FRAME_SIZE,
    Channel,
    FrameDecoder,
    FrameError,
    check_message,
    deflate,
    encode_frame,
    inflate,
)
from grpyc.framing import AutoCompression, check_compress_mode
from grpyc.stream import SocketStream

TEXT = (
    b"\x01 the quick brown fox jumps over the lazy dog; "
    b"pack my box with five dozen liquor jugs. " * 2000
)


def frame_bytes(payload, compress=False):
    return b"".join(bytes(part) for part in encode_frame(payload, compress))


def raw_frame(payload, flag=0, trailer=b"\n"):
    return struct.pack("!LB", len(payload), flag) + payload + trailer


def drain(decoder):
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def random_chunks(data, rng, max_chunk):
    pos = 0
    while pos < len(data):
        size = rng.randint(1, max_chunk)
        yield data[pos : pos + size]
        pos += size


def test_defaults_are_64_mib():
    assert MAX_FRAME_SIZE == 64 * 1024 * 1024
    assert MAX_DECOMPRESSED_SIZE == 64 * 1024 * 1024
    decoder = FrameDecoder()
    assert (decoder.max_frame_size, decoder.max_decompressed_size) == (2**26, 2**26)


# --------------------------------------------------------------------- encoder


def test_small_frame_is_one_joined_buffer_with_exact_bytes():
    assert encode_frame(b"\x01abc") == [b"\x00\x00\x00\x04\x00\x01abc\n"]


def test_empty_payload_frame():
    assert encode_frame(b"") == [b"\x00\x00\x00\x00\x00\n"]


def test_large_frame_keeps_the_payload_object_uncopied():
    payload = os.urandom(100_000)
    header, body, trailer = encode_frame(payload)
    assert header == struct.pack("!LB", 100_000, 0)
    assert body is payload
    assert trailer == b"\n"


def test_compress_true_follows_rpyc_threshold():
    at_threshold = TEXT[:COMPRESSION_THRESHOLD]
    assert deflate(at_threshold, True) == (at_threshold, False)
    over = TEXT[: COMPRESSION_THRESHOLD + 1]
    data, compressed = deflate(over, True)
    assert compressed is True
    assert zlib.decompress(data) == over


def test_compress_true_sends_incompressible_payload_as_is():
    payload = os.urandom(10_000)
    assert deflate(payload, True) == (payload, False)


def test_compress_false_never_compresses():
    assert deflate(TEXT, False) == (TEXT, False)


def test_auto_compresses_text_and_skips_random_data():
    data, compressed = deflate(TEXT, "auto")
    assert compressed is True
    assert zlib.decompress(data) == TEXT
    noise = os.urandom(200_000)
    assert deflate(noise, "auto") == (noise, False)


def test_auto_skips_a_payload_whose_middle_does_not_compress():
    # Compressible head, random middle: the sample decides.
    payload = TEXT[:20_000] + os.urandom(20_000) + TEXT[:20_000]
    assert deflate(payload, "auto") == (payload, False)


def test_auto_compression_skips_the_sample_after_a_payload_it_compressed():
    payload = TEXT[:3_000] + os.urandom(1_500) + TEXT[:3_000]  # random middle, 7.5 KB
    noise = os.urandom(6_000)
    memory = AutoCompression()
    assert deflate(payload, memory) == (payload, False)  # the sample says no
    assert deflate(TEXT[:8_000], memory)[1] is True
    assert memory.skip_sample is True
    # The whole decides now: the random middle no longer hides what compresses.
    data, compressed = deflate(payload, memory)
    assert compressed is True
    assert zlib.decompress(data) == payload
    # ... on auto's terms: kept only if the whole shrinks by 10 %.
    barely = os.urandom(7_000) + bytes(400)
    assert deflate(barely, True)[1] is True
    assert deflate(barely, memory) == (barely, False)
    assert memory.skip_sample is False  # and the sample is back
    assert deflate(payload, memory) == (payload, False)
    assert deflate(noise, memory) == (noise, False)
    # Past 8 KiB the sample decides even then: a big random payload after a
    # compressible one costs a sample, not a whole deflate.
    memory.skip_sample = True
    big = TEXT[:20_000] + os.urandom(20_000) + TEXT[:20_000]  # compresses whole, not its middle
    assert deflate(big, True)[1] is True
    assert deflate(big, memory) == (big, False)
    assert memory.skip_sample is False
    # A small frame is never compressed and changes nothing.
    memory.skip_sample = True
    assert frame_bytes(b"\x01small", memory)[4] == 0
    assert memory.skip_sample is True
    assert frame_bytes(payload, memory)[4] == 1


def test_auto_compression_is_not_a_mode_users_set():
    with pytest.raises(ValueError, match=r"compress must be True, False or 'auto'"):
        check_compress_mode(AutoCompression())


def test_encode_frame_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match=r"compress must be True, False or 'auto', got 'yes'"):
        encode_frame(b"\x01", "yes")


def test_compressed_frame_has_flag_one_and_zlib_body():
    wire = frame_bytes(TEXT, True)
    length, flag = struct.unpack("!LB", wire[:5])
    assert flag == 1
    assert zlib.decompress(wire[5 : 5 + length]) == TEXT
    assert wire[5 + length :] == b"\n"


# --------------------------------------------------------------------- decoder


@pytest.mark.parametrize("compress", [False, True, "auto"])
@pytest.mark.parametrize("size", [0, 1, 100, 3000, 3001, 20_000, 300_000])
def test_decoder_round_trip_fed_at_once(size, compress):
    payload = (TEXT * (size // len(TEXT) + 1))[:size]
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(payload, compress))
    assert decoder.next_frame() == payload
    assert decoder.next_frame() is None


@pytest.mark.parametrize("compress", [False, True])
def test_decoder_fed_byte_by_byte(compress):
    payloads = [b"\x01", TEXT[:5000], b"\x02xyz", TEXT[:3001]]
    wire = b"".join(frame_bytes(p, compress) for p in payloads)
    decoder = FrameDecoder()
    frames = []
    for i in range(len(wire)):
        decoder.feed(wire[i : i + 1])
        frames.extend(drain(decoder))
    assert frames == payloads


@pytest.mark.parametrize("seed", range(5))
def test_decoder_fed_in_random_chunks(seed):
    rng = random.Random(seed)
    payloads = [rng.randbytes(rng.choice([0, 1, 50, 4000, 70_000, 400_000])) for _ in range(30)] + [
        TEXT
    ]
    wire = b"".join(frame_bytes(p, rng.choice([False, True, "auto"])) for p in payloads)
    decoder = FrameDecoder()
    frames = []
    for chunk in random_chunks(wire, rng, 100_000):
        decoder.feed(bytearray(chunk) if rng.random() < 0.3 else chunk)
        frames.extend(drain(decoder))
    assert frames == payloads


def test_feed_copies_a_mutable_buffer():
    data = bytearray(frame_bytes(b"\x01abc"))
    decoder = FrameDecoder()
    decoder.feed(data)
    data[5:9] = b"XXXX"
    assert decoder.next_frame() == b"\x01abc"


@pytest.mark.parametrize("compress", [False, True])
def test_every_truncation_waits_for_more(compress):
    wire = frame_bytes(TEXT[:4000], compress)
    for cut in range(len(wire)):
        decoder = FrameDecoder()
        decoder.feed(wire[:cut])
        assert decoder.next_frame() is None, cut
        assert decoder.has_frame() is False, cut
        decoder.feed(wire[cut:])
        assert decoder.has_frame() is True, cut
        assert decoder.next_frame() == TEXT[:4000], cut


@pytest.mark.parametrize("length", [MAX_FRAME_SIZE + 1, 2**31, 2**32 - 1])
def test_header_over_max_frame_size_fails_before_any_body(length):
    tracemalloc.start()
    try:
        decoder = FrameDecoder()
        decoder.feed(struct.pack("!LB", length, 0))
        assert decoder.has_frame() is True
        with pytest.raises(
            FrameError, match=rf"^frame of {length} bytes exceeds max_frame_size=67108864$"
        ):
            decoder.next_frame()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


def test_max_frame_size_is_per_decoder():
    decoder = FrameDecoder(max_frame_size=10)
    decoder.feed(raw_frame(b"\x01" * 10))
    assert decoder.next_frame() == b"\x01" * 10
    decoder.feed(raw_frame(b"\x01" * 11))
    with pytest.raises(FrameError, match=r"^frame of 11 bytes exceeds max_frame_size=10$"):
        decoder.next_frame()


@pytest.mark.parametrize("flag", [2, 0x12, 255])
def test_invalid_compressed_flag(flag):
    decoder = FrameDecoder()
    decoder.feed(raw_frame(b"\x01", flag=flag))
    with pytest.raises(FrameError, match=rf"^frame compressed flag is {flag}, expected 0 or 1$"):
        decoder.next_frame()


@pytest.mark.parametrize("trailer", [b"X", b"\r", b"\x00"])
def test_wrong_trailing_byte(trailer):
    decoder = FrameDecoder()
    decoder.feed(raw_frame(b"\x01ab", trailer=trailer))
    with pytest.raises(
        FrameError,
        match=rf"^frame of 3 bytes ends with byte 0x{trailer[0]:02x}, expected a newline \(0x0a\)$",
    ):
        decoder.next_frame()


def test_missing_trailer_is_seen_as_the_next_header_byte():
    # Without its newline the next frame's first header byte takes its place.
    decoder = FrameDecoder()
    decoder.feed(raw_frame(b"\x01ab", trailer=b"") + raw_frame(b"\x01cd"))
    with pytest.raises(FrameError, match=r"ends with byte 0x00, expected a newline"):
        decoder.next_frame()


def test_decoder_stays_failed_after_an_error():
    decoder = FrameDecoder()
    decoder.feed(raw_frame(b"\x01", flag=7))
    with pytest.raises(FrameError, match="flag is 7"):
        decoder.next_frame()
    decoder.feed(raw_frame(b"\x01ok"))
    assert decoder.has_frame() is True
    with pytest.raises(FrameError, match="flag is 7"):
        decoder.next_frame()


def test_compressed_frame_with_garbage_body():
    decoder = FrameDecoder()
    decoder.feed(raw_frame(b"not zlib at all", flag=1))
    with pytest.raises(FrameError, match=r"^compressed frame of 15 bytes is not valid zlib: "):
        decoder.next_frame()


def test_compressed_frame_with_truncated_zlib_stream():
    body = zlib.compress(TEXT)[:-10]
    decoder = FrameDecoder()
    decoder.feed(raw_frame(body, flag=1))
    with pytest.raises(FrameError, match=rf"^compressed frame of {len(body)} bytes ends inside"):
        decoder.next_frame()


def test_compressed_frame_with_bytes_after_the_zlib_stream():
    body = zlib.compress(b"\x01abc") + b"junk"
    with pytest.raises(FrameError, match=r"has 4 bytes after its zlib stream$"):
        inflate(body, 100)


def test_decompressed_size_limit_is_inclusive():
    payload = b"\x01" + bytes(999)
    assert inflate(zlib.compress(payload), 1000) == payload
    with pytest.raises(FrameError, match=r"inflates past max_decompressed_size=999$"):
        inflate(zlib.compress(payload), 999)


def zeros_deflated(mebibytes):
    """A valid zlib stream of ``mebibytes`` MiB of zeros, built in milliseconds.

    Full flushes make every 1 MiB block stand alone, so one block is repeated;
    the Adler-32 of n zero bytes is ((n mod 65521) << 16) | 1.
    """
    deflater = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    first = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)
    middle = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)
    last = deflater.compress(zeros) + deflater.flush()
    adler = (((mebibytes << 20) % 65521) << 16) | 1
    return first + middle * (mebibytes - 2) + last[:-4] + struct.pack("!L", adler)


def test_zeros_deflated_is_valid_zlib():
    assert zlib.decompress(zeros_deflated(5)) == bytes(5 << 20)


@pytest.fixture(scope="module")
def zlib_bomb():
    """1 GiB of zeros deflated to about 1 MB."""
    return zeros_deflated(1024)


@pytest.mark.parametrize("limit", [1 << 20, MAX_DECOMPRESSED_SIZE])
def test_zlib_bomb_is_refused_fast_with_bounded_memory(zlib_bomb, limit):
    assert len(zlib_bomb) < 1_100_000
    decoder = FrameDecoder(max_decompressed_size=limit)
    decoder.feed(raw_frame(zlib_bomb, flag=1))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(FrameError, match=rf"inflates past max_decompressed_size={limit}$"):
            decoder.next_frame()
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < limit + 4 * 1024 * 1024


def test_limits_must_be_positive_ints():
    with pytest.raises(ValueError, match=r"^max_frame_size must be a positive int, got 0$"):
        FrameDecoder(max_frame_size=0)
    with pytest.raises(
        ValueError, match=r"^max_decompressed_size must be a positive int, got 1.5$"
    ):
        FrameDecoder(max_decompressed_size=1.5)


def test_take_and_put_body_round_trip():
    payload = os.urandom(50_000)
    wire = frame_bytes(payload)
    decoder = FrameDecoder()
    decoder.feed(wire[:1005])
    assert decoder.next_frame() is None
    assert decoder.take_body(min_size=60_000) is None  # smaller than asked for
    prefix, length = decoder.take_body()
    assert (bytes(prefix), length) == (payload[:1000], 50_000)
    assert decoder.next_frame() is None
    assert decoder.has_frame() is False
    decoder.put_body(payload)
    assert decoder.next_frame() is None  # the trailer has not arrived
    decoder.feed(b"\n" + frame_bytes(b"\x02next"))
    assert drain(decoder) == [payload, b"\x02next"]


def test_take_body_declines_when_the_body_is_all_here():
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(b"\x01" * 20_000)[:-1])
    assert decoder.next_frame() is None
    assert decoder.take_body() is None


def test_taken_body_must_come_back_whole_and_before_more_input():
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(b"\x01" * 20_000)[:100])
    decoder.next_frame()
    assert decoder.take_body() is not None
    with pytest.raises(RuntimeError, match=r"feed\(\) while a body taken by take_body\(\)"):
        decoder.feed(b"x")
    with pytest.raises(ValueError, match=r"^put_body\(\) got 3 bytes, the frame body has 20000$"):
        decoder.put_body(b"abc")
    decoder.put_body(b"\x01" * 20_000)
    with pytest.raises(RuntimeError, match=r"put_body\(\) without a body taken"):
        decoder.put_body(b"\x01" * 20_000)


def test_take_body_reads_the_header_itself():
    """`Channel.fill` asks right after a read, before `next_frame` has seen the header."""
    payload = b"\x01" * 50_000
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(payload)[:1005])
    prefix, length = decoder.take_body()
    assert (bytes(prefix), length) == (payload[:1000], 50_000)
    decoder.put_body(payload)
    decoder.feed(b"\n")
    assert drain(decoder) == [payload]


def test_take_body_raises_a_bad_header_and_next_frame_raises_it_again():
    decoder = FrameDecoder(max_frame_size=100)
    decoder.feed(frame_bytes(b"\x01" * 200)[:50])
    with pytest.raises(FrameError, match="100"):
        decoder.take_body()
    with pytest.raises(FrameError, match="100"):
        decoder.next_frame()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8))
def test_arbitrary_bytes_give_frames_or_frame_error(data, cuts):
    decoder = FrameDecoder(max_frame_size=500, max_decompressed_size=2000)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    try:
        for start, end in itertools.pairwise(bounds):
            decoder.feed(data[start:end])
            for frame in drain(decoder):
                assert isinstance(frame, bytes)
                assert len(frame) <= 2000
    except FrameError:
        with pytest.raises(FrameError):
            decoder.next_frame()


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(st.binary(max_size=5000), max_size=6), seed=st.integers(0, 2**32))
def test_any_payload_sequence_round_trips(payloads, seed):
    rng = random.Random(seed)
    wire = b"".join(frame_bytes(p, rng.choice([False, True, "auto"])) for p in payloads)
    decoder = FrameDecoder()
    frames = []
    for chunk in random_chunks(wire, rng, 3000):
        decoder.feed(chunk)
        frames.extend(drain(decoder))
    assert frames == payloads


# ------------------------------------------------------------- message check


def test_rpyc6_message_types_pass():
    for first in (1, 2, 3):
        check_message(bytes([first]) + b"\x11\x20\x00")


def test_rpyc5_message_is_refused_by_name():
    # brine of (MSG_REQUEST, seq 0, (HANDLE_GETROOT, ())): a 3-tuple, small ints.
    rpyc5_getroot = bytes([0x12, 0x51, 0x50, 0x11, 0x53, 0x02])
    with pytest.raises(FrameError, match=r"an RPyC 5\.x peer"):
        check_message(rpyc5_getroot)


def test_bind_threads_prefix_is_refused_by_name():
    payload = struct.pack("!QQ", 140_000_000_000_000, 0) + b"\x01\x11\x50\x02"
    with pytest.raises(FrameError, match=r"a bind_threads peer"):
        check_message(payload)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", r"^unknown message type: empty frame payload$"),
        (b"\x07abc", r"^unknown message type 7 in frame payload \(expected 1, 2 or 3\)$"),
        (b"\x00" * 16, r"^unknown message type 0 in frame payload"),
    ],
)
def test_unknown_message_type(payload, message):
    with pytest.raises(FrameError, match=message):
        check_message(payload)


# --------------------------------------------------------------------- Channel


@pytest.fixture
def channels():
    left, right = socket.socketpair()
    pair = Channel(SocketStream(left)), Channel(SocketStream(right))
    yield pair
    for channel in pair:
        channel.close()


def test_channel_defaults_and_rpyc_attributes(channels):
    channel = channels[0]
    assert channel.compress == "auto"
    assert (channel.max_frame_size, channel.max_decompressed_size) == (2**26, 2**26)
    assert Channel.COMPRESSION_THRESHOLD == 3000
    assert Channel.COMPRESSION_LEVEL == 1
    assert Channel.FLUSHER == b"\n"
    assert Channel.FRAME_HEADER.format == "!LB"
    assert channel.fileno() == channel.stream.sock.fileno()
    assert channel.closed is False


def test_channel_compress_is_checked_when_set(channels):
    channel = channels[0]
    channel.compress = False
    assert channel.compress is False
    with pytest.raises(ValueError, match=r"got 'zlib'"):
        channel.compress = "zlib"
    with pytest.raises(ValueError, match=r"got None"):
        Channel(channel.stream, compress=None)


class RecordingStream:
    """What a channel writes, one entry per write."""

    def __init__(self):
        self.writes = []

    def write(self, data):
        self.writes.append(bytes(data))

    def write_buffers(self, buffers):
        self.writes.append(b"".join(bytes(buffer) for buffer in buffers))

    def close(self):
        pass


@pytest.mark.parametrize("thread_ids", [False, True])
def test_auto_channel_skips_the_sample_after_a_compressed_frame(thread_ids):
    # A payload with a random middle: the sample says no, the whole says yes.
    mixed = TEXT[:3_000] + os.urandom(1_500) + TEXT[:3_000]
    noise = os.urandom(6_000)
    stream = RecordingStream()
    channel = Channel(stream, thread_ids=thread_ids)
    sent = [mixed, TEXT, mixed, noise, mixed, b"\x01small", mixed]
    for payload in sent:
        channel.send(payload, (1, 2) if thread_ids else None)
    flags = [frame[4] for frame in stream.writes]
    # sampled: no; compressed; so the whole at once: yes; the whole does not
    # shrink: no, and sampling again: no; a small frame changes nothing.
    assert flags == [0, 1, 1, 0, 0, 0, 0]
    decoder = FrameDecoder()
    decoder.feed(b"".join(stream.writes))
    prefix = 16 if thread_ids else 0
    assert [frame[prefix:] for frame in drain(decoder)] == sent
    channel.compress = True  # RPyC's rule: every payload over the threshold
    channel.send(mixed, (1, 2) if thread_ids else None)
    assert stream.writes[-1][4] == 1
    channel.compress = "auto"  # samples again first
    channel.send(mixed, (1, 2) if thread_ids else None)
    assert stream.writes[-1][4] == 0


@pytest.mark.parametrize("compress", [False, True, "auto"])
def test_channel_round_trip(channels, compress):
    sender, receiver = channels
    sender.compress = compress
    payloads = [b"\x01", TEXT, b"\x03" + os.urandom(300_000), b"\x02" + bytes(10)]
    writer = gevent.spawn(lambda: [sender.send(p) for p in payloads])
    assert [receiver.recv() for _ in payloads] == payloads
    writer.get(timeout=10)


def test_send_many_keeps_order_and_frames(channels):
    sender, receiver = channels
    payloads = [b"\x01a", TEXT, b"\x02" + os.urandom(100_000), b"\x03b", b"\x01c"]
    writer = gevent.spawn(sender.send_many, payloads)
    assert [receiver.recv() for _ in payloads] == payloads
    writer.get(timeout=10)


@pytest.mark.parametrize("compress", [False, True])
def test_big_round_trip(channels, compress):
    sender, receiver = channels
    sender.compress = compress
    size = 16 * 1024 * 1024
    payload = (b"\x02" + os.urandom(size // 2)) + (TEXT * (size // 2 // len(TEXT) + 1))[: size // 2]
    writer = gevent.spawn(sender.send, payload)
    assert receiver.recv() == payload
    writer.get(timeout=20)


def test_poll_sees_frames_already_buffered(channels):
    sender, receiver = channels
    assert receiver.poll(0) is False
    sender.send_many([b"\x01one", b"\x01two"])
    assert receiver.poll(1) is True
    assert receiver.recv() == b"\x01one"
    # The second frame came in with the first read: the socket is empty now.
    assert receiver.stream.poll(0) is False
    assert receiver.poll(0) is True
    assert receiver.recv() == b"\x01two"
    assert receiver.poll(0.01) is False


def test_recv_refuses_an_older_peer_and_closes_the_stream(channels):
    sender, receiver = channels
    sender.stream.write(raw_frame(bytes([0x12, 0x51, 0x50, 0x11, 0x53, 0x02])))
    with pytest.raises(FrameError, match=r"RPyC 5\.x peer"):
        receiver.recv()
    assert receiver.closed is True
    with pytest.raises(EOFError):
        sender.recv()


def test_recv_over_limit_closes_the_stream():
    left, right = socket.socketpair()
    sender = Channel(SocketStream(left))
    receiver = Channel(SocketStream(right), max_frame_size=1000)
    try:
        sender.send(b"\x01" + bytes(1000))
        with pytest.raises(FrameError, match=r"^frame of 1001 bytes exceeds max_frame_size=1000$"):
            receiver.recv()
        assert receiver.closed is True
    finally:
        sender.close()
        receiver.close()


def test_recv_eof_between_frames(channels):
    sender, receiver = channels
    sender.send(b"\x01last")
    sender.close()
    assert receiver.recv() == b"\x01last"
    with pytest.raises(EOFError, match="connection closed by peer"):
        receiver.recv()
    assert receiver.closed is True


@pytest.mark.parametrize("size", [100, 1_000_000])
def test_recv_eof_inside_a_frame(channels, size):
    sender, receiver = channels
    wire = frame_bytes(b"\x01" * size)

    def write_half_and_close():
        sender.stream.write(wire[: len(wire) // 2])
        sender.close()

    writer = gevent.spawn(write_half_and_close)
    with pytest.raises(EOFError, match="connection closed by peer"):
        receiver.recv()
    writer.get(timeout=10)


def test_send_on_closed_channel_raises_eof(channels):
    sender, _ = channels
    sender.close()
    assert sender.closed is True
    with pytest.raises(EOFError, match="stream has been closed"):
        sender.send(b"\x01")


def test_large_body_is_read_in_one_piece_even_when_split(channels, monkeypatch):
    # The body read into its final bytes object starts with bytes that came
    # in with the header; those must land first.
    monkeypatch.setattr(channel_module, "_LARGE_BODY", 1000)
    sender, receiver = channels
    payload = b"\x01" + os.urandom(50_000)
    wire = frame_bytes(payload)
    sender.stream.write(wire[:300])
    assert receiver.poll(1) is True
    writer = gevent.spawn(sender.stream.write, wire[300:])
    assert receiver.recv() == payload
    writer.get(timeout=10)


# --------------------------------------------------------------------- thread ids

THREAD_A, THREAD_B = 140_000_000_000_001, 140_000_000_000_002


@pytest.fixture
def thread_id_channels():
    left, right = socket.socketpair()
    pair = Channel(SocketStream(left), thread_ids=True), Channel(SocketStream(right))
    pair[1].thread_ids = True
    yield pair
    for channel in pair:
        channel.close()


@pytest.mark.parametrize("compress", [False, True])
def test_thread_ids_travel_with_each_frame(thread_id_channels, compress):
    sender, receiver = thread_id_channels
    sender.compress = compress
    big = b"\x02" + b"text " * 10_000
    sender.send(b"\x01hi", ids=(THREAD_A, 0))
    sender.send(big, ids=(THREAD_A, THREAD_B))
    assert receiver.recv_with_ids() == (b"\x01hi", THREAD_A, 0)
    assert receiver.recv_with_ids() == (big, THREAD_A, THREAD_B)


def test_send_many_takes_ids_per_frame(thread_id_channels):
    sender, receiver = thread_id_channels
    payloads = [b"\x01a", b"\x02" + bytes(40_000), b"\x03c"]
    ids = [(1, 2), (3, 4), (2**64 - 1, 0)]
    sender.send_many(payloads, ids=ids)
    assert [receiver.recv_with_ids() for _ in payloads] == [
        (payload, *pair) for payload, pair in zip(payloads, ids, strict=True)
    ]
    with pytest.raises(ValueError, match="2 ids for 3 payloads"):
        sender.send_many(payloads, ids=ids[:2])


def test_recv_drops_the_thread_ids(thread_id_channels):
    sender, receiver = thread_id_channels
    sender.send(b"\x01x", ids=(THREAD_A, THREAD_B))
    assert receiver.recv() == b"\x01x"


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (None, r"needs ids=\(sender, recipient\)"),
        ((-1, 0), r"thread ids \(-1, 0\) are not two ints in 0..2\*\*64-1"),
        ((2**64, 0), r"thread ids \(18446744073709551616, 0\) are not two ints"),
        ((1,), r"thread ids \(1,\) are not two ints"),
    ],
)
def test_bad_thread_ids_are_the_callers_error(thread_id_channels, ids, message):
    sender, _ = thread_id_channels
    with pytest.raises(ValueError, match=message):
        sender.send(b"\x01", ids=ids)


def test_ids_without_thread_id_framing_are_refused(channels):
    sender, receiver = channels
    with pytest.raises(ValueError, match="ids given to a channel without thread_ids framing"):
        sender.send(b"\x01", ids=(1, 2))
    sender.send(b"\x01plain")
    assert receiver.recv_with_ids() == (b"\x01plain", 0, 0)


def test_a_peer_without_thread_ids_is_refused_and_closed(thread_id_channels):
    sender, receiver = thread_id_channels
    sender.thread_ids = False
    sender.send(b"\x01\x11\x50\x00")
    with pytest.raises(FrameError, match=r"no 16-byte thread-id prefix .* does not use bind_th"):
        receiver.recv_with_ids()
    assert receiver.closed is True


# --------------------------------------------------- big values kept apart
def test_pieces_go_out_as_they_are_unless_compressed():
    from grpyc.framing import Pieces

    big = os.urandom(200_000)
    pieces = Pieces([b"\x02head", big, b"tail"])
    assert len(pieces) == 200_009 and bytes(pieces) == b"\x02head" + big + b"tail"
    buffers = encode_frame(pieces, "auto")  # random data: not compressed
    assert any(buffer is big for buffer in buffers)
    assert b"".join(buffers) == raw_frame(bytes(pieces))
    text = Pieces([b"\x02", TEXT, b"!"])
    compressed = frame_bytes(text, True)
    assert compressed[4] == 1
    decoder = FrameDecoder()
    decoder.feed(compressed)
    assert decoder.next_frame() == bytes(text)


def test_a_big_frame_all_there_is_read_by_one_fill(channels, monkeypatch):
    """Header, body and trailing newline in one `fill`: a reader does not wait
    for a second and a third readable event (a trip through the hub each)."""
    monkeypatch.setattr(channel_module, "_LARGE_BODY", 10_000)  # fits the socketpair's buffer
    sender, receiver = channels
    big = b"\x02" + os.urandom(99_999)
    sender.send(big)
    sender.send(b"\x02next")
    receiver.fill()
    assert receiver.next_buffered() == big
    assert receiver.next_buffered() == b"\x02next"  # it came with the newline
    assert receiver.next_buffered() is None


def _frame_past_a_small_read(sender, receiver):
    """A frame bigger than a small read (448 bytes), sent after a small one."""
    sender.send(b"\x02small")
    receiver.fill()  # a small frame: the next read asks for 448 bytes again
    assert receiver.next_buffered() == b"\x02small"
    frame = b"\x02" + b"p" * 600  # a ping is ~540 bytes, a traceback more
    sender.send(frame)
    return frame


def test_a_frame_past_a_small_read_is_read_by_one_fill(channels):
    """Its rest is read at once, not after another readable event (a hub
    turn, or a poll, on each side of every such round trip)."""
    sender, receiver = channels
    frame = _frame_past_a_small_read(sender, receiver)
    receiver.fill()
    assert receiver.next_buffered() == frame


def test_a_frame_cut_right_after_a_small_read_waits_for_its_rest(channels):
    """Exactly a small read's 448 bytes there: the read at once finds nothing
    more, and the frame completes with the next `fill`, as any cut frame."""
    sender, receiver = channels
    sender.send(b"\x02small")
    receiver.fill()
    assert receiver.next_buffered() == b"\x02small"
    frame = b"\x02" + b"p" * 600
    wire = raw_frame(frame)
    sender.stream.write(wire[:448])
    receiver.fill()
    assert receiver.next_buffered() is None
    sender.stream.write(wire[448:])
    receiver.fill()
    assert receiver.next_buffered() == frame


def test_a_plain_threads_channel_reads_a_frame_past_a_small_read_by_one_fill():
    left, right = socket.socketpair()
    outcome = []

    def plain_thread():  # no gevent hub here: blocking sockets, MSG_DONTWAIT
        sender, receiver = Channel(SocketStream(left)), Channel(SocketStream(right))
        try:
            frame = _frame_past_a_small_read(sender, receiver)
            receiver.fill()
            outcome.append(receiver.next_buffered() == frame)
        finally:
            sender.close()
            receiver.close()

    thread = threading.Thread(target=plain_thread)
    thread.start()
    thread.join(10)
    assert outcome == [True]


def test_a_big_frame_waits_for_its_trailer_and_checks_it(channels, monkeypatch):
    monkeypatch.setattr(channel_module, "_LARGE_BODY", 10_000)
    sender, receiver = channels
    big = b"\x02" + os.urandom(49_999)
    sender.stream.write(raw_frame(big, trailer=b""))
    receiver.fill()
    assert receiver.next_buffered() is None  # read all the body; the newline is not there
    sender.stream.write(b"\n")
    receiver.fill()
    assert receiver.next_buffered() == big
    sender.stream.write(raw_frame(big, trailer=b"X"))
    receiver.fill()
    with pytest.raises(FrameError, match="expected a newline"):
        receiver.next_buffered()
    assert receiver.closed


def _spliced_pair(channels, payload):
    sender, receiver = channels
    receiver.splice_values = True
    writer = gevent.spawn(sender.send, payload)
    return receiver, writer


def test_a_splicing_channel_reads_a_big_value_into_its_own_buffer(channels):
    from grpyc import brine
    from grpyc.framing import Spliced

    big = os.urandom(1_000_000)
    payload = brine.dump((5, (1, big, "after")), b"\x02")
    receiver, writer = _spliced_pair(channels, payload)
    receiver.fill()
    while (frame := receiver.next_buffered()) is None:
        receiver.fill()
    writer.get(timeout=10)
    assert type(frame) is Spliced
    assert frame.value == big and frame.whole() == payload
    assert len(frame) + len(frame.value) == len(payload)


def test_recv_returns_a_spliced_payload_whole(channels):
    payload = b"\x02" + bytes([0x0F]) + (600_000).to_bytes(4, "big") + os.urandom(600_000)
    receiver, writer = _spliced_pair(channels, payload)
    assert receiver.recv() == payload
    writer.get(timeout=10)


def test_no_splice_on_compressed_frames(channels):
    sender, receiver = channels
    sender.compress = True
    payload = b"\x02\x0f" + (len(TEXT) * 4).to_bytes(4, "big") + TEXT * 4
    receiver, writer = _spliced_pair(channels, payload)
    assert receiver.next_buffered() is None
    receiver.fill()
    while (frame := receiver.next_buffered()) is None:
        receiver.fill()
    writer.get(timeout=10)
    assert type(frame) is bytes and frame == payload


def test_no_splice_with_thread_ids(thread_id_channels):
    sender, receiver = thread_id_channels
    receiver.splice_values = True
    payload = b"\x02\x0f" + (600_000).to_bytes(4, "big") + os.urandom(600_000)
    writer = gevent.spawn(sender.send, payload, ids=(THREAD_A, THREAD_B))
    receiver.fill()
    while (frame := receiver.next_buffered()) is None:
        receiver.fill()
    writer.get(timeout=10)
    assert type(frame) is bytes and frame == payload


# Whether malloc serves a 768 KiB block by mmap once a fresh process made a
# Channel (glibc's count of mmapped blocks; one probe: freeing an mmapped block
# raises the thresholds too).
MALLOC_PROBE = """
import ctypes, socket
libc = ctypes.CDLL(None)
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def mmapped(size):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    count = libc.mallinfo2().hblks - before
    libc.free(block)
    return count
import grpyc.channel
from grpyc.stream import SocketStream
grpyc.channel._malloc_settled = SETTLED
left, right = socket.socketpair()
grpyc.channel.Channel(SocketStream(left))
print(mmapped(768 * 1024))
"""


def test_the_first_channel_raises_glibcs_malloc_thresholds_past_zlibs_buffers():
    # Else a heap whose top held zlib's buffers went back to the kernel after
    # every compressed frame (~50 page faults a frame).
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):  # glibc 2.33 or later
        pytest.skip("needs glibc's mallinfo2 to see malloc's thresholds")
    outputs = {}
    for settled in (False, True):  # True: as if an earlier Channel had settled them
        code = f"SETTLED = {settled}\n{MALLOC_PROBE}"
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs[settled] = done.stdout.split()
    assert outputs[False] == ["0"]  # from the heap
    assert outputs[True] == ["1"]  # mmapped: what a process without it does


# ------------------------------------------- acknowledgements (`owe_ack`)
class _AckCountingStream(SocketStream):
    acks = 0

    def ack_now(self):
        self.acks += 1
        return True


def test_a_frame_answered_later_is_owed_an_ack_until_this_side_writes(channels):
    a, b = channels
    b.owe_ack()
    assert not b.ack_owed  # nothing read since b wrote: nothing to acknowledge
    a.send(b"\x01del")
    b.fill()
    assert b.next_buffered() == b"\x01del"
    b.owe_ack()
    assert b.ack_owed
    b.send(b"\x02answer")  # our frame carries the acknowledgement
    assert not b.ack_owed and not b.read_since_write
    a.send(b"\x01del")
    b.fill()
    b.next_buffered()
    b.owe_ack()
    assert b.ack_now() is True and not b.ack_owed


def test_ack_now_asks_the_stream_and_a_stream_without_it_needs_nothing():
    left, right = socket.socketpair()
    counting = Channel(_AckCountingStream(left))
    assert counting.ack_now() is True and counting.stream.acks == 1

    class Bare:  # a stream of another make
        def close(self):
            right.close()

    assert Channel(Bare()).ack_now() is True
    counting.close()
    right.close()
