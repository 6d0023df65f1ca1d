"""grpyc._baton: who reads a cooperative connection."""

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
