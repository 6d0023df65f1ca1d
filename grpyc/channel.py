"""Frames over a stream: the connection's channel (PROTOCOL.md section 1).

`Channel` runs the sans-I/O frame codec of `grpyc.framing` over a
`grpyc.stream.Stream`: it reads into the decoder, hands out checked
payloads, and writes encoded frames. It is not locked: one reader greenlet
calls `recv` and one writer at a time calls `send`.

The codec's names (`encode_frame`, `FrameDecoder`, `FrameError`, ...) are
re-exported here, where earlier versions defined them. Messages (what a
payload means) belong to `protocol`; bytes on the wire to `stream`.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from grpyc._streambase import NOTHING_PENDING
from grpyc.brine import SEPARATE_SIZE, big_value_at
from grpyc.consts import STREAM_CHUNK
from grpyc.framing import (
    COMPRESSION_LEVEL,
    COMPRESSION_THRESHOLD,
    FLUSHER,
    FRAME_HEADER,
    MAX_DECOMPRESSED_SIZE,
    MAX_FRAME_SIZE,
    THREAD_IDS,
    AutoCompression,
    BytesLike,
    CompressMode,
    FrameDecoder,
    FrameError,
    FrameMode,
    Payload,
    Spliced,
    check_compress_mode,
    check_limit,
    check_message,
    deflate,
    encode_frame,
    inflate,
    join_small_frames,
)

if TYPE_CHECKING:
    from grpyc.stream import Stream

__all__ = [
    "COMPRESSION_LEVEL",
    "COMPRESSION_THRESHOLD",
    "MAX_DECOMPRESSED_SIZE",
    "MAX_FRAME_SIZE",
    "Channel",
    "FrameDecoder",
    "FrameError",
    "check_message",
    "deflate",
    "encode_frame",
    "inflate",
]

ThreadIds = tuple[int, int]

# One read syscall asks for this much, so several small frames arrive at once.
# Below glibc's default mmap threshold (128 KiB): recv() allocates its whole
# size before shrinking to what came, and a 256 KiB ask cost an mmap, mremap
# and munmap per frame whenever the allocator's threshold had not risen
# (measured: 61 -> 94 us per in-process round trip).
_READ_SIZE = 64 * 1024
# A small frame comes alone most of the time (a call, its answer): a read of
# at most this much is served by CPython's small-object allocator instead of
# a 64 KiB malloc shrunk by realloc (~2 % of a round trip's L1i misses). A
# read that fills it means more is coming: the next ask is `_READ_SIZE`.
_SMALL_READ = 448
# A body at least this large that is not all buffered is read straight
# into its final bytes object instead of being assembled from chunks.
_LARGE_BODY = STREAM_CHUNK

# One block of this size, allocated and freed once per process (the first
# `Channel`), raises glibc malloc's dynamic mmap threshold to it and its trim
# threshold to twice it, as glibc does by itself after the first big block a
# program frees. Before that, a process whose heap top held zlib's buffers
# (~260 KiB a deflate, in 64 KiB blocks) gave them back to the kernel after
# every compressed frame and faulted them in again: ~50 page faults a frame,
# an echo of 30 KB of text 0.7x as fast, depending on the heap's layout at
# start. Elsewhere it is a block allocated and freed.
_MALLOC_SETTLING_BLOCK = 1024 * 1024
_malloc_settled = False


def _settle_malloc_thresholds() -> None:
    global _malloc_settled
    if not _malloc_settled:
        _malloc_settled = True
        block = bytes(_MALLOC_SETTLING_BLOCK)  # calloc'd: its pages are never touched
        del block


class _PrefixedReader(io.RawIOBase):
    """Raw reader serving ``prefix`` first, then the stream (see `_read_body`)."""

    def __init__(self, prefix: memoryview, stream: Stream) -> None:
        super().__init__()
        self._prefix = prefix
        # A stream of another make may have only `read_into`.
        self._read_rest = getattr(stream, "read_body_into", stream.read_into)

    def readable(self) -> bool:
        return True

    # BufferedReader always passes a writable memoryview, narrower than Buffer.
    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        read: int = self._read_rest(buffer)
        return read


def _read_body(stream: Stream, prefix: memoryview, length: int) -> bytes:
    # io.BufferedReader.read(n) allocates the result bytes and fills it in
    # place through readinto(); with a 1-byte buffer it reads straight into
    # it. So the body reaches its final bytes object in one copy from the
    # kernel, where assembling a bytearray and converting would take two.
    with io.BufferedReader(_PrefixedReader(prefix, stream), 1) as reader:
        body = reader.read(length)
    if len(body) != length:
        raise EOFError(f"stream ended after {len(body)} of {length} frame body bytes")
    return body


class _DecoderLimit:
    """A limit of the channel's frame decoder, checked when set."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, channel: Channel | None, owner: type | None = None) -> Any:
        if channel is None:
            return self
        return getattr(channel._decoder, self._name)

    def __set__(self, channel: Channel, value: int) -> None:
        setattr(channel._decoder, self._name, check_limit(self._name, value))


