"""The frame codec of a connection (PROTOCOL.md section 1), sans I/O.

A frame is a 4-byte big-endian payload length N, a 1-byte compressed flag,
N payload bytes and a newline byte. This module owns that format in both
directions, on bytes only: `encode_frame` for the sender and `FrameDecoder`
for the receiver, `deflate`/`inflate` for compression, `check_message` for the
first-byte test that tells an rpyc 6 message from an older format, and the
16-byte thread-id prefix of rpyc's ``bind_threads`` framing (`THREAD_IDS`).
It imports nothing above the codecs (no gevent, no socket); `grpyc.channel`
runs it over a stream.

The decoder checks each header against the limits before it does anything
with the body, and holds only bytes the peer really sent.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence

from grpyc._incompressible import COMPILED as INCOMPRESSIBLE_COMPILED
from grpyc._incompressible import cannot_shrink
from grpyc._payloads import BytesLike as BytesLike
from grpyc._payloads import Payload as Payload
from grpyc._payloads import Pieces as Pieces
from grpyc._payloads import Spliced as Spliced
from grpyc._payloads import ThreadFrame as ThreadFrame
from grpyc.consts import MSG_EXCEPTION, MSG_REPLY, MSG_REQUEST

__all__ = [
    "COMPRESSION_LEVEL",
    "COMPRESSION_THRESHOLD",
    "FLUSHER",
    "FRAME_HEADER",
    "MAX_DECOMPRESSED_SIZE",
    "MAX_FRAME_SIZE",
    "THREAD_IDS",
    "AutoCompression",
    "FrameDecoder",
    "FrameError",
    "FrameMode",
    "Payload",
    "Pieces",
    "Spliced",
    "ThreadFrame",
    "check_compress_mode",
    "check_limit",
    "check_message",
    "deflate",
    "encode_frame",
    "inflate",
    "join_small_frames",
]

CompressMode = bool | str

# RPyC has no limit at all. 64 MiB carries any bulk value a single call
# reasonably returns, while bounding what one hostile header can make a
# connection hold; raise it per channel for bigger single transfers.
MAX_FRAME_SIZE = 64 * 1024 * 1024
# A zlib stream inflates up to ~1000x: without this bound a 64 MiB frame
# could demand 64 GiB. Same figure as MAX_FRAME_SIZE so that whatever a
# sender may send uncompressed it may also send compressed.
MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024

# RPyC's sender rule: zlib level 1, only for payloads longer than this.
COMPRESSION_THRESHOLD = 3000
COMPRESSION_LEVEL = 1

# The 5 bytes before a payload (length, compressed flag) and the one after.
FRAME_HEADER = struct.Struct("!LB")
FLUSHER = b"\n"
# FRAME_HEADER's size and methods taken once: compiled, each attribute read
# of the Struct is a generic lookup (~140 instructions; several per frame).
_HEADER_SIZE = FRAME_HEADER.size
_pack_header = FRAME_HEADER.pack
_unpack_header = FRAME_HEADER.unpack_from
_NEWLINE = 0x0A
_MAX_WIRE_LENGTH = 0xFFFFFFFF  # the 4-byte length field

# "auto" compresses only payloads whose middle sample shrinks by at least
# _AUTO_MIN_SAVING, and keeps the result only if the whole shrank as much:
# deflating incompressible data costs ~20 ns/byte and saves nothing.
_AUTO_SAMPLE_SIZE = 1024  # at most _incompressible.LONGEST_SAMPLE
_AUTO_MIN_SAVING = 0.10
# The biggest payload `AutoCompression` deflates whole without the sample.
# Deflating random bytes costs ~20 ns a byte for nothing; zlib's sample
# ~2-10 us (random bytes ~3, compiled: `cannot_shrink`): a peer that
# alternates what it has us answer (text, then random bytes) makes every
# other frame such a miss, at most ~160 us up to 8 KiB; where the sample is a
# big share of the work (compressible 3-8 KiB payloads) skipping it pays.
_AUTO_WHOLE_LIMIT = 8 * 1024

# Most output and most input of one zlib call in `inflate`.
_INFLATE_STEP = 1024 * 1024
_INFLATE_INPUT_STEP = 64 * 1024

# Frames up to this size go out as one joined buffer: copying a small
# payload is cheaper than a vectored write; bigger ones are never copied.
_JOIN_LIMIT = 16 * 1024

_MESSAGE_TYPES = frozenset((MSG_REQUEST, MSG_REPLY, MSG_EXCEPTION))
_COMPRESS_MODES = (True, False, "auto")
# RPyC 5.x sends brine (msg, seq, args): tag 0x12 is a brine 3-tuple.
_BRINE_TUPLE3 = 0x12
# rpyc's bind_threads framing puts two unsigned 8-byte big-endian thread ids
# before each message: the sender's thread, then the recipient's (0: none).
THREAD_IDS = struct.Struct("!QQ")
_THREAD_IDS_SIZE = THREAD_IDS.size


class FrameError(ValueError):
    """The peer sent bytes that are not a valid frame; the stream is unusable."""


def check_limit(name: str, value: int) -> int:
    """``value`` if it is a positive int, else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class AutoCompression:
    """``"auto"`` compression with a memory, for one channel's frames.

    After a payload it compressed, the next one up to `_AUTO_WHOLE_LIMIT`
    (8 KiB) is deflated whole at once, without the sample, and kept on the
    same terms (10 % smaller); one that does not shrink brings the sample
    back. The sample of a 3 KiB payload costs 60 % of deflating it whole,
    and payloads that compress come in a row. Bigger payloads are always
    sampled: there the sample is a small share of the work, and a random
    payload deflated whole would cost ~20 ns a byte for nothing.
    `encode_frame` and `deflate` take it where they take a mode.
    """

    __slots__ = ("skip_sample",)

    def __init__(self) -> None:
        self.skip_sample = False


