"""grpyc.framing: the sans-I/O frame codec, its one-step path, thread-id framing.

The codec's behaviour on every input (limits, truncations, zlib bombs) is
tested through its old home in tests/test_channel.py; this file covers what
the move added and what the module promises about its imports.
"""

import ast
import struct
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpyc import channel, framing
from grpyc._accel import source_path
from grpyc.framing import (
    COMPRESSION_THRESHOLD,
    FRAME_HEADER,
    THREAD_IDS,
    FrameDecoder,
    FrameError,
    check_message,
    encode_frame,
    join_small_frames,
)


def frame(payload, flag=0, trailer=b"\n"):
    return FRAME_HEADER.pack(len(payload), flag) + payload + trailer


def drain(decoder):
    payloads = []
    while (payload := decoder.next_frame()) is not None:
        payloads.append(payload)
    return payloads


def _imports_of(module):
    imported = set()
    for node in ast.walk(ast.parse(source_path(module).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    return imported


def test_framing_imports_nothing_above_the_codecs():
    codecs = {"grpyc.consts", "grpyc._payloads", "grpyc._incompressible"}
    assert _imports_of(framing) == {"__future__", "collections.abc", "struct", "zlib", *codecs}
    assert _imports_of(sys.modules["grpyc._payloads"]) == {"__future__"}


@pytest.mark.parametrize(
    "name",
    [
        *("COMPRESSION_LEVEL", "COMPRESSION_THRESHOLD", "MAX_DECOMPRESSED_SIZE"),
        *("MAX_FRAME_SIZE", "FrameDecoder", "FrameError", "check_message", "deflate"),
        *("encode_frame", "inflate"),
    ],
)
def test_channel_still_exports_the_codec_names(name):
    assert getattr(channel, name) is getattr(framing, name)
    assert name in channel.__all__


# ------------------------------------------------------------ one-step path


def test_whole_buffered_frames_come_out_in_order_and_the_buffer_is_dropped():
    payloads = [b"\x01", b"\x02" * 100, b"\x03" + bytes(5000), b"\x01" * 20_000]
    decoder = FrameDecoder()
    decoder.feed(b"".join(frame(payload) for payload in payloads))
    assert drain(decoder) == payloads
    assert decoder._data == b""  # nothing pinned once all is read


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
    st.integers(1, 50),
)
def test_any_split_of_the_input_gives_the_same_frames(payloads, step):
    stream = b"".join(frame(payload) for payload in payloads)
    whole, split = FrameDecoder(), FrameDecoder()
    whole.feed(stream)
    got = []
    for start in range(0, len(stream), step):
        split.feed(stream[start : start + step])
        got += drain(split)
    assert drain(whole) == payloads == got


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (frame(b"\x01abc", trailer=b"X"), "ends with byte 0x58, expected a newline"),
        (frame(b"\x01abc", flag=2), "compressed flag is 2"),
        (FRAME_HEADER.pack(70, 0) + bytes(71), "frame of 70 bytes exceeds max_frame_size=64"),
    ],
)
def test_the_one_step_path_leaves_every_error_to_the_full_path(bad, message):
    decoder = FrameDecoder(max_frame_size=64)
    decoder.feed(frame(b"\x01ok") + bad)
    assert decoder.next_frame() == b"\x01ok"
    with pytest.raises(FrameError, match=message):
        decoder.next_frame()
    # The stream cannot be resynchronised: valid frames fed later do not come out.
    decoder.feed(frame(b"\x01later"))
    with pytest.raises(FrameError, match=message):
        decoder.next_frame()


def test_compressed_frames_take_the_full_path():
    payload = b"\x02" + b"compressible " * 1000
    decoder = FrameDecoder()
    decoder.feed(frame(zlib.compress(payload), flag=1) + frame(b"\x01"))
    assert drain(decoder) == [payload, b"\x01"]


# ------------------------------------------------------------ thread-id framing

IDS = THREAD_IDS.pack(140_000_000_001, 140_000_000_002)


def test_thread_ids_are_two_big_endian_unsigned_8_byte_ints():
    assert THREAD_IDS.size == 16
    assert THREAD_IDS.pack(1, 2) == bytes(7) + b"\x01" + bytes(7) + b"\x02"