class Channel:
    """Frames over a stream: RPyC-compatible ``send``/``recv``/``poll``/``close``.

    Differences from RPyC: ``compress`` defaults to ``"auto"`` (compress only
    what shrinks) instead of ``True``, and received frames are checked
    against ``max_frame_size``, ``max_decompressed_size`` and the message
    type (`check_message`). A received protocol error closes the stream.

    With ``thread_ids`` on, each payload carries the 16-byte thread-id prefix
    of rpyc's ``bind_threads`` framing (`grpyc.framing.THREAD_IDS`): `send`
    and `send_many` take the ids to put there, `recv_with_ids` returns them,
    `recv` drops them. A payload without the prefix is refused.

    Args:
        stream: a `grpyc.stream.Stream` (it needs ``read_some``, ``read_into``
            and ``write_buffers`` besides RPyC's stream methods; it may
            have ``read_body_into``).
        compress: ``True``, ``False`` or ``"auto"``; may be changed at any time.
        max_frame_size: largest frame accepted, in bytes on the wire.
        max_decompressed_size: largest payload a compressed frame may inflate to.
        thread_ids: speak ``bind_threads`` framing; may be changed at any time.

    Attributes:
        splice_values: set by a connection that decodes what `next_buffered`
            returns with `grpyc.messages.decode_measured`: a big frame may
            then come as `grpyc.framing.Spliced`, its big bytes or str value
            read into a buffer of its own (see `_read_large_body`). `recv`
            always returns payloads whole.
        read_since_write: bytes were read (`fill`) since this side last wrote.
        ack_owed: of them, a frame this side answers later or never
            (`owe_ack`): a reader calls `ack_now` before it waits.
    """

    COMPRESSION_THRESHOLD = COMPRESSION_THRESHOLD
    COMPRESSION_LEVEL = COMPRESSION_LEVEL
    FRAME_HEADER = FRAME_HEADER
    FLUSHER = FLUSHER

    def __init__(
        self,
        stream: Stream,
        compress: CompressMode = "auto",
        max_frame_size: int = MAX_FRAME_SIZE,
        max_decompressed_size: int = MAX_DECOMPRESSED_SIZE,
        thread_ids: bool = False,
    ) -> None:
        _settle_malloc_thresholds()
        self.stream = stream
        # Whether bytes wait above the descriptor (TLS buffers), so `fill` will
        # not wait: the stream's own `has_pending` (a C callable on a socket
        # stream), with no frame around it: it runs three times a call.
        self.has_pending_input: Callable[[], int] = (
            getattr(stream, "has_pending", None) or NOTHING_PENDING
        )
        self.compress = compress
        self.thread_ids = thread_ids
        self.last_thread_ids: tuple[int, int] = (0, 0)
        self.splice_values = False
        self._decoder = FrameDecoder(max_frame_size, max_decompressed_size)
        self._read_size = _SMALL_READ  # what `fill` asks the stream for next
        # Whether `next_buffered` would return a payload (or raise) without
        # reading: the decoder's method itself, with no frame around it (it
        # runs five times a call on each side).
        self.has_buffered_frame: Callable[[], bool] = self._decoder.has_frame
        # Bytes were read since this side last wrote; and of them, a frame
        # this side answers later or never (`owe_ack`).
        self.read_since_write = False
        self.ack_owed = False

    @property
    def compress(self) -> CompressMode:
        """``True``, ``False`` or ``"auto"`` (see `deflate`)."""
        return self._compress

    @compress.setter
    def compress(self, value: CompressMode) -> None:
        self._compress = check_compress_mode(value)
        # What `encode_frame` gets: "auto" with the memory of this channel's frames.
        self._frame_mode: FrameMode = AutoCompression() if value == "auto" else self._compress

    max_frame_size = _DecoderLimit("max_frame_size")
    max_decompressed_size = _DecoderLimit("max_decompressed_size")

    @property
    def closed(self) -> bool:
        return self.stream.closed

    def close(self) -> None:
        """Close the underlying stream."""
        self.stream.close()

    def fileno(self) -> int:
        return self.stream.fileno()

    def poll(self, timeout: float | None) -> bool:
        """Whether a frame is buffered or the stream has data within ``timeout`` seconds."""
        return self._decoder.has_frame() or self.stream.poll(timeout)

    def _encode(self, payload: Payload, ids: ThreadIds | None) -> list[BytesLike]:
        if not self.thread_ids:
            if ids is not None:
                raise ValueError("ids given to a channel without thread_ids framing")
            return encode_frame(payload, self._frame_mode)
        if ids is None:
            ids = getattr(payload, "thread_ids", None)  # a ThreadFrame addresses itself
        return encode_frame(payload, self._frame_mode, _pack_thread_ids(ids))

    def send(self, data: Payload, ids: ThreadIds | None = None) -> None:
        """Send ``data`` as one frame.

        Args:
            data: the payload.
            ids: with ``thread_ids`` on, and only then: ``(sender, recipient)``,
                the thread ids to put before the payload.

        Raises:
            EOFError: the stream is closed or broke while writing.
            ValueError: ``ids`` missing, out of range, or given without
                ``thread_ids``.
        """
        self.read_since_write = self.ack_owed = False  # a write acknowledges what came
        if ids is None and not self.thread_ids:  # `_encode` inlined: once per frame sent
            buffers = encode_frame(data, self._frame_mode)
            if len(buffers) == 1:
                self.stream.write(buffers[0])
            else:
                self.stream.write_buffers(buffers)
        else:
            self.stream.write_buffers(self._encode(data, ids))

    def send_many(
        self, payloads: Sequence[Payload], ids: Sequence[ThreadIds] | None = None
    ) -> None:
        """Send each payload as one frame, in order, in as few writes as possible.

        Runs of small frames are joined into one buffer; large payloads are
        not copied. With ``thread_ids`` on, ``ids[i]`` are the ids of
        ``payloads[i]`` (see `send`).

        Raises:
            EOFError: the stream is closed or broke while writing.
            ValueError: as `send`, or ``ids`` is not as long as ``payloads``.
        """
        self.read_since_write = self.ack_owed = False
        if ids is None and not self.thread_ids:
            joined = join_small_frames(payloads, self._frame_mode)
            if joined is not None:  # the usual batch: a few small frames
                self.stream.write(joined)
                return
        elif ids is not None and len(ids) != len(payloads):
            raise ValueError(f"{len(ids)} ids for {len(payloads)} payloads")
        buffers: list[BytesLike] = []
        small: list[BytesLike] = []
        for index, payload in enumerate(payloads):
            frame = self._encode(payload, None if ids is None else ids[index])
            if len(frame) == 1:
                small.extend(frame)
                continue
            if small:
                buffers.append(b"".join(small))
                small = []
            buffers.extend(frame)
        if small:
            buffers.append(b"".join(small))
        self.stream.write_buffers(buffers)

    def recv(self) -> bytes:
        """Receive the next frame's payload (without thread ids), blocking until it is complete.

        Raises:
            EOFError: the stream ended or is closed.
            FrameError: the peer sent an invalid frame or an older message
                format; the stream is closed.
        """
        payload = self._next_checked()
        if type(payload) is Spliced:
            return payload.whole()
        return payload[THREAD_IDS.size :] if self.thread_ids else payload

    def recv_with_ids(self) -> tuple[bytes, int, int]:
        """`recv`, and the ``(sender, recipient)`` thread ids the payload carried.

        Both ids are 0 (rpyc's "no thread") when ``thread_ids`` is off.
        """
        payload = self._next_checked()
        if not self.thread_ids:
            return payload, 0, 0
        sender, recipient = THREAD_IDS.unpack_from(payload)
        return payload[THREAD_IDS.size :], sender, recipient

    def _next_checked(self) -> bytes:
        payload = self._closing_on_error(self._next_payload)
        assert payload is not None
        return payload

    def _closing_on_error(self, get: Callable[[], bytes | None]) -> bytes | None:
        """``get()``, its payload checked; an invalid frame closes the stream (and raises)."""
        try:
            payload = get()
            if payload is not None:
                check_message(payload, self.thread_ids)
        except FrameError:
            self.stream.close()
            raise
        return payload

    def _next_payload(self) -> bytes:
        while True:
            payload = self._decoder.next_frame()
            if payload is not None:
                return payload
            self.fill()

    def next_buffered(self) -> bytes | None:
        """The next frame's payload if it is already buffered, else None; never reads.

        Raises:
            FrameError: the peer sent an invalid frame or an older message
                format; the stream is closed.
        """
        # `_closing_on_error` inlined: this runs twice per call on each side.
        try:
            frame = self._decoder.next_frame()
            if frame is None:
                return None
            check_message(frame, self.thread_ids)
        except FrameError:
            self.stream.close()
            raise
        if not self.thread_ids:
            return frame
        # The ids of the frame handed out last, for the code handling it.
        self.last_thread_ids = THREAD_IDS.unpack_from(frame)
        return frame[THREAD_IDS.size :]

    def next_buffered_with_ids(self) -> tuple[bytes, int, int] | None:
        """`next_buffered`, and the ``(sender, recipient)`` thread ids it carried (0s when off)."""
        frame = self._next_buffered_frame()
        if frame is None:
            return None
        if not self.thread_ids:
            return frame, 0, 0
        sender, recipient = THREAD_IDS.unpack_from(frame)
        return frame[THREAD_IDS.size :], sender, recipient

    def _next_buffered_frame(self) -> bytes | None:
        return self._closing_on_error(self._decoder.next_frame)

    def fill(self) -> None:
        """Read what the stream has (at least one byte) into the frame buffer.

        Meant for a reader that waited until the stream is readable; a large
        frame body is read whole, straight into its final buffer.

        Raises:
            EOFError: the stream ended or is closed.
            FrameError: the peer sent an invalid frame; the stream is closed.
        """
        # `_closing_on_error` inlined: this runs once a call on each side.
        decoder = self._decoder
        self.read_since_write = True
        try:
            lent = decoder.take_body(_LARGE_BODY)
            if lent is None:
                asked = self._read_size
                data = self.stream.read_some(asked)
                decoder.feed(data)
                if len(data) < _SMALL_READ:
                    self._read_size = _SMALL_READ
                    return
                self._read_size = _READ_SIZE
                if len(data) < asked:
                    return
                # The read took all it asked for: more is there. A big body
                # behind the header is read now, not after a trip through the
                # hub for the readable event (one of three per big frame).
                lent = decoder.take_body(_LARGE_BODY)
                if lent is None:
                    if asked == _SMALL_READ:
                        # A frame a little bigger than a small read (a ping, a
                        # traceback): its rest came with it. Read it now, not
                        # after another wait (a hub turn or a poll each side).
                        decoder.feed(self.stream.read_ready(_READ_SIZE))
                    return
            decoder.put_body(self._read_large_body(*lent))
            # The frame's trailing newline came with its body: take it, and
            # whatever followed, without waiting for another readable event.
            rest = self.stream.read_ready(_READ_SIZE)
            self._read_size = _READ_SIZE if len(rest) >= _SMALL_READ else _SMALL_READ
            if rest:
                decoder.feed(rest)
        except FrameError:
            self.stream.close()
            raise

    def owe_ack(self) -> None:
        """A frame just read is answered later (a DEL's answer rides with our
        next frame) or never (an answer to our DEL): until this side writes,
        `ack_owed` says a reader should call `ack_now` before it waits.

        A peer with Nagle's algorithm on (stock RPyC's sockets) holds a small
        frame until the one before it is acknowledged, and the kernel delays
        the acknowledgement for a frame of ours to ride on. A stock client
        calling ``conn.root.echo(x)`` waited for our deferred answer to its
        DEL (`grpyc._writer.DEFERRED_FLUSH_DELAY`): 20.9 ms a call, 0.16
        between stock peers. A grpyc client of a stock server waited for the
        kernel's 40 ms timer, its reply held behind the answer to its DEL:
        44 ms a call.
        """
        if self.read_since_write:  # else our write acknowledged it already
            self.ack_owed = True

    def ack_now(self) -> bool:
        """Have what was read acknowledged now (`Stream.ack_now`), not with our
        next write; False if the stream cannot, and only a frame written will."""
        self.ack_owed = False
        ack_now = getattr(self.stream, "ack_now", None)
        return True if ack_now is None else bool(ack_now())

    def set_progress(self, progress: Callable[[], None] | None) -> None:
        """Have `progress()` called between steps of inflating a big compressed
        frame (the gevent runtime yields there, so other connections run)."""
        self._decoder.progress = progress

    def _read_large_body(self, prefix: memoryview, length: int) -> bytes:
        """The rest of a big frame body, read straight into its final buffer(s).

        With `splice_values` on, a big bytes or str value in an uncompressed
        message gets a buffer of its own (`Spliced`): the decoder makes it the
        value, so a 16 MiB argument costs one 16 MiB allocation, not two.
        Freeing two big buffers at once made malloc hand the memory back to
        the kernel after every message, and fault it in again for the next.
        """
        cut = None
        if self.splice_values and not self.thread_ids and not self._decoder.body_compressed:
            cut = big_value_at(prefix, length, SEPARATE_SIZE)
        if cut is None:
            return _read_body(self.stream, prefix, length)
        at, size = cut
        value = _read_body(self.stream, prefix[at:], size)
        rest_size = length - at - size
        rest = _read_body(self.stream, prefix[:0], rest_size) if rest_size else b""
        return Spliced(bytes(prefix[:at]) + rest, at, value)


def _pack_thread_ids(ids: ThreadIds | None) -> bytes:
    if ids is None:
        raise ValueError("a channel with thread_ids framing needs ids=(sender, recipient)")
    try:
        return THREAD_IDS.pack(*ids)
    except struct.error as exc:
        raise ValueError(f"thread ids {ids!r} are not two ints in 0..2**64-1: {exc}") from None