# What `encode_frame` and `deflate` take: a mode, or a channel's memory of "auto".
FrameMode = CompressMode | AutoCompression


def _is_frame_mode(compress: object) -> bool:
    """Whether `compress` is a `FrameMode` as it is (nothing to check or map)."""
    return type(compress) is AutoCompression or compress in _COMPRESS_MODES


def check_compress_mode(compress: CompressMode) -> CompressMode:
    """``compress`` if it is True, False or "auto", else ValueError."""
    if compress not in _COMPRESS_MODES:
        raise ValueError(f"compress must be True, False or 'auto', got {compress!r}")
    return compress


def _parse_header(data: BytesLike, offset: int, max_frame_size: int) -> tuple[int, bool]:
    """Length and compressed flag of the frame header at ``offset``.

    Raises:
        FrameError: the flag is not 0 or 1, or the length exceeds ``max_frame_size``.
    """
    length, flag = _unpack_header(data, offset)
    if flag > 1:
        raise FrameError(f"frame compressed flag is {flag}, expected 0 or 1")
    if length > max_frame_size:
        raise FrameError(f"frame of {length} bytes exceeds max_frame_size={max_frame_size}")
    return length, flag == 1


def _check_trailer(byte: int, length: int) -> None:
    if byte != _NEWLINE:
        raise FrameError(
            f"frame of {length} bytes ends with byte 0x{byte:02x}, expected a newline (0x0a)"
        )


