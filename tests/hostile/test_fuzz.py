"""Property-based fuzzing of message decoding and of a live connection.

The codecs have their own hypothesis tests (test_brine.py, test_channel.py);
here the whole receiving path is fuzzed: `decode_message` on arbitrary and
mutated payloads, and a real server-side `Connection` fed well-framed but
arbitrary messages over a socket. The long-running, coverage-guided
versions of these targets are in fuzz/ (see docs/security.md).
"""

import contextlib
import logging

import gevent
import pytest
from gevent import socket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import SEEDS, TARGETS
from grpyc import brine, consts
from grpyc.channel import Channel, FrameDecoder
from grpyc.messages import ProtocolError, decode_message
from grpyc.stream import SocketStream
from tests.hostile.conftest import L, R, T, V, frame
from tests.hostile.server_proc import HostileTargetService

brine_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.binary(max_size=20),
    st.text(max_size=20),
)
brine_values = st.recursive(
    brine_scalars,
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=4).map(tuple),
    max_leaves=12,
)


# ------------------------------------------------------------ decode_message
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_message_of_arbitrary_bytes_raises_only_protocol_error(payload):
    with contextlib.suppress(ProtocolError):
        msg, seq, _ = decode_message(payload, 1000)
        assert msg in (consts.MSG_REQUEST, consts.MSG_REPLY, consts.MSG_EXCEPTION)
        assert type(seq) is int


@st.composite
def mutated_messages(draw):
    message = bytes([draw(st.integers(1, 3))]) + brine.dump(
        (draw(brine_values), draw(brine_values))
    )
    data = bytearray(message)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        byte = draw(st.integers(0, 255))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "replace" and at < len(data):
            data[at] = byte
        elif action == "insert":
            data.insert(at, byte)
        elif action == "delete" and at < len(data):
            del data[at]
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(mutated_messages(), st.integers(1, 40))
def test_decode_message_of_mutated_messages_raises_only_protocol_error(payload, depth):
    with contextlib.suppress(ProtocolError):
        decode_message(payload, depth)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=80), max_size=6), st.lists(st.integers(1, 50), max_size=10))
def test_frame_decoder_then_decode_message_raise_only_their_errors(payloads, cuts):
    stream = b"".join(frame(payload) for payload in payloads)
    decoder = FrameDecoder(max_frame_size=1000, max_decompressed_size=1000)
    position = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[position : position + cut])
        position += cut
        while (payload := decoder.next_frame()) is not None:
            with contextlib.suppress(ProtocolError):
                decode_message(payload, 1000)
    assert position >= len(stream)


# ------------------------------------------------------- a live connection
# Attribute names worth trying: the service's, private ones, escapes.
names = st.sampled_from(
    [
        "echo",
        "make_box",
        "exposed_echo",
        "stats",
        "__class__",
        "__init__",
        "_conn",
        "conn",
        "__dict__",
        "__getattribute__",
        "__reduce_ex__",
        "get",
        "value",
    ]
) | st.text(max_size=8)


@st.composite
def boxes(draw, root, depth=0):
    """A box as a hostile peer may send it: mostly valid shapes, some garbage."""
    choice = draw(st.integers(0, 9 if depth < 2 else 5))
    if choice <= 2:
        return (V, draw(brine_values))
    if choice == 3:
        return (V, draw(names))
    if choice == 4:
        return (L, root if draw(st.booleans()) else draw(brine_values))
    if choice == 5:
        return (draw(st.integers(-1, 6)), draw(brine_values))
    if choice == 6:
        return (R, (draw(st.text(max_size=10)), draw(st.integers(0, 9)), draw(st.integers(0, 9))))
    items = draw(st.lists(boxes(root, depth + 1), max_size=4))
    return (T, tuple(items))


@st.composite
def requests(draw, root):
    handler = draw(st.integers(0, 22) | st.integers())
    if handler == consts.HANDLE_CLOSE:
        handler = consts.HANDLE_PING
    args = draw(boxes(root))
    if draw(st.booleans()):
        # The usual shape: the target object first.
        args = (T, ((L, root), *draw(st.lists(boxes(root, 1), max_size=4))))
    return draw(st.integers(0, 3)), handler, args


FUZZ_CONFIG = {"sync_request_timeout": 0.5, "max_concurrent_requests": 8}


class FuzzedConnection:
    """A server-side Connection over a socketpair; this side speaks raw frames."""

    def __init__(self):
        left, self.sock = socket.socketpair()
        self.conn = HostileTargetService()._connect(Channel(SocketStream(left)), dict(FUZZ_CONFIG))
        self.decoder = FrameDecoder()
        self.root = None

    def send(self, payload):
        self.sock.sendall(frame(payload))

    def answer_to(self, seq, timeout=3.0):
        """The (msg, body) answering `seq`; None if the connection closed first."""
        with gevent.Timeout(timeout, AssertionError(f"no answer to {seq} in {timeout} s")):
            while True:
                payload = self.decoder.next_frame()
                if payload is None:
                    try:
                        data = self.sock.recv(65536)
                    except OSError:
                        return None
                    if not data:
                        return None
                    self.decoder.feed(data)
                    continue
                got_seq, body = brine.load(payload, start=1)
                if got_seq == seq and payload[0] != consts.MSG_REQUEST:
                    return payload[0], body

    def close(self):
        self.conn.abort("fuzz example done")
        self.sock.close()


@pytest.fixture
def fuzzed_root():
    """The id pack the server gives its root on a fuzzed connection."""
    probe = FuzzedConnection()
    probe.send(b"\x01" + brine.dump((0, (consts.HANDLE_GETROOT, (T, ())))))
    _, body = probe.answer_to(0)
    probe.close()
    return body[1]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_live_connection_answers_or_closes_on_any_request(fuzzed_root, caplog, data):
    caplog.set_level(logging.CRITICAL, logger="grpyc")
    peer = FuzzedConnection()
    try:
        # The root is exported under the same class but its own instance id.
        peer.send(b"\x01" + brine.dump((0, (consts.HANDLE_GETROOT, (T, ())))))
        _, body = peer.answer_to(0)
        root = body[1]
        assert root[:2] == fuzzed_root[:2]
        sent = data.draw(st.lists(requests(root), min_size=1, max_size=4))
        for seq, (msg_type, handler, args) in enumerate(sent, start=1):
            payload = bytes([msg_type]) + brine.dump((seq, (handler, args)))
            peer.send(payload)
        # Whatever came before, a ping is answered, or the connection is gone.
        peer.send(b"\x01" + brine.dump((999, (consts.HANDLE_PING, (T, ((V, "alive"),))))))
        answer = peer.answer_to(999)
        if answer is None:
            assert peer.conn.closed
        else:
            assert answer == (consts.MSG_REPLY, (V, "alive"))
    finally:
        peer.close()
    assert peer.conn._local_objects == {}


# ---------------------------------------------------------- the fuzz targets
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_targets_pass_on_their_seeds(target):
    # fuzz/run.py drives these under atheris; here they must at least accept
    # their seed corpus, so a target never rots unnoticed.
    for seed in SEEDS[target]:
        TARGETS[target](seed)


def test_fuzz_targets_pass_on_mangled_seeds():
    for target, seeds in SEEDS.items():
        for seed in seeds:
            for cut in range(0, len(seed), max(1, len(seed) // 7)):
                TARGETS[target](seed[:cut] + bytes([cut % 256]) + seed[cut + 1 :])
