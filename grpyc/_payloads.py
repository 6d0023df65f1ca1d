"""What a frame payload is, for the sender and the receiver (`grpyc.framing` re-exports).

One buffer (`BytesLike`); a message held as several buffers (`Pieces`); a
received payload with its one big value held apart (`Spliced`); a payload
that carries its ``bind_threads`` ids (`ThreadFrame`).
"""

from __future__ import annotations

__all__ = ["BytesLike", "Payload", "Pieces", "Spliced", "ThreadFrame"]

BytesLike = bytes | bytearray | memoryview


class ThreadFrame(bytes):
    """A payload that carries its ``bind_threads`` ids, ``(sender, recipient)``.

    A channel with ``thread_ids`` framing puts them before the payload when
    it is sent without explicit ids, so the code that makes a message can
    address it while the code that writes frames stays unaware of threads.
    """

    thread_ids: tuple[int, int]

    def __new__(cls, payload: Payload, thread_ids: tuple[int, int]) -> ThreadFrame:
        frame = super().__new__(cls, payload)
        frame.thread_ids = thread_ids
        return frame


class Pieces:
    """One frame payload held as several buffers, written in order and never joined.

    A message with a big bytes or str value is encoded this way
    (`grpyc.brine.dump_pieces`), so the value goes to the socket as it is.
    ``len()`` is the payload's size; ``bytes()`` joins it (a copy).
    """

    __slots__ = ("buffers", "size")

    def __init__(self, buffers: list[bytes]) -> None:
        self.buffers = buffers
        self.size = sum(map(len, buffers))

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.buffers)

    def __repr__(self) -> str:
        return f"Pieces({len(self.buffers)} buffers, {self.size} bytes)"


class Spliced(bytes):
    """A received payload without the bytes of its one big value, held apart.

    ``whole()`` is the payload as sent. The bytes at offset ``at`` are left
    out and held in ``value``, read into a buffer of their own; a decoder
    that gets them there uses that buffer as the value (no copy, no second
    big allocation: `grpyc.brine.load_measured`'s ``splice``).
    """

    at: int
    value: bytes

    def __new__(cls, rest: bytes, at: int, value: bytes) -> Spliced:
        payload = super().__new__(cls, rest)
        payload.at = at
        payload.value = value
        return payload

    def whole(self) -> bytes:
        return self[: self.at] + self.value + self[self.at :]


# What a sender hands to a channel: one buffer, or a message in pieces.
Payload = BytesLike | Pieces