def inflate(
    data: BytesLike, max_decompressed_size: int, progress: Callable[[], None] | None = None
) -> bytes:
    """Decompress one zlib stream, refusing to produce more than the limit.

    `progress`, if given, is called after each full output step: a runtime
    lets others run there, since inflating a big frame is one long stretch
    of CPU otherwise (48 MB: ~60 ms).

    Each zlib call gets at most `_INFLATE_INPUT_STEP` input bytes and may
    produce at most `_INFLATE_STEP` output bytes; inflation stops at the
    first step past the limit. So a zlib bomb costs at most about
    ``max_decompressed_size + _INFLATE_STEP`` bytes of memory and the time to
    produce them, and big inputs are never re-copied (zlib copies the input
    it could not use into ``unconsumed_tail`` on every call).

    Raises:
        FrameError: invalid or truncated zlib data, trailing bytes after the
            stream, or output larger than ``max_decompressed_size``.
    """
    inflater = zlib.decompressobj()
    chunks: list[bytes] = []
    size = offset = 0
    with memoryview(data) as view:
        while not inflater.eof:
            piece = view[offset : offset + _INFLATE_INPUT_STEP]
            try:
                chunk = inflater.decompress(piece, _INFLATE_STEP)
            except zlib.error as exc:
                raise FrameError(
                    f"compressed frame of {len(view)} bytes is not valid zlib: {exc}"
                ) from exc
            size += len(chunk)
            if size > max_decompressed_size:
                # The traceback of the error would keep the chunks alive.
                chunks.clear()
                raise FrameError(
                    f"compressed frame of {len(view)} bytes inflates past "
                    f"max_decompressed_size={max_decompressed_size}"
                )
            chunks.append(chunk)
            if progress is not None and len(chunk) == _INFLATE_STEP:
                progress()
            offset += len(piece) - len(inflater.unconsumed_tail)
            # A full step may leave output inside zlib even with no input left.
            if offset >= len(view) and len(chunk) < _INFLATE_STEP:
                break
        if not inflater.eof:
            raise FrameError(f"compressed frame of {len(view)} bytes ends inside its zlib stream")
        trailing = len(view) - offset + len(inflater.unused_data)
    if trailing:
        raise FrameError(
            f"compressed frame of {len(data)} bytes has {trailing} bytes after its zlib stream"
        )
    return b"".join(chunks)


def _looks_compressible(payload: Payload) -> bool:
    if isinstance(payload, Pieces):  # sampled in its biggest buffer, which decides
        payload = max(payload.buffers, key=len)
    middle = len(payload) // 2
    start = max(0, middle - _AUTO_SAMPLE_SIZE // 2)
    with memoryview(payload) as view:
        sample = view[start : start + _AUTO_SAMPLE_SIZE]
        if INCOMPRESSIBLE_COMPILED and cannot_shrink(sample, 1 - _AUTO_MIN_SAVING):
            return False  # random or compressed data: zlib's verdict, ~5x sooner
        return _sample_shrinks(sample)


def _sample_shrinks(sample: memoryview) -> bool:
    """zlib's verdict on a sample: it shrinks by `_AUTO_MIN_SAVING` or more."""
    # A raw deflater with a 4 KiB window and small tables sets up ~3x
    # faster than zlib.compress() and rates a 1 KiB sample the same.
    deflater = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, -12, 4)
    packed_size = len(deflater.compress(sample)) + len(deflater.flush())
    return packed_size <= len(sample) * (1 - _AUTO_MIN_SAVING)


def deflate(payload: Payload, compress: FrameMode) -> tuple[Payload, bool]:
    """What to put on the wire for ``payload``, and whether it is compressed.

    ``compress=True`` is RPyC's rule: zlib level 1 for payloads longer than
    `COMPRESSION_THRESHOLD`, except that a payload compression does not
    shrink goes as is. ``"auto"`` also needs a sample from the middle of the
    payload, and then the whole, to shrink by at least 10%; else the payload
    goes as is; an `AutoCompression` is ``"auto"`` that skips the sample
    after a payload it compressed. ``False`` never compresses.
    """
    if not compress or len(payload) <= COMPRESSION_THRESHOLD:
        return payload, False
    memory = compress if type(compress) is AutoCompression else None
    auto = memory is not None or compress == "auto"
    sampled = memory is None or not memory.skip_sample or len(payload) > _AUTO_WHOLE_LIMIT
    if auto and sampled and not _looks_compressible(payload):
        if memory is not None:
            memory.skip_sample = False
        return payload, False
    whole = bytes(payload) if isinstance(payload, Pieces) else payload  # zlib takes one buffer
    packed = zlib.compress(whole, COMPRESSION_LEVEL)
    # Any receiver takes either form, so a frame never grows by compression
    # (a full-size incompressible payload would otherwise exceed the limit).
    keep_below = len(payload) * (1 - _AUTO_MIN_SAVING) if auto else len(payload)
    compressed = len(packed) < keep_below
    if memory is not None:
        memory.skip_sample = compressed
    return (packed, True) if compressed else (payload, False)


