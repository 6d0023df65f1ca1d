"""Hostile bytes against a live server: framing, compression, brine, messages.

Each attack runs on its own raw connection. The server must answer it with
an exception reply or close that connection with a logged reason, and a
normal client must get answers right after (`assert_serves`).
"""

import logging
import random
import struct
import zlib

import pytest

from grpyc import brine, consts
from tests.hostile.conftest import (
    L,
    R,
    T,
    V,
    assert_serves,
    boxed,
    exception_text,
    frame,
    request,
    zlib_bomb,
)

MIB = 1024 * 1024


def closing_reasons(caplog):
    """The reasons logged for connections closed on a protocol error."""
    prefix = "closing after protocol error: "
    return [
        record.getMessage().split(prefix, 1)[1]
        for record in caplog.records
        if record.name.startswith("grpyc") and prefix in record.getMessage()
    ]


def assert_closed_for(peer, caplog, reason):
    """The server closed `peer`'s connection and logged `reason` (a substring)."""
    assert peer.wait_closed(timeout=5), "the server kept the connection open"
    reasons = closing_reasons(caplog)
    assert any(reason in logged for logged in reasons), reasons


@pytest.fixture(autouse=True)
def _log_warnings(caplog):
    caplog.set_level(logging.WARNING, logger="grpyc")


# ------------------------------------------------------------------- frames
@pytest.mark.parametrize("length", [2**32 - 1, 2**31, 64 * MIB + 1])
def test_header_over_max_frame_size_closes_at_once(server, raw_peers, caplog, length):
    peer = raw_peers(server.port)
    peer.send(struct.pack("!LB", length, 0) + b"x" * 100)
    assert_closed_for(peer, caplog, f"frame of {length} bytes exceeds max_frame_size=67108864")
    assert_serves(server.port)


def test_compressed_flag_other_than_0_or_1_closes(server, raw_peers, caplog):
    peer = raw_peers(server.port)
    peer.send(struct.pack("!LB", 3, 2) + b"abc\n")
    assert_closed_for(peer, caplog, "frame compressed flag is 2, expected 0 or 1")
    assert_serves(server.port)


def test_missing_newline_trailer_closes(server, raw_peers, caplog):
    peer = raw_peers(server.port)
    peer.send(frame(request(1, consts.HANDLE_PING, boxed((V, 1))), trailer=b"X"))
    assert_closed_for(peer, caplog, "ends with byte 0x58, expected a newline (0x0a)")
    assert_serves(server.port)


@pytest.mark.parametrize("seed", range(8))
def test_random_payload_in_valid_frame_closes(server, raw_peers, caplog, seed):
    payload = random.Random(seed).randbytes(4096)
    peer = raw_peers(server.port)
    peer.send(frame(payload))
    assert peer.wait_closed(timeout=5)
    assert len(closing_reasons(caplog)) == 1
    assert_serves(server.port)


@pytest.mark.parametrize("seed", range(8))
def test_random_stream_never_hurts_other_clients(server, raw_peers, seed):
    # Raw random bytes: the header may claim a body that never comes, so the
    # connection may stay open; either way other clients are served.
    peer = raw_peers(server.port)
    peer.send(random.Random(seed).randbytes(16384))
    assert_serves(server.port)
    peer.close()
    assert_serves(server.port)


def test_truncated_first_frame_then_silence_is_dropped_by_handshake_timeout(
    make_server, raw_peers, caplog
):
    caplog.set_level(logging.INFO, logger="grpyc")
    server = make_server(handshake_timeout=0.5)
    peer = raw_peers(server.port)
    peer.send(frame(request(1, consts.HANDLE_PING, boxed((V, b"x" * 1000))))[:500])
    assert peer.wait_closed(timeout=5)
    assert any(
        "waiting for the first frame took longer than handshake_timeout=0.5 s" in r.getMessage()
        for r in caplog.records
    )
    assert_serves(server.port)


