"""grpyc._baton: who reads a cooperative connection."""

import time

import gevent
from gevent import socket

from grpyc._baton import ReadBaton
from grpyc._runtime import ReplySlot
from grpyc.channel import Channel
from grpyc.stream import SocketStream


def _baton():
    left, right = socket.socketpair()
    channel = Channel(SocketStream(left))
    return ReadBaton(channel, gevent.get_hub()), channel, right


def test_a_follower_killed_as_it_is_offered_the_baton_passes_it_on():
    """Otherwise the dead greenlet keeps the baton and nobody reads the connection again."""
    baton, channel, peer = _baton()
    slot = ReplySlot()
    follower = gevent.spawn(lambda: baton.follow(slot, gevent.getcurrent(), None, lambda: False))
    gevent.sleep(0)  # it sleeps as a follower now
    assert list(baton.followers.values()) == [follower]
    follower.kill(block=False)  # its GreenletExit is queued first ...
    baton.pass_on(False)  # ... then the baton is offered to it
    assert baton.holder is follower
    follower.join(timeout=2)
    assert follower.dead
    assert baton.holder is not follower
    channel.close()
    peer.close()


def test_a_follower_offered_the_baton_takes_it():
    baton, channel, peer = _baton()
    slot = ReplySlot()
    follower = gevent.spawn(lambda: baton.follow(slot, gevent.getcurrent(), None, lambda: False))
    gevent.sleep(0)
    baton.pass_on(False)
    assert follower.get(timeout=2) is True
    assert baton.holder is follower  # it holds the baton and will read (hub._wait_for)
    channel.close()
    peer.close()


def _count_lends(monkeypatch):
    lends = []
    original = ReadBaton._lend

    def spy(self, *args):
        lends.append(args[0])
        original(self, *args)

    monkeypatch.setattr(ReadBaton, "_lend", spy)
    return lends


def test_a_lender_gets_its_reply_while_a_callback_holds_the_baton(pair, monkeypatch):
    """A caller waits for bytes; a callback's nested call borrows the baton and
    reads. The lender's reply, arriving first, still reaches it at once."""
    lends = _count_lends(monkeypatch)
    _, client = pair
    root = client.root
    lender = gevent.spawn(lambda: (root.sleep(0.2), time.monotonic())[1])
    gevent.sleep(0.02)  # it holds the baton, waiting for bytes
    began = time.monotonic()
    borrower = gevent.spawn(root.call, lambda: root.sleep(0.6))  # the callback borrows
    lender_done = lender.get(timeout=5)
    assert borrower.get(timeout=5) == 0.6
    assert lends and all(glet is lender for glet in lends)  # the attribute read, the call
    assert lender_done - began < 0.45  # not held up until the borrower's reply (0.6 s)
    assert root.echo("after") == "after"


def test_a_lender_leaving_early_does_not_lose_the_baton(pair, monkeypatch):
    lends = _count_lends(monkeypatch)
    _, client = pair
    root = client.root

    def lender():
        with gevent.Timeout(0.15, False):
            root.sleep(1.0)
        return "left"

    leaving = gevent.spawn(lender)
    gevent.sleep(0.02)
    borrower = gevent.spawn(root.call, lambda: root.sleep(0.4))
    assert leaving.get(timeout=5) == "left"
    assert borrower.get(timeout=5) == 0.4
    assert lends and all(glet is leaving for glet in lends)
    assert [root.echo(n) for n in range(3)] == [0, 1, 2]  # still read after the late reply


def test_a_callback_chain_reads_its_replies_where_they_are_awaited(pair, monkeypatch):
    """Each level of a chain borrows the baton from the level below and gives it back."""
    lends = _count_lends(monkeypatch)
    _, client = pair
    bounce = client.root.bounce

    def callback(level):
        return bounce(callback, level)

    assert bounce(callback, 20) == 20
    assert len(lends) >= 19  # every nested level on the client but the first
    assert client._hub._baton.lenders == []


def _timed_wait(baton, seconds):
    """`wait_readable` by the holder with a deadline `seconds` away: (reason, seconds taken)."""
    started = time.monotonic()
    reason = baton.wait_readable(gevent.getcurrent(), False, started + seconds)
    return reason, time.monotonic() - started


def test_each_timed_wait_ends_at_its_own_deadline():
    """The deadline timer outlives a wait (`_sleep_until`): a later wait with an
    earlier deadline re-arms it, one with a later deadline is re-armed for when
    the earlier one fires, and bytes still end a wait at once."""
    baton, channel, peer = _baton()
    baton.holder = gevent.getcurrent()
    gevent.spawn_later(0.05, peer.sendall, b"x")
    assert _timed_wait(baton, 5.0)[0] == 1  # READABLE, long before its deadline
    channel.stream.sock.recv(1)
    reason, took = _timed_wait(baton, 0.2)  # earlier than the armed 5 s
    assert reason == 3 and 0.15 <= took < 2.0  # TIMEOUT
    baton._timer_at = time.monotonic() + 0.1  # as if armed by an earlier wait
    baton._arm_deadline_timer(baton._timer_at)
    reason, took = _timed_wait(baton, 0.4)  # the timer fires at 0.1 and re-arms
    assert reason == 3 and 0.35 <= took < 2.0
    channel.close()
    peer.close()


def test_an_armed_deadline_timer_does_not_keep_the_loop_running():
    """After the wait, the timer stays armed for the next one but does not hold
    the hub: `gevent.wait()` returns when nothing else is pending."""
    baton, channel, peer = _baton()
    baton.holder = gevent.getcurrent()
    peer.sendall(b"x")
    assert _timed_wait(baton, 30.0)[0] == 1
    assert baton._deadline_timer is not None
    channel.stream.sock.recv(1)
    baton._watcher.close()  # the channel's own watcher is not what this test is about
    baton._watcher = None
    started = time.monotonic()
    gevent.wait(timeout=5)
    assert time.monotonic() - started < 2.0
    channel.close()
    peer.close()


def test_the_watcher_stays_on_for_a_holder_that_waits_again_and_stops_with_nobody_waiting():
    from grpyc._baton import READABLE

    baton, channel, peer = _baton()
    me = gevent.getcurrent()
    baton.take(me, None)
    peer.sendall(b"x")
    assert baton.wait_readable(me, False, time.monotonic() + 2) == READABLE
    assert baton._watcher.active  # kept for the next wait: no stop and start per request
    channel.stream.read_some(16)
    peer.sendall(b"y")  # readable again, and nobody waits now
    woken = []
    baton.on_dormant_readable = lambda: woken.append(1)
    gevent.sleep(0.05)  # the loop turns: the watcher finds nobody waiting
    assert not baton._watcher.active  # stopped at once, not firing on every turn
    assert woken == []  # the holder reads it when it gets back (not dormant)
    assert baton.wait_readable(me, False, time.monotonic() + 2) == READABLE
    channel.close()
    peer.close()