def join_small_frames(payloads: Sequence[Payload], compress: FrameMode) -> bytes | None:
    """The frames of `payloads` as one buffer, if every payload is a small
    ``bytes`` (one `encode_frame` would write whole and never compress); else None.

    A reply and the answers to DELs that go along with it are written so:
    one call for all of them, not an `encode_frame` and a list each.
    """
    if not _is_frame_mode(compress):
        return None
    parts: list[bytes] = []
    for payload in payloads:
        if type(payload) is not bytes or len(payload) > COMPRESSION_THRESHOLD:
            return None
        parts.append(_pack_header(len(payload), 0))
        parts.append(payload)
        parts.append(FLUSHER)
    return b"".join(parts)


def encode_frame(
    payload: Payload, compress: FrameMode = False, prefix: bytes = b""
) -> list[BytesLike]:
    """The buffers of one frame carrying ``prefix + payload``, to be written in order.

    A small frame is one joined ``bytes``; a large uncompressed one is header,
    prefix, payload and newline as separate buffers, so the payload is never
    copied (a compressed one is, once, when it has a prefix). The buffers of
    a `Pieces` payload go out as they are unless it is compressed.

    Args:
        payload: a bytes-like object of unsigned bytes (format ``B``), or `Pieces`.
        compress: ``True``, ``False``, ``"auto"`` or an `AutoCompression`, see `deflate`.
        prefix: bytes that go before the payload, inside the (compressed)
            frame payload: the thread ids of `THREAD_IDS` framing.

    Raises:
        ValueError: the (compressed) payload does not fit the 4-byte length.
    """
    if (
        type(payload) is bytes
        and len(payload) <= COMPRESSION_THRESHOLD
        and not prefix
        and _is_frame_mode(compress)
    ):
        # Most frames: small, one buffer, never compressed (one call, not four).
        return [b"".join((_pack_header(len(payload), 0), payload, FLUSHER))]
    mode = compress if isinstance(compress, AutoCompression) else check_compress_mode(compress)
    if prefix and mode and len(prefix) + len(payload) > COMPRESSION_THRESHOLD:
        payload, prefix = prefix + bytes(payload), b""  # zlib takes one buffer
    data, compressed = deflate(payload, mode)
    length = len(prefix) + len(data)
    if length > _MAX_WIRE_LENGTH:
        raise ValueError(
            f"payload of {length} bytes does not fit a frame (at most {_MAX_WIRE_LENGTH} bytes)"
        )
    header = _pack_header(length, compressed)
    if isinstance(data, Pieces):
        return [header, *([prefix] if prefix else []), *data.buffers, FLUSHER]
    if length <= _JOIN_LIMIT:
        return [b"".join((header, prefix, data, FLUSHER))]
    if prefix:
        return [header, prefix, data, FLUSHER]
    return [header, data, FLUSHER]


def check_message(payload: BytesLike, thread_ids: bool = False) -> None:
    """Refuse a payload that is not an rpyc 6 message (PROTOCOL.md section 2).

    Args:
        payload: a frame payload.
        thread_ids: the payload must start with the 16-byte `THREAD_IDS`
            prefix of rpyc's ``bind_threads`` framing, then the message.

    Raises:
        FrameError: saying "RPyC 5.x peer", "bind_threads peer", "no
            thread-id prefix" or "unknown message type", so the operator
            knows what to fix.
    """
    start = _THREAD_IDS_SIZE if thread_ids else 0
    if len(payload) > start and payload[start] in _MESSAGE_TYPES:
        return
    if not payload:
        raise FrameError("unknown message type: empty frame payload")
    first = payload[0]
    if first == _BRINE_TUPLE3:
        raise FrameError(
            "frame payload starts with 0x12 (a brine 3-tuple): an RPyC 5.x peer "
            "(or older); grpyc speaks the rpyc 6 message format only"
        )
    if thread_ids:
        _refuse_without_thread_ids(payload)
    if len(payload) > _THREAD_IDS_SIZE and payload[_THREAD_IDS_SIZE] in _MESSAGE_TYPES:
        raise FrameError(
            "frame payload has a 16-byte thread-id prefix: a bind_threads peer "
            "(rpyc bind_threads=True or RPYC_BIND_THREADS=true); turn bind_threads on "
            "here too, or off on the peer"
        )
    raise FrameError(f"unknown message type {first} in frame payload (expected 1, 2 or 3)")


