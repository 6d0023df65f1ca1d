"""`PipeStream`: a stream over two one-way pipes (`grpyc.stream` re-exports it).

Descriptors are switched to non-blocking mode while the stream is open; in
cooperative mode the gevent hub waits for them, in plain mode poll() does,
with a wake-up pipe so that `close` from another thread ends a wait.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Callable, Sequence
from typing import Any, Self

import gevent
from gevent.monkey import get_original

from grpyc._streambase import BytesLike, Stream, in_gevent, wait_readable, write_vectored

__all__ = ["PipeStream"]

_original_poll = get_original("select", "poll")

# libev/libuv event masks for io watchers.
_READ = 1
_WRITE = 2


def _nonblocking_pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


def _fd_of(pipe: Any) -> int:
    return pipe if isinstance(pipe, int) else int(pipe.fileno())


class PipeStream(Stream):
    """A stream over two one-way pipes, one read and one written. RPyC-compatible.

    ``incoming`` and ``outgoing`` are file objects or descriptors; the
    stream owns and closes them. Their descriptors are switched to
    non-blocking mode while the stream is open (the hub, or in plain mode
    poll(), waits for them), and switched back when it closes. POSIX only.
    """

    _KIND = "pipe"

    def __init__(self, incoming: Any, outgoing: Any) -> None:
        flush = getattr(outgoing, "flush", None)
        if flush is not None:
            flush()
        self.incoming = incoming
        self.outgoing = outgoing
        self._in_fd = _fd_of(incoming)
        self._out_fd = _fd_of(outgoing)
        self._blocking = {fd: os.get_blocking(fd) for fd in (self._in_fd, self._out_fd)}
        for fd in self._blocking:
            os.set_blocking(fd, False)
        self._closed = False
        self.cooperative = in_gevent()
        self._hub: Any = None
        self._watchers: dict[int, Any] = {}
        # Plain mode: a thread blocked in poll() is woken through this pipe on close.
        self._wake: tuple[int, int] | None = None if self.cooperative else _nonblocking_pipe()

    @classmethod
    def from_std(cls) -> Self:
        """A stream over this process's stdin and stdout. RPyC-compatible.

        The stream takes copies of descriptors 0 and 1, which then point to
        the null device, so stray prints (from Python or C) cannot corrupt
        the frames.
        """
        if sys.stdout is not None:
            sys.stdout.flush()
        incoming = os.fdopen(os.dup(0), "rb", buffering=0)
        outgoing = os.fdopen(os.dup(1), "wb", buffering=0)
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
        finally:
            os.close(devnull)
        return cls(incoming, outgoing)

    @classmethod
    def create_pair(cls) -> tuple[Self, Self]:
        """Two streams connected by a pair of new pipes. RPyC-compatible."""
        read1, write1 = os.pipe()
        read2, write2 = os.pipe()
        side1 = cls(os.fdopen(read1, "rb", buffering=0), os.fdopen(write2, "wb", buffering=0))
        side2 = cls(os.fdopen(read2, "rb", buffering=0), os.fdopen(write1, "wb", buffering=0))
        return side1, side2

    def close(self) -> None:
        if not self._mark_closed():
            return
        watchers = list(self._watchers.values())
        self._watchers.clear()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
        if self._hub is None:
            self._close_pipes()
            return
        # Like gevent's sockets: throw into a waiting greenlet first and
        # close the descriptors only after it has left the hub's wait.
        error = EOFError("stream has been closed")
        self._hub.cancel_waits_close_and_then(watchers, error, self._close_pipes)

    def _close_pipes(self) -> None:
        for fd, blocking in self._blocking.items():
            # OSError: the descriptor is already closed; no mode to restore.
            with contextlib.suppress(OSError):
                os.set_blocking(fd, blocking)
        for pipe in (self.incoming, self.outgoing):
            if isinstance(pipe, int):
                os.close(pipe)
            else:
                pipe.close()
            if self.outgoing is self.incoming:
                break
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)

    def fileno(self) -> int:
        if self._closed:
            raise EOFError("stream has been closed")
        return self._in_fd

    def _wait(self, fd: int, event: int) -> None:
        if self._wake is not None:
            self._wait_plain(fd, event)
            return
        if self._hub is None:
            self._hub = gevent.get_hub()
        watcher = self._watchers.get(event)
        if watcher is None:
            watcher = self._watchers[event] = self._hub.loop.io(fd, event)
        self._hub.wait(watcher)

    def _wait_plain(self, fd: int, event: int) -> None:
        assert self._wake is not None
        poller = _original_poll()
        poller.register(fd, select.POLLIN if event == _READ else select.POLLOUT)
        poller.register(self._wake[0], select.POLLIN)
        poller.poll()

    def poll(self, timeout: float | None) -> bool:
        return wait_readable(self.fileno(), timeout, self.cooperative)

    def _read_with(self, read: Callable[[], Any]) -> Any:
        return self._read_retrying(read, BlockingIOError, self._wait_readable)

    def _wait_readable(self) -> None:
        self._wait(self._in_fd, _READ)

    def read_some(self, max_count: int) -> bytes:
        data: bytes = self._read_with(lambda: os.read(self._in_fd, max_count))
        return data

    def read_into(self, buffer: memoryview) -> int:
        count: int = self._read_with(lambda: os.readv(self._in_fd, [buffer]))
        return count

    def _writev(self, views: list[memoryview]) -> int:
        while True:
            try:
                return os.writev(self._out_fd, views)
            except BlockingIOError:
                self._wait(self._out_fd, _WRITE)

    def write(self, data: BytesLike) -> None:
        self.write_buffers([data])

    def write_buffers(self, buffers: Sequence[BytesLike]) -> None:
        if self._closed:
            raise EOFError("stream has been closed")
        try:
            write_vectored(self._writev, buffers)
        except OSError as exc:
            raise self._broken(exc) from exc