def test_truncated_frame_then_silence_is_dropped_by_idle_timeout(make_server, raw_peers, caplog):
    caplog.set_level(logging.INFO, logger="grpyc")
    server = make_server(idle_timeout=0.5)
    peer = raw_peers(server.port)
    assert peer.call(1, consts.HANDLE_PING, boxed((V, "first")))[2] == (V, "first")
    peer.send(frame(request(2, consts.HANDLE_PING, boxed((V, b"x" * 1000))))[:500])
    assert peer.wait_closed(timeout=5)
    assert any("idle_timeout=0.5" in record.getMessage() for record in caplog.records)
    assert_serves(server.port)


def test_zlib_bomb_stops_inflating_at_max_decompressed_size(server, raw_peers, caplog):
    bomb = zlib_bomb(1024)  # ~1 MiB inflating to 1 GiB
    assert len(bomb) < 1100 * 1024
    peer = raw_peers(server.port)
    peer.send(frame(bomb, compressed=True))
    assert_closed_for(
        peer,
        caplog,
        f"compressed frame of {len(bomb)} bytes inflates past max_decompressed_size=67108864",
    )
    assert_serves(server.port)


def test_invalid_zlib_data_closes(server, raw_peers, caplog):
    peer = raw_peers(server.port)
    peer.send(frame(b"this is not zlib", compressed=True))
    assert_closed_for(peer, caplog, "compressed frame of 16 bytes is not valid zlib")
    assert_serves(server.port)


# ------------------------------------------------------------ brine, messages
def test_brine_nested_a_million_deep_closes(server, raw_peers, caplog):
    peer = raw_peers(server.port)
    peer.send(frame(b"\x01" + b"\x10" * 10**6 + b"\x00"))
    assert_closed_for(peer, caplog, "containers nested deeper than max_depth=1000")
    assert_serves(server.port)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x01\x07", "unknown tag 0x07"),
        (b"\x01\x11\x50\xf5", "unknown tag 0xf5"),
        (b"\x01\x15\xff\xff\xff\xff\x00", "tuple of 4294967295 items declared with only 1 bytes"),
        (b"\x01\x0f\xff\xff\xff\xf0ab", "value of 4294967280 bytes at offset"),
        (b"\x01\x11\x50", "truncated"),
        (b"\x01" + brine.dump((1, 2)) + b"\x00", "1 trailing bytes"),
        (b"\x01\x08\x0b\xff\xfe", "str of 2 bytes is not valid UTF-8"),
        (b"\x01" + brine.dump((1,)), "message is not a (seq, body) pair"),
        (b"\x01" + brine.dump(("1", ())), "message is not a (seq, body) pair"),
    ],
)
def test_undecodable_message_closes(server, raw_peers, caplog, payload, reason):
    peer = raw_peers(server.port)
    peer.send(frame(payload))
    assert_closed_for(peer, caplog, reason)
    assert_serves(server.port)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x07" + brine.dump((1, ())), "unknown message type 7 in frame payload"),
        (b"", "unknown message type: empty frame payload"),
        (
            brine.dump((consts.MSG_REQUEST, 1, (consts.HANDLE_PING, ()))),
            "an RPyC 5.x peer (or older)",
        ),
        (b"\x00" * 16 + request(1, consts.HANDLE_PING, boxed()), "a bind_threads peer"),
    ],
)
def test_foreign_message_formats_close(server, raw_peers, caplog, payload, reason):
    peer = raw_peers(server.port)
    peer.send(frame(payload))
    assert_closed_for(peer, caplog, reason)
    assert_serves(server.port)


