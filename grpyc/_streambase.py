"""The base of grpyc's byte streams and the waits they share (`grpyc.stream` re-exports).

`Stream` is RPyC's stream API plus buffer helpers; `wait_readable` waits for
a descriptor in the gevent hub (cooperative streams) or in poll() (plain
ones). Nothing here knows frames.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Sequence
from typing import Any, Self

import gevent
import gevent.monkey
import gevent.socket as gsocket
from gevent._hub_local import get_hub_if_exists
from gevent.monkey import get_original

from grpyc.consts import STREAM_CHUNK

__all__ = ["BytesLike", "Stream", "in_gevent", "wait_readable", "write_vectored"]

BytesLike = bytes | bytearray | memoryview

# A readiness check that never blocks and, unlike select(), takes
# descriptors above 1023.
_original_poll = get_original("select", "poll")

# IOV_MAX on Linux and macOS: the most buffers one sendmsg()/writev() takes.
_MAX_VECTORS = 1024


def in_gevent() -> bool:
    """Whether code in this thread runs under gevent: monkey patched, or its hub exists.

    A connection made where this is False belongs to plain OS threads: it
    uses blocking sockets and is read by whichever thread waits on it, as in
    RPyC (DESIGN.md, "Callers outside gevent"). grpyc never creates a hub in
    such a thread itself, so the answer stays the same for the thread's life
    unless the program starts using gevent there.
    """
    return gevent.monkey.is_module_patched("socket") or get_hub_if_exists() is not None


def wait_readable(fd: int, timeout: float | None, cooperative: bool = True) -> bool:
    """Whether `fd` is readable (or at its end) within `timeout` seconds (None: forever)."""
    poller = _original_poll()
    poller.register(fd, select.POLLIN)
    # Any event counts: POLLHUP, POLLERR or POLLNVAL mean the next read
    # reports the end of the stream, which is an answer too.
    if poller.poll(0):
        return True
    if timeout is not None and timeout <= 0:
        if cooperative:
            gevent.sleep(0)  # a poll(0) loop must still let other greenlets run
        return False
    if not cooperative:
        return _poll_plain(poller, timeout)
    try:
        gsocket.wait_read(fd, timeout)
    except TimeoutError:
        return False
    return True


def _poll_plain(poller: Any, timeout: float | None) -> bool:
    """Block this OS thread in poll() until an event or `timeout` seconds."""
    millis = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return bool(poller.poll(millis))


# `Stream.has_pending` of a stream that never holds input above its
# descriptor: a C callable answering False (no Python frame on every wait).
NOTHING_PENDING: Callable[[], int] = False.__bool__


class Stream:
    """Base of grpyc streams: RPyC's stream API plus buffer helpers.

    Subclasses implement `closed`, `close`, `fileno`, `read_some`, `write`
    and, when they can do better than the defaults, `read_into` and
    `write_buffers`.
    """

    MAX_IO_CHUNK = STREAM_CHUNK

    _closed = False
    # Set (as an attribute, not a method) by streams that may hold input
    # above their descriptor (TLS): whether bytes wait there, so a read will
    # not wait. `Channel.has_pending_input` asks it when present.
    has_pending: Callable[[], int]
    # How errors name what broke ("connection closed by peer").
    _KIND = "connection"

    @property
    def closed(self) -> bool:
        """Whether the stream is closed. RPyC-compatible."""
        return self._closed

    def _broken(self, exc: OSError) -> EOFError:
        self.close()
        return EOFError(f"{self._KIND} broken: {exc}")

    def _read_retrying(
        self, read: Callable[[], Any], retry: type[BaseException], wait: Callable[[], None]
    ) -> Any:
        """``read()`` until it returns something: `wait` after a `retry` error; empty means EOF.

        Raises:
            EOFError: the stream is closed, broke, or ended.
        """
        while True:
            if self._closed:
                raise EOFError("stream has been closed")
            try:
                result = read()
            except retry:
                wait()
                continue
            except OSError as exc:
                raise self._broken(exc) from exc
            if not result:
                self.close()
                raise EOFError(f"{self._KIND} closed by peer")
            return result

    def _mark_closed(self) -> bool:
        """Mark the stream closed; False if it already was (close is idempotent)."""
        if self._closed:
            return False
        self._closed = True
        return True

    def close(self) -> None:
        """Close the stream, releasing its resources. RPyC-compatible."""
        raise NotImplementedError

    def fileno(self) -> int:
        """The descriptor to poll for reading. RPyC-compatible.

        Raises:
            EOFError: the stream is closed.
        """
        raise NotImplementedError

    def read_some(self, max_count: int) -> bytes:
        """Between 1 and ``max_count`` bytes, waiting for at least one.

        Raises:
            EOFError: the stream ended or is closed.
        """
        raise NotImplementedError

    def read_ready(self, max_count: int) -> bytes:
        """Up to ``max_count`` bytes that are there now; ``b""`` if none. Never waits.

        A shortcut for a reader that expects more (a big frame's trailing
        newline): ``b""`` is always a correct answer, and it is this default's.
        An error or the stream's end is left to the next `read_some`.
        """
        return b""

    def read_into(self, buffer: memoryview) -> int:
        """Fill the start of ``buffer`` with at least one byte; return the count.

        Raises:
            EOFError: the stream ended or is closed.
        """
        data = self.read_some(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read_body_into(self, buffer: memoryview) -> int:
        """`read_into`, for a buffer the peer is bound to fill: the rest of a frame body.

        A stream may wait until a good share of the buffer has arrived, where
        `read_into` returns as soon as one byte is there; either way it
        returns at least one byte. Only a reader that knows the peer sends at
        least ``len(buffer)`` more bytes may call it.
        """
        return self.read_into(buffer)

    def ack_now(self) -> bool:
        """Acknowledge what has arrived now, not with the next bytes written.

        Returns False when a transport with delayed acknowledgements cannot
        be told to (then only a write acknowledges); True otherwise. Streams
        without acknowledgements (pipes, Unix sockets) have nothing to do.
        """
        return True

    def read(self, count: int) -> bytes:
        """Exactly ``count`` bytes. RPyC-compatible.

        Raises:
            EOFError: the stream ended first or is closed.
        """
        chunks = []
        while count > 0:
            chunk = self.read_some(min(count, self.MAX_IO_CHUNK))
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def write(self, data: BytesLike) -> None:
        """Write all of ``data``. RPyC-compatible.

        Raises:
            EOFError: the stream broke or is closed.
        """
        raise NotImplementedError

    def write_buffers(self, buffers: Sequence[BytesLike]) -> None:
        """Write the buffers in order, as if joined, without joining them."""
        for data in buffers:
            self.write(data)

    def poll(self, timeout: float | None) -> bool:
        """Whether data (or the end of the stream) is readable within ``timeout`` s.

        ``None`` waits forever. RPyC-compatible.

        Raises:
            EOFError: the stream is closed.
        """
        return wait_readable(self.fileno(), timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_vectored(write: Callable[[list[memoryview]], int], buffers: Sequence[BytesLike]) -> None:
    """Write all `buffers` with a vectored `write` that may write only part of them."""
    views = [memoryview(data) for data in buffers if len(data)]
    index = 0
    while index < len(views):
        sent = write(views[index : index + _MAX_VECTORS])
        while sent:
            head = views[index]
            if sent < len(head):
                views[index] = head[sent:]
                break
            sent -= len(head)
            index += 1