def test_encode_frame_puts_the_prefix_inside_the_payload():
    (small,) = encode_frame(b"\x01hello", prefix=IDS)
    assert small == frame(IDS + b"\x01hello")
    big = b"\x02" + bytes(50_000)
    assert encode_frame(big, prefix=IDS) == [FRAME_HEADER.pack(50_017, 0), IDS, big, b"\n"]
    (compressed,) = encode_frame(big, compress=True, prefix=IDS)
    length, flag = FRAME_HEADER.unpack_from(compressed)
    assert flag == 1
    assert zlib.decompress(compressed[5 : 5 + length]) == IDS + big


def test_check_message_with_thread_ids():
    check_message(IDS + b"\x01\x11\x50\x00", thread_ids=True)
    with pytest.raises(FrameError, match=r"payload of 4 bytes has no 16-byte thread-id prefix"):
        check_message(b"\x01\x11\x50\x00", thread_ids=True)
    with pytest.raises(FrameError, match=r"payload of 16 bytes is too short for the 16-byte"):
        check_message(IDS, thread_ids=True)
    with pytest.raises(FrameError, match=r"unknown message type 9 after the thread-id prefix"):
        check_message(IDS + b"\x09", thread_ids=True)
    with pytest.raises(FrameError, match=r"an RPyC 5\.x peer"):
        check_message(b"\x12\x50\x50\x50", thread_ids=True)


def test_check_message_without_thread_ids_names_the_fix():
    with pytest.raises(FrameError, match=r"a bind_threads peer .* turn bind_threads on here too"):
        check_message(IDS + b"\x01\x11\x50\x00")


def test_struct_of_the_prefix_matches_stock_rpyc():
    from rpyc.core import brine as stock_brine

    assert THREAD_IDS.format == stock_brine.I8I8.format == "!QQ"
    assert isinstance(THREAD_IDS, struct.Struct)


def test_inflate_reports_progress_between_full_steps():
    """A runtime yields in `progress`: a 48 MB frame inflates in ~1 MiB stretches,
    not one 60 ms one."""
    data = (b"\x05123") * (3 * 1024 * 1024)  # 12 MiB, compresses ~200x
    calls = []
    out = framing.inflate(zlib.compress(data, 1), len(data), lambda: calls.append(1))
    assert out == data
    assert len(calls) >= 11  # one per full 1 MiB output step


# ------------------------------------------------------------ encoding


@pytest.mark.parametrize("compress", [True, False, "auto"])
@pytest.mark.parametrize("size", [1, 100, COMPRESSION_THRESHOLD, COMPRESSION_THRESHOLD + 1])
def test_small_bytes_frames_encode_as_the_general_path_does(compress, size):
    payload = b"\x01" + b"a" * (size - 1)  # compressible: only the threshold keeps it raw
    fast = encode_frame(payload, compress)
    general = encode_frame(bytearray(payload), compress)  # not bytes: the general path
    assert b"".join(fast) == b"".join(general)
    if size <= COMPRESSION_THRESHOLD:
        assert fast == [FRAME_HEADER.pack(size, 0) + payload + b"\n"]


@pytest.mark.parametrize("compress", [True, False, "auto"])
def test_small_frames_join_as_encode_frame_writes_them(compress):
    payloads = [b"\x01", b"\x02" + b"a" * 200, b"\x01" + b"b" * (COMPRESSION_THRESHOLD - 1)]
    joined = join_small_frames(payloads, compress)
    assert joined == b"".join(b"".join(encode_frame(p, compress)) for p in payloads)
    decoder = FrameDecoder()
    decoder.feed(joined)
    assert drain(decoder) == payloads


@pytest.mark.parametrize(
    ("payloads", "compress"),
    [
        ([b"\x01", b"\x02" * (COMPRESSION_THRESHOLD + 1)], False),  # may compress: encode_frame
        ([b"\x01", bytearray(b"\x02")], False),  # not bytes: the general path
        ([b"\x01", memoryview(b"\x02")], False),
        ([b"\x01"], "yes"),  # a bad mode is encode_frame's to refuse
    ],
)
def test_small_frames_join_only_small_bytes(payloads, compress):
    assert join_small_frames(payloads, compress) is None


@pytest.mark.parametrize("compress", ["yes", None, 2])
def test_a_bad_compress_mode_is_refused_for_small_frames_too(compress):
    with pytest.raises(ValueError, match="compress must be True, False or 'auto'"):
        encode_frame(b"\x01", compress)