# Requests of the right message format but the wrong shape: each gets an
# exception reply naming the problem, and the connection stays usable.
WRONG_SHAPES = [
    ("unknown handler", 99, boxed(), "ProtocolError: unknown request handler 99"),
    ("negative handler", -1, boxed(), "ProtocolError: unknown request handler -1"),
    ("huge handler", 10**40, boxed(), f"ProtocolError: unknown request handler {10**40}"),
    ("args not a tuple", consts.HANDLE_GETROOT, (V, 5), "ProtocolError: request arguments"),
    ("unknown box label", consts.HANDLE_GETROOT, (9, ()), "ProtocolError: invalid box label 9"),
    ("box not a pair", consts.HANDLE_GETROOT, 5, "ProtocolError: invalid box 5"),
    (
        "too few arguments",
        consts.HANDLE_GETATTR,
        boxed((V, 1)),
        "TypeError: RequestHandlers._handle_getattr() missing 1 required positional argument",
    ),
    (
        "id pack nobody exported",
        consts.HANDLE_GETATTR,
        boxed((L, ("builtins.object", 1, 2)), (V, "x")),
        "KeyError: ('builtins.object', 1, 2)",
    ),
    ("id pack not a tuple", consts.HANDLE_REPR, boxed((L, 7)), "KeyError: invalid id pack 7"),
    (
        "remote ref with a short id pack",
        consts.HANDLE_PING,
        boxed((R, (1,))),
        "ProtocolError: invalid id pack (1,)",
    ),
    (
        "remote ref with a non-int id",
        consts.HANDLE_REPR,
        boxed((R, ("x", "1", 2))),
        "ProtocolError: invalid id pack ('x', '1', 2)",
    ),
    ("inspect of an int", consts.HANDLE_INSPECT, boxed((V, 5)), "KeyError: invalid id pack 5"),
    (
        "inspect of nothing exported",
        consts.HANDLE_INSPECT,
        boxed((V, ("x", 1, 2))),
        "KeyError: ('x', 1, 2)",
    ),
]


@pytest.mark.parametrize(
    ("handler", "args", "expected"),
    [case[1:] for case in WRONG_SHAPES],
    ids=[case[0] for case in WRONG_SHAPES],
)
def test_wrong_shapes_get_error_replies(server, raw_peers, handler, args, expected):
    peer = raw_peers(server.port)
    assert exception_text(peer.call(1, handler, args)).startswith(expected)
    # The same connection goes on working.
    assert peer.call(2, consts.HANDLE_PING, boxed((V, "ok")))[2] == (V, "ok")
    assert_serves(server.port)


ROOT = "root"  # stands for the connection's root id pack in the cases below
SHORT_ROOT = "short root"  # the first two items of it

# Wrong shapes on the root object (the id pack is filled in per connection).
ROOT_SHAPES = [
    ("non-str attribute name", consts.HANDLE_GETATTR, (ROOT, (V, 5)), "TypeError: attribute name"),
    (
        "tuple attribute name",
        consts.HANDLE_GETATTR,
        (ROOT, (V, ("echo",))),
        "TypeError: attribute name must be str, not tuple",
    ),
    (
        "undecodable bytes attribute name",
        consts.HANDLE_GETATTR,
        (ROOT, (V, b"\xff")),
        "UnicodeDecodeError: utf-8",
    ),
    (
        "kwargs not pairs",
        consts.HANDLE_CALLATTR,
        (ROOT, (V, "echo"), (V, (1,)), (V, 5)),
        "TypeError: 'int' object is not iterable",
    ),
    (
        "kwargs with int keys",
        consts.HANDLE_CALLATTR,
        (ROOT, (V, "echo"), (V, (1,)), (V, ((1, 2),))),
        "TypeError: keywords must be strings",
    ),
    (
        "positional args not iterable",
        consts.HANDLE_CALLATTR,
        (ROOT, (V, "echo"), (V, 5), (V, ())),
        "TypeError: tests.hostile.server_proc.HostileTargetService.exposed_echo() argument after",
    ),
    (
        "cmp op not a str",
        consts.HANDLE_CMP,
        (ROOT, (V, 1), (V, 5)),
        "TypeError: attribute name must be str, not int",
    ),
    (
        "instancecheck on a non-class",
        consts.HANDLE_INSTANCECHECK,
        (ROOT, (V, ("x", 1, 2))),
        "TypeError: INSTANCECHECK target is not a class",
    ),
    (
        "BUFFITER count 10**12",
        consts.HANDLE_BUFFITER,
        (ROOT, (V, 10**12)),
        "ValueError: BUFFITER count 1000000000000 exceeds max_buffiter_count=65536",
    ),
    ("BUFFITER count -1", consts.HANDLE_BUFFITER, (ROOT, (V, -1)), "ValueError: invalid BUFFITER"),
    (
        "BUFFITER count not an int",
        consts.HANDLE_BUFFITER,
        (ROOT, (V, 1.5)),
        "ValueError: invalid BUFFITER count 1.5",
    ),
    ("DEL count -5", consts.HANDLE_DEL, (ROOT, (V, -5)), "ValueError: invalid DEL count -5"),
    ("DEL count 0", consts.HANDLE_DEL, (ROOT, (V, 0)), "ValueError: invalid DEL count 0"),
    ("DEL count str", consts.HANDLE_DEL, (ROOT, (V, "1")), "ValueError: invalid DEL count '1'"),
    ("DEL of a value box", consts.HANDLE_DEL, ((V, 1), (V, 1)), "KeyError: ('builtins.int'"),
    (
        "DEL of nothing exported",
        consts.HANDLE_DEL,
        ((L, ("x", 1, 2)), (V, 10**100)),
        "KeyError: ('x', 1, 2)",
    ),
    ("DEL with an int id pack", consts.HANDLE_DEL, ((L, 5), (V, 1)), "KeyError: invalid id pack 5"),
]


