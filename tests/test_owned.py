"""The helper greenlets a connection owns (`grpyc._owned`)."""

import logging

import gevent

from grpyc._owned import OwnedGreenlets


def test_an_owned_greenlet_runs_and_its_error_is_logged_not_raised(caplog):
    owned = OwnedGreenlets("conn-x", logging.getLogger("test.owned"))
    ran = []
    owned.spawn(ran.append, 1).join(timeout=2)
    failing = owned.spawn(lambda: 1 / 0)
    failing.join(timeout=2)
    assert ran == [1]
    assert failing.successful()  # the error was handled in the greenlet
    assert any("conn-x: error in background greenlet" in r.getMessage() for r in caplog.records)
    assert owned.doomed(()) == []  # both finished: nothing left to kill


def test_the_doomed_are_the_live_owned_and_the_others_less_the_spared():
    owned = OwnedGreenlets("conn-y", logging.getLogger("test.owned"))
    sleeper = owned.spawn(gevent.sleep, 10)
    spared = owned.spawn(gevent.sleep, 10)
    other, kept = object(), object()
    gevent.sleep(0)
    with owned.sparing(spared), owned.sparing(kept):
        doomed = owned.doomed((other, kept))
    assert set(map(id, doomed)) == {id(other), id(sleeper)}
    assert owned.doomed(()) == []  # forgotten once asked for
    gevent.killall([sleeper, spared])
