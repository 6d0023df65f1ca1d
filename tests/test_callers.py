"""The caller's lane (`grpyc._callers`): a caller alone on a cooperative
connection takes its reply straight from the protocol; anything else goes
the general way. The peer is a raw channel answered by hand."""

import contextlib
import time

import gevent
import pytest

from grpyc import consts
from grpyc.async_ import AsyncResultTimeout
from grpyc.hub import ConnectionHub
from grpyc.messages import decode_message, encode_reply, encode_request
from grpyc.protocol import ProtocolError
from grpyc.service import VoidService
from tests.conftest import _socketpair_channels


@contextlib.contextmanager
def lone_client(**config):
    """A grpyc client over a socketpair, the other end a raw channel we answer
    by hand: ``(client, peer)``, both closed afterwards."""
    left, peer = _socketpair_channels()
    client = VoidService()._connect(left, config)
    try:
        yield client, peer
    finally:
        peer.close()
        client.close()


def _spy_lane(client):
    """Count the frames the hub's lane handed to the protocol, and the replies it took."""
    seen = {"frames": 0, "replies": 0}
    read_reply = client._hub._read_reply

    def spy(payload, seq):
        seen["frames"] += 1
        outcome = read_reply(payload, seq)
        seen["replies"] += outcome is not None
        return outcome

    client._hub._read_reply = spy
    return seen


def _answer_next_request(peer, reply_for):
    """Read requests until one comes; send ``reply_for(seq)`` (a list of frames)."""

    def answer():
        msg = None
        while msg != consts.MSG_REQUEST:
            msg, seq, _ = decode_message(peer.recv(), 64)
        peer.send_many(reply_for(seq))

    return gevent.spawn(answer)


# What a `_callback_request` call answers when its function returns "called".
_CALLED = (consts.MSG_REPLY, 7, (consts.LABEL_VALUE, "called"))


def _callback_request(client, func):
    """The peer's request (seq 7) to call `func`, which `client` boxed for it."""
    _, id_pack = client._box(func)
    callee = (consts.LABEL_LOCAL_REF, id_pack)
    no_args = (consts.LABEL_TUPLE, ())
    return encode_request(7, consts.HANDLE_CALL, (consts.LABEL_TUPLE, (callee, no_args, no_args)))


def test_a_lone_caller_takes_its_reply_straight_from_the_lane():
    with lone_client() as (client, peer):
        seen = _spy_lane(client)
        for round_ in range(3):
            answering = _answer_next_request(
                peer, lambda seq, r=round_: [encode_reply(seq, (consts.LABEL_VALUE, r))]
            )
            assert client.sync_request(consts.HANDLE_PING, "x") == round_
            answering.get(timeout=2)
        assert seen == {"frames": 3, "replies": 3}
        assert client._hub.pending == {}
        assert client._hub._baton.holder is None  # dormant again: a request finds a reader


def test_a_request_before_the_reply_runs_in_a_handler_and_the_lane_waits_on():
    """The peer calls us back before it answers: a handler runs the request
    while the lane waits on, and takes the caller's own reply straight."""
    with lone_client() as (client, peer):
        seen = _spy_lane(client)
        called = []
        call_it = _callback_request(client, lambda: called.append(gevent.getcurrent()) or "called")

        def answer():
            _, seq, _ = decode_message(peer.recv(), 64)
            peer.send(call_it)
            assert decode_message(peer.recv(), 64) == _CALLED
            peer.send(encode_reply(seq, (consts.LABEL_VALUE, "ours")))

        answering = gevent.spawn(answer)
        assert client.sync_request(consts.HANDLE_PING, "x") == "ours"
        answering.get(timeout=2)
        assert called and called[0] is not gevent.getcurrent()  # in a handler
        assert seen == {"frames": 2, "replies": 1}  # the request, then our reply


def test_a_malformed_reply_fails_its_caller_alone_as_in_the_general_path():
    with lone_client() as (client, peer):
        seen = _spy_lane(client)
        answering = _answer_next_request(peer, lambda seq: [encode_reply(seq, ("no such label",))])
        with pytest.raises(ProtocolError, match="malformed reply"):
            client.sync_request(consts.HANDLE_PING, "x")
        answering.get(timeout=2)
        assert seen["replies"] == 1
        answering = _answer_next_request(
            peer, lambda seq: [encode_reply(seq, (consts.LABEL_VALUE, "fine"))]
        )
        assert client.sync_request(consts.HANDLE_PING, "x") == "fine"  # still open
        answering.get(timeout=2)


def test_a_lone_caller_sees_the_peer_close_and_a_bad_frame_close():
    with lone_client() as (client, peer):
        gevent.spawn_later(0.05, peer.close)
        began = time.monotonic()
        with pytest.raises(EOFError):
            client.sync_request(consts.HANDLE_PING, "x")
        assert time.monotonic() - began < 2
        assert client.closed
    with lone_client() as (client, peer):
        answering = _answer_next_request(peer, lambda seq: [b"\xff not brine"])
        with pytest.raises(EOFError):
            client.sync_request(consts.HANDLE_PING, "x")
        answering.get(timeout=2)
        assert client.closed