def _fill_root(items, root):
    return boxed(*[(L, root) if item == ROOT else item for item in items])


@pytest.mark.parametrize(
    ("handler", "items", "expected"),
    [case[1:] for case in ROOT_SHAPES],
    ids=[case[0] for case in ROOT_SHAPES],
)
def test_wrong_shapes_on_an_exported_object_get_error_replies(
    server, raw_peers, handler, items, expected
):
    peer = raw_peers(server.port)
    root = peer.root_id_pack()
    assert exception_text(peer.call(1, handler, _fill_root(items, root))).startswith(expected)
    assert peer.call(2, consts.HANDLE_PING, boxed((V, "ok")))[2] == (V, "ok")
    assert_serves(server.port)


# DEL and PING are answered by the reader itself; some malformed shapes of
# them close the connection instead of getting an exception reply. Either
# outcome is acceptable: what matters is a logged reason and no harm to others.
INLINE_SHAPES = [
    ("DEL id pack of 2", consts.HANDLE_DEL, (SHORT_ROOT, (V, 1))),
    ("DEL id pack str", consts.HANDLE_DEL, ((L, "ab"), (V, 1))),
    ("PING args int", consts.HANDLE_PING, 5),
    ("PING box of int", consts.HANDLE_PING, (consts.LABEL_TUPLE, 5)),
    ("PING tuple of ints", consts.HANDLE_PING, (consts.LABEL_TUPLE, (5,))),
    ("PING empty box", consts.HANDLE_PING, (consts.LABEL_TUPLE, ((),))),
]


@pytest.mark.parametrize(
    ("handler", "args"),
    [case[1:] for case in INLINE_SHAPES],
    ids=[case[0] for case in INLINE_SHAPES],
)
def test_malformed_del_and_ping_are_refused(server, raw_peers, caplog, handler, args):
    peer = raw_peers(server.port)
    root = peer.root_id_pack()
    if handler == consts.HANDLE_DEL and args[0] == SHORT_ROOT:
        args = boxed((L, root[:2]), args[1])
    elif handler == consts.HANDLE_DEL:
        args = boxed(*args)
    answer = peer.call(1, handler, args)
    if answer is None:
        assert len(closing_reasons(caplog)) == 1
    else:
        assert answer[0] == consts.MSG_EXCEPTION
        assert peer.call(2, consts.HANDLE_PING, boxed((V, "ok")))[2] == (V, "ok")
    assert_serves(server.port)


def test_del_with_an_absurd_count_only_drops_the_peers_own_reference(server, raw_peers):
    peer = raw_peers(server.port)
    root = peer.root_id_pack()
    assert peer.call(1, consts.HANDLE_DEL, boxed((L, root), (V, 10**100)))[2] == (V, None)
    # The object is no longer exported to this peer; the server is unharmed.
    answer = peer.call(2, consts.HANDLE_GETATTR, boxed((L, root), (V, "echo")))
    assert exception_text(answer) == f"KeyError: {root!r}"
    assert_serves(server.port)