def _refuse_without_thread_ids(payload: BytesLike) -> None:
    if payload[0] in _MESSAGE_TYPES:
        raise FrameError(
            f"frame payload of {len(payload)} bytes has no 16-byte thread-id prefix before "
            "its message: the peer does not use bind_threads; turn it off here too, or on "
            "the peer"
        )
    if len(payload) <= _THREAD_IDS_SIZE:
        raise FrameError(
            f"frame payload of {len(payload)} bytes is too short for the 16-byte "
            "thread-id prefix and a message"
        )
    raise FrameError(
        f"unknown message type {payload[_THREAD_IDS_SIZE]} after the thread-id prefix "
        "(expected 1, 2 or 3)"
    )


class FrameDecoder:
    """Split a byte stream into frame payloads. Never reads a socket.

    `feed` bytes as they arrive, then call `next_frame` until it returns
    None. Limits are checked from each header before its body is kept.
    After a `FrameError` the decoder stays failed: every later call raises
    the same error, since the stream cannot be resynchronised.

    A reader that can fill a buffer itself may take over a large body with
    `take_body` and hand it back whole with `put_body`; this saves a copy.
    """

    def __init__(
        self,
        max_frame_size: int = MAX_FRAME_SIZE,
        max_decompressed_size: int = MAX_DECOMPRESSED_SIZE,
    ) -> None:
        self.max_frame_size = check_limit("max_frame_size", max_frame_size)
        self.max_decompressed_size = check_limit("max_decompressed_size", max_decompressed_size)
        # Unparsed input is _data[_pos:]; _data is the caller's bytes until
        # a partial frame forces a private bytearray to append to.
        self._data: bytes | bytearray = b""
        self._pos = 0
        self._length = -1  # body length of the current frame; -1 before its header
        self._compressed = False
        self._body: bytes | None = None  # body given back by put_body()
        self._lent = False  # take_body() handed the body out; put_body() not called yet
        self._error: FrameError | None = None
        # Called between steps of inflating a big compressed frame (see `inflate`).
        self.progress: Callable[[], None] | None = None

    def feed(self, data: BytesLike) -> None:
        """Append received bytes (copied if they are not ``bytes``)."""
        if self._lent:
            raise RuntimeError("feed() while a body taken by take_body() is not put back")
        if not data:
            return
        if self._pos >= len(self._data):
            self._data = data if isinstance(data, bytes) else bytes(data)
        elif isinstance(self._data, bytes):
            self._data = bytearray(memoryview(self._data)[self._pos :])
            self._data += data
        else:
            del self._data[: self._pos]
            self._data += data
        self._pos = 0

    def next_frame(self) -> bytes | None:
        """Next whole payload (decompressed), or None until more bytes arrive.

        Raises:
            FrameError: the peer sent an invalid frame.
        """
        if self._length < 0 and self._error is None and type(self._data) is bytes:
            # One step for the common case, a whole uncompressed frame in the
            # buffer: one slice, no view. Anything else takes the full path,
            # which also raises the errors.
            data, start = self._data, self._pos + _HEADER_SIZE
            if len(data) < start:
                return None  # not even a header: what `_next_frame` answers, without its calls
            if len(data) > start:
                length, flag = _unpack_header(data, self._pos)
                end = start + length
                whole = end < len(data) and not flag and length <= self.max_frame_size
                if whole and data[end] == _NEWLINE:
                    self._pos = end + 1
                    if end + 1 == len(data):
                        # An idle connection must not pin the buffer it last read.
                        self._data, self._pos = b"", 0
                    return data[start:end]
        if self._error is not None:
            raise self._error.with_traceback(None)
        try:
            return self._next_frame()
        except FrameError as exc:
            self._keep_error(exc)
            raise

    def _keep_error(self, exc: FrameError) -> None:
        # A copy without the traceback, whose frames may hold big buffers.
        self._error = FrameError(str(exc))
        self._data, self._pos, self._body = b"", 0, None

    def _next_frame(self) -> bytes | None:
        if self._lent:
            return None
        if self._length < 0 and not self._read_header():
            return None
        if self._body is not None:
            return self._finish_put_body()
        available = len(self._data) - self._pos
        if available <= self._length:
            return None
        data, start, end = self._data, self._pos, self._pos + self._length
        _check_trailer(data[end], self._length)
        self._pos, self._length = end + 1, -1
        if self._pos == len(data):
            # Drop the input now: an idle connection must not pin a big frame.
            self._data, self._pos = b"", 0
        with memoryview(data) as view:
            return self._payload(view[start:end])

    def _read_header(self) -> bool:
        if len(self._data) - self._pos < _HEADER_SIZE:
            return False
        self._length, self._compressed = _parse_header(self._data, self._pos, self.max_frame_size)
        self._pos += _HEADER_SIZE
        return True

    def _finish_put_body(self) -> bytes | None:
        if self._pos >= len(self._data):
            return None
        body, self._body = self._body, None
        assert body is not None
        _check_trailer(self._data[self._pos], self._length)
        self._pos += 1
        self._length = -1
        return self._payload(body)

    def _payload(self, body: BytesLike) -> bytes:
        if self._compressed:
            if type(body) is Spliced:
                body = body.whole()
            return inflate(body, self.max_decompressed_size, self.progress)
        return body if type(body) is Spliced else bytes(body)

    def has_frame(self) -> bool:
        """Whether `next_frame` would return a payload or raise without more input."""
        if self._error is not None:
            return True
        if self._lent:
            return False
        available = len(self._data) - self._pos
        if self._body is not None:
            return available > 0
        if self._length >= 0:
            return available > self._length
        if available < _HEADER_SIZE:
            return False
        length, flag = _unpack_header(self._data, self._pos)
        invalid = flag > 1 or length > self.max_frame_size
        return bool(invalid or available > _HEADER_SIZE + length)

    @property
    def body_compressed(self) -> bool:
        """Whether the frame whose header was read last is compressed."""
        return self._compressed

    def take_body(self, min_size: int = 0) -> tuple[memoryview, int] | None:
        """Hand the current frame's body to the caller to read, if worth it.

        Only when its header is buffered (read here if `next_frame` has not),
        its body of at least ``min_size`` bytes has not all arrived, and
        nothing else is buffered. Returns the body bytes already received and
        the full body length; the caller reads the rest and passes the whole
        body to `put_body`.

        Raises:
            FrameError: the header is invalid (`next_frame` raises it again).
        """
        if self._length < 0:  # `Channel.fill` asks right after a read
            if self._error is not None or len(self._data) - self._pos < _HEADER_SIZE:
                return None  # (`next_frame` raises the error)
            try:
                self._read_header()
            except FrameError as exc:
                self._keep_error(exc)
                raise
        if self._lent or self._body is not None or self._length < min_size:
            return None
        available = len(self._data) - self._pos
        if available >= self._length:
            return None
        with memoryview(self._data) as view:
            prefix = view[self._pos :]
        self._data, self._pos = b"", 0
        self._lent = True
        return prefix, self._length

    def put_body(self, body: bytes) -> None:
        """Give back the whole body of the frame whose body `take_body` handed out."""
        if not self._lent:
            raise RuntimeError("put_body() without a body taken by take_body()")
        size = len(body) + len(body.value) if type(body) is Spliced else len(body)
        if size != self._length:
            raise ValueError(f"put_body() got {size} bytes, the frame body has {self._length}")
        self._body = body
        self._lent = False