def test_a_lone_callers_timeout_drops_the_late_reply():
    with lone_client(sync_request_timeout=0.2) as (client, peer):
        began = time.monotonic()
        with pytest.raises(AsyncResultTimeout):
            client.sync_request(consts.HANDLE_PING, "x")
        assert 0.15 <= time.monotonic() - began < 2
        _, late, _ = decode_message(peer.recv(), 64)
        answering = _answer_next_request(
            peer,
            lambda seq: [
                encode_reply(late, (consts.LABEL_VALUE, "late")),
                encode_reply(seq, (consts.LABEL_VALUE, "ours")),
            ],
        )
        assert client.sync_request(consts.HANDLE_PING, "x") == "ours"
        answering.get(timeout=2)
        assert client._hub.pending == {}


def test_a_second_caller_follows_the_lane_and_both_get_their_own_reply():
    with lone_client() as (client, peer):
        first = gevent.spawn(client.sync_request, consts.HANDLE_PING, "first")
        second = gevent.spawn(client.sync_request, consts.HANDLE_PING, "second")
        seqs = []
        while len(seqs) < 2:
            _, seq, _ = decode_message(peer.recv(), 64)
            seqs.append((seq, ("first", "second")[len(seqs)]))
        baton = client._hub._baton
        assert baton.holder is first and list(baton.followers.values()) == [second]
        for seq, value in reversed(seqs):  # the follower's reply first
            peer.send(encode_reply(seq, (consts.LABEL_VALUE, value)))
        assert first.get(timeout=2) == "first"
        assert second.get(timeout=2) == "second"


def _count_general_reads(monkeypatch):
    """Count the times a caller went the general way while holding the baton."""
    count = {"general": 0}
    lead_nested = ConnectionHub._lead_nested

    def spy(hub, slot, deadline):
        count["general"] += 1
        return lead_nested(hub, slot, deadline)

    monkeypatch.setattr(ConnectionHub, "_lead_nested", spy)
    return count


def test_frames_behind_the_reply_that_start_nothing_stay_in_the_lane(monkeypatch):
    """Answers to requests nobody waits for (a DEL's) come right behind the reply:
    the lane handles them too, and the connection goes dormant after."""
    with lone_client() as (client, peer):
        seen = _spy_lane(client)
        general = _count_general_reads(monkeypatch)
        answering = _answer_next_request(
            peer,
            lambda seq: [
                encode_reply(seq, (consts.LABEL_VALUE, "ours")),
                encode_reply(seq + 1000, (consts.LABEL_VALUE, None)),
                encode_reply(seq + 1001, (consts.LABEL_VALUE, None)),
            ],
        )
        assert client.sync_request(consts.HANDLE_PING, "x") == "ours"
        answering.get(timeout=2)
        assert seen == {"frames": 3, "replies": 1}
        assert general == {"general": 0}
        assert not client._channel.has_buffered_frame()
        assert client._hub._baton.holder is None


def test_a_flood_behind_the_reply_goes_the_general_way_after_the_lanes_share(monkeypatch):
    flood = 20
    with lone_client() as (client, peer):
        seen = _spy_lane(client)
        general = _count_general_reads(monkeypatch)
        answering = _answer_next_request(
            peer,
            lambda seq: (
                [encode_reply(seq + 1000 + n, (consts.LABEL_VALUE, n)) for n in range(flood)]
                + [encode_reply(seq, (consts.LABEL_VALUE, "ours"))]
            ),
        )
        assert client.sync_request(consts.HANDLE_PING, "x") == "ours"
        answering.get(timeout=2)
        assert seen["frames"] < flood  # the lane's share; the rest through `_dispatch`
        assert general == {"general": 1}
        assert client._hub.pending == {}


def test_a_request_behind_the_reply_runs_in_a_handler_and_is_answered():
    with lone_client() as (client, peer):
        seen = _spy_lane(client)
        ran = []
        call_it = _callback_request(client, lambda: ran.append(gevent.getcurrent()) or "called")
        answering = _answer_next_request(
            peer,
            lambda seq: [
                encode_reply(seq, (consts.LABEL_VALUE, "ours")),
                call_it,
            ],
        )
        assert client.sync_request(consts.HANDLE_PING, "x") == "ours"
        answering.get(timeout=2)
        assert decode_message(peer.recv(), 64) == _CALLED
        assert ran and ran[0] is not gevent.getcurrent()
        assert seen["frames"] == 2


def test_a_callbacks_nested_call_borrows_the_baton_from_the_lane(monkeypatch):
    """The handler running the peer's callback calls the peer itself while the
    lane waits for bytes: it borrows the baton, gets its own reply, and the
    lone caller still gets its own."""
    with lone_client() as (client, peer):
        general = _count_general_reads(monkeypatch)
        nested = []

        def callback():
            nested.append(client.sync_request(consts.HANDLE_PING, "nested"))
            return "called"

        call_it = _callback_request(client, callback)

        def answer():
            _, seq, _ = decode_message(peer.recv(), 64)
            peer.send(call_it)
            msg, inner, _ = decode_message(peer.recv(), 64)
            assert msg == consts.MSG_REQUEST
            peer.send(encode_reply(inner, (consts.LABEL_VALUE, "inner")))
            assert decode_message(peer.recv(), 64) == _CALLED
            peer.send(encode_reply(seq, (consts.LABEL_VALUE, "ours")))

        answering = gevent.spawn(answer)
        assert client.sync_request(consts.HANDLE_PING, "x") == "ours"
        answering.get(timeout=2)
        assert nested == ["inner"]
        assert client._hub.pending == {}
        assert general == {"general": 1}  # having lent the baton, it reads on the general way