@pytest.mark.parametrize("msg_type", [consts.MSG_REPLY, consts.MSG_EXCEPTION])
def test_answers_nobody_asked_for_are_dropped(server, raw_peers, msg_type):
    peer = raw_peers(server.port)
    for body in [(V, 1), (R, 5), (99, ()), 5, ("x",)]:
        peer.send(frame(bytes([msg_type]) + brine.dump((12345, body))))
    assert peer.call(1, consts.HANDLE_PING, boxed((V, "ok")))[2] == (V, "ok")
    assert_serves(server.port)


def test_request_with_a_non_pair_body_gets_an_error(server, raw_peers):
    peer = raw_peers(server.port)
    peer.send(frame(b"\x01" + brine.dump((1, (1, 2, 3)))))
    answer = peer.recv_message()
    assert exception_text(answer) == "ProtocolError: request is not a (handler, args) pair"
    assert_serves(server.port)


def test_configured_frame_limits_are_enforced(make_server, raw_peers, caplog):
    server = make_server(protocol_config={"max_frame_size": 4096, "max_decompressed_size": 8192})
    assert_serves(server.port)
    peer = raw_peers(server.port)
    peer.send(frame(b"\x01" + b"x" * 5000))
    assert_closed_for(peer, caplog, "frame of 5001 bytes exceeds max_frame_size=4096")
    peer = raw_peers(server.port)
    packed = zlib.compress(bytes(16384))
    peer.send(frame(packed, compressed=True))
    assert_closed_for(peer, caplog, "inflates past max_decompressed_size=8192")


# ----------------------------------------------------- big values, spliced
@pytest.mark.parametrize("claimed", [MIB, 2 * MIB, 3 * MIB])
def test_decoy_value_headers_in_a_big_frame_change_nothing(server, raw_peers, claimed):
    # The server guesses from a big frame's first bytes where a big value
    # starts, to read it into its own buffer. A small value that looks like
    # such a header (tag 0x0f, a length that fits) must not change what is
    # decoded: the guess is checked, and the bytes put back.
    peer = raw_peers(server.port)
    big = random.Random(claimed).randbytes(2 * MIB)
    decoy = b"\x0f" + struct.pack("!L", claimed) + b"!"
    sent = (T, ((V, decoy), (V, big), (V, "tail")))
    message = peer.call(5, consts.HANDLE_PING, boxed(sent), timeout=20)
    assert message is not None and message[0] == consts.MSG_REPLY
    assert message[2] == (V, (decoy, big, "tail"))  # ping answers with the value
    assert_serves(server.port)


def test_a_big_frame_cut_short_inside_its_value_closes(server, raw_peers, caplog):
    peer = raw_peers(server.port)
    payload = request(5, consts.HANDLE_PING, boxed((V, bytes(MIB))))
    # The frame says the payload is what it is, but the value's length says more.
    lying = payload.replace(struct.pack("!L", MIB), struct.pack("!L", MIB + 10), 1)
    peer.send(frame(lying))
    assert_closed_for(peer, caplog, "undecodable message")
    assert_serves(server.port)


@pytest.mark.parametrize("size", [MIB, 8 * MIB])
def test_a_big_frame_cut_short_then_silence_is_dropped_by_idle_timeout(
    make_server, raw_peers, caplog, size
):
    """Its body is read straight into its own buffer (`Channel.fill`): the wait for
    the rest still ends at idle_timeout, and other clients are served meanwhile.
    8 MiB after big pings: the server's receive buffer has grown, and it waits
    for the rest with a low-water mark on the socket (`SocketStream.read_body_into`)."""
    caplog.set_level(logging.INFO, logger="grpyc")
    server = make_server(idle_timeout=0.5)
    peer = raw_peers(server.port)
    assert peer.call(1, consts.HANDLE_PING, boxed((V, "first")))[2] == (V, "first")
    for seq in range(10, 13 if size > MIB else 10):
        value = bytes([seq]) * size
        assert peer.call(seq, consts.HANDLE_PING, boxed((V, value)), timeout=20)[2] == (V, value)
    big = frame(request(2, consts.HANDLE_PING, boxed((V, b"x" * size))))
    peer.send(big[: size // 2])
    assert_serves(server.port)
    assert peer.wait_closed(timeout=5)
    assert any("idle_timeout=0.5" in record.getMessage() for record in caplog.records)
    assert_serves(server.port)
