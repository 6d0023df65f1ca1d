"""Fuzz targets: one function per receiving layer, each taking raw bytes.

Each target raises only when it finds a bug: any exception other than the
layer's own "invalid input" error, a broken invariant (an assertion), or an
error that reaches the gevent hub. The targets import nothing from a fuzzer,
so the test suite runs them on their seeds (tests/hostile/test_fuzz.py) and
`fuzz.run` drives them with atheris.

Targets:

- ``brine``: `grpyc.brine.load_measured` with small limits and a progress
  hook; a value it returns must dump and load again, its estimate stay
  within the limit and within what the input's length pays for.
- ``frames``: `grpyc.channel.FrameDecoder` fed in chunks the input chooses,
  with small limits; only `FrameError`.
- ``message``: `grpyc.protocol.decode_message`; only `ProtocolError`.
- ``dispatch``: a live server `Connection` over a socketpair, fed the input
  as one message; it must answer a ping afterwards or have closed. The
  brine str ``"@root"`` in the input stands for the root's id pack (which
  differs from run to run), so inputs can reach the root's methods.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import gevent
from gevent import socket

from grpyc import brine, consts
from grpyc.channel import Channel
from grpyc.framing import FrameDecoder, FrameError
from grpyc.messages import ProtocolError, decode_message
from grpyc.service import Service
from grpyc.stream import SocketStream

__all__ = ["SEEDS", "TARGETS", "fuzz_brine", "fuzz_dispatch", "fuzz_frames", "fuzz_message"]


# Most bytes of objects one input byte can decode to: nested one-item
# frozensets cost 216 bytes per two bytes (0x1a 0x10), plus a slot.
_MAX_BYTES_PER_INPUT_BYTE = 112
_FUZZ_DECODED_SIZE = 64 * 1024


def fuzz_brine(data: bytes) -> None:
    try:
        value, size = brine.load_measured(
            data,
            max_depth=64,
            max_decoded_size=_FUZZ_DECODED_SIZE,
            max_frozenset_items=64,
            progress=lambda: None,
        )
    except brine.BrineError:
        return
    assert 0 <= size <= _FUZZ_DECODED_SIZE, size
    assert size <= _MAX_BYTES_PER_INPUT_BYTE * len(data), (size, len(data))
    try:
        encoded = brine.dump(value)
    except ValueError:
        return  # an int past the str-conversion limit loads but does not dump
    assert brine.dump(brine.load(data, max_depth=64, max_frozenset_items=64)) == encoded
    brine.load(encoded, max_depth=64)


def fuzz_frames(data: bytes) -> None:
    if not data:
        return
    decoder = FrameDecoder(max_frame_size=4096, max_decompressed_size=8192)
    # The first byte picks the chunk size: splits at every boundary get tried.
    step = data[0] % 64 + 1
    body = data[1:]
    try:
        for start in range(0, len(body), step):
            decoder.feed(body[start : start + step])
            while (payload := decoder.next_frame()) is not None:
                assert len(payload) <= 8192
    except FrameError:
        return


def fuzz_message(data: bytes) -> None:
    try:
        msg, seq, _ = decode_message(data, 64)
    except ProtocolError:
        return
    assert msg in (consts.MSG_REQUEST, consts.MSG_REPLY, consts.MSG_EXCEPTION)
    assert type(seq) is int


class _Target:
    """What a fuzzed connection serves: values, a reference, a callback."""

    def __init__(self, value: int) -> None:
        self.value = value

    def exposed_get(self) -> int:
        return self.value


class FuzzService(Service):
    """The service behind the dispatch target."""

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_make(self, value: int = 0) -> _Target:
        return _Target(value)

    def exposed_call(self, func: Any, *args: Any) -> Any:
        return func(*args)


_DISPATCH_CONFIG = {"sync_request_timeout": 0.2, "max_concurrent_requests": 4}
_PING = b"\x01" + brine.dump((987654, (consts.HANDLE_PING, (consts.LABEL_TUPLE, ((1, "ok"),)))))
_GETROOT = b"\x01" + brine.dump((987653, (consts.HANDLE_GETROOT, (consts.LABEL_TUPLE, ()))))
ROOT_MARK = brine.dump("@root")


def _frame(payload: bytes) -> bytes:
    return struct.pack("!LB", len(payload), 0) + payload + b"\n"


def _answer(sock: socket.socket, decoder: FrameDecoder, seq: int) -> bytes | None:
    """The payload answering `seq`; None once the connection closed."""
    while True:
        payload = decoder.next_frame()
        if payload is None:
            try:
                data = sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            decoder.feed(data)
            continue
        if payload[0] != consts.MSG_REQUEST and brine.load(payload, start=1)[0] == seq:
            return payload


def fuzz_dispatch(data: bytes) -> None:
    errors: list[Any] = []
    hub = gevent.get_hub()
    original = hub.handle_error

    def record(context: Any, kind: Any, value: Any, tb: Any) -> None:
        if kind is not None and not issubclass(kind, gevent.GreenletExit):
            errors.append((context, kind, value))
        original(context, kind, value, tb)

    hub.handle_error = record
    left, right = socket.socketpair()
    conn = FuzzService()._connect(Channel(SocketStream(left)), dict(_DISPATCH_CONFIG))
    decoder = FrameDecoder()
    try:
        with gevent.Timeout(5, AssertionError("no answer within 5 s")):
            right.sendall(_frame(_GETROOT))
            root_reply = _answer(right, decoder, 987653)
            assert root_reply is not None
            root = brine.load(root_reply, start=1)[1][1]
            data = data.replace(ROOT_MARK, brine.dump(root))
            right.sendall(_frame(data) + _frame(_PING))
            answer = _answer(right, decoder, 987654)
        assert answer is None or brine.load(answer, start=1) == (987654, (1, "ok")), answer
        assert answer is not None or conn.closed
    finally:
        conn.abort("fuzz input done")
        right.close()
        gevent.sleep(0)
        hub.handle_error = original
    assert conn._local_objects == {}
    assert errors == [], errors


TARGETS: dict[str, Callable[[bytes], None]] = {
    "brine": fuzz_brine,
    "frames": fuzz_frames,
    "message": fuzz_message,
    "dispatch": fuzz_dispatch,
}


def _message(msg: int, seq: int, body: Any) -> bytes:
    return bytes([msg]) + brine.dump((seq, body))


def _seeds() -> dict[str, list[bytes]]:
    tup, val, ref = consts.LABEL_TUPLE, consts.LABEL_VALUE, consts.LABEL_LOCAL_REF
    root = (ref, "@root")
    values = [None, True, 7, -300, 10**30, 1.5, 2j, b"bytes", "text", (1, (2, 3)), frozenset([1])]
    values += [frozenset(k * (2**61 - 1) for k in range(1, 18)), slice(1, "a", None), "é€🐍"]
    messages = [
        _message(1, 1, (consts.HANDLE_PING, (tup, ((val, "x"),)))),
        _message(1, 2, (consts.HANDLE_GETROOT, (tup, ()))),
        _message(1, 3, (consts.HANDLE_GETATTR, (tup, (root, (val, "echo"))))),
        _message(
            1, 4, (consts.HANDLE_CALLATTR, (tup, (root, (val, "echo"), (val, (1,)), (val, ()))))
        ),
        _message(
            1, 5, (consts.HANDLE_CALLATTR, (tup, (root, (val, "make"), (val, (1,)), (val, ()))))
        ),
        _message(1, 6, (consts.HANDLE_DEL, (tup, (root, (val, 1))))),
        _message(1, 7, (consts.HANDLE_BUFFITER, (tup, (root, (val, 10))))),
        _message(1, 8, (consts.HANDLE_CMP, (tup, (root, (val, 1), (val, "__eq__"))))),
        _message(1, 9, (consts.HANDLE_INSPECT, (tup, ((val, ("a.B", 1, 2)),)))),
        _message(2, 10, (val, (1, 2))),
        _message(3, 11, (("builtins", "ValueError"), ("x",), (), "tb")),
    ]
    frames = [bytes([5]) + _frame(message) for message in messages]
    return {
        "brine": [brine.dump(value) for value in values],
        "frames": frames,
        "message": messages,
        "dispatch": messages,
    }


SEEDS = _seeds()
