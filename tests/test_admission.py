"""grpyc._admission: handler greenlets are reused, bounded, retired and killed."""

import gc
import time
import weakref
from types import SimpleNamespace

import gevent
import gevent.event
import pytest

from grpyc import _admission


def _settle(check, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        gevent.sleep(0.01)
    return check()


def test_a_finished_handler_runs_the_next_request(make_hub):
    hub, _, _, _ = make_hub()
    ran_in = []
    hub.submit(lambda: (ran_in.append(gevent.getcurrent()), gevent.sleep(0)))
    assert _settle(lambda: hub.running_handlers == 0 and hub._admission.idle == 1)
    hub.submit(lambda: ran_in.append(gevent.getcurrent()))
    assert _settle(lambda: len(ran_in) == 2)
    assert ran_in[0] is ran_in[1]
    assert not ran_in[0].dead


def test_an_idle_handler_keeps_nothing_of_its_last_request(make_hub):
    hub, _, _, _ = make_hub()

    class Big:
        pass

    request = Big()
    gone = weakref.ref(request)
    hub.submit(lambda value: gevent.sleep(0), request)
    del request
    assert _settle(lambda: hub._admission.idle == 1)
    gc.collect()
    assert gone() is None


def test_idle_handlers_are_capped_and_retire(make_hub, monkeypatch):
    monkeypatch.setattr(_admission, "IDLE_MAX", 2)
    monkeypatch.setattr(_admission, "IDLE_SECONDS", 0.2)
    hub, _, _, _ = make_hub(max_concurrent_requests=8)
    release = gevent.event.Event()
    handlers = []

    def job():
        handlers.append(gevent.getcurrent())
        release.wait(5)

    for _ in range(4):
        assert hub.submit(job)
    assert _settle(lambda: len(handlers) == 4)
    release.set()
    assert _settle(lambda: hub.running_handlers == 0)
    assert _settle(lambda: sum(not glet.dead for glet in handlers) == 2)
    assert hub._admission.idle == 2
    began = time.monotonic()
    assert _settle(lambda: all(glet.dead for glet in handlers), timeout=3)
    assert hub._admission.idle == 0
    assert time.monotonic() - began >= 0.1  # retired after IDLE_SECONDS, not at once


def test_shutdown_kills_idle_handlers(make_hub):
    hub, _, _, _ = make_hub()
    handlers = []
    hub.submit(lambda: handlers.append(gevent.getcurrent()))
    assert _settle(lambda: hub._admission.idle == 1)
    hub.shutdown(EOFError("done"))
    assert _settle(lambda: handlers[0].dead)
    assert hub._admission.idle == 0


@pytest.mark.parametrize("killed_while", ["idle", "handed_a_request"])
def test_a_killed_idle_handler_loses_no_request(make_hub, killed_while):
    hub, _, _, _ = make_hub()
    handlers, ran = [], []
    hub.submit(lambda: handlers.append(gevent.getcurrent()))
    assert _settle(lambda: hub._admission.idle == 1)
    if killed_while == "idle":
        handlers[0].kill()
        assert hub.submit(lambda: ran.append(gevent.getcurrent()))
        assert _settle(lambda: len(ran) == 1)
        assert ran[0] is not handlers[0]
    else:
        handlers[0].kill(block=False)  # queued: lands before ...
        assert hub.submit(lambda: ran.append(gevent.getcurrent()))  # ... this hand-over
        assert _settle(lambda: len(ran) == 1)  # another handler ran it
        assert ran[0] is not handlers[0]
        assert _settle(lambda: hub.running_handlers == 0)


def test_idle_handlers_serve_only_their_own_connection(make_hub):
    """Greenlet-local state a request leaves behind never reaches another connection."""
    first, _, _, _ = make_hub()
    second, _, _, _ = make_hub()
    ran_in = []
    first.submit(lambda: ran_in.append(gevent.getcurrent()))
    assert _settle(lambda: first._admission.idle == 1)
    second.submit(lambda: ran_in.append(gevent.getcurrent()))
    assert _settle(lambda: len(ran_in) == 2)
    assert ran_in[0] is not ran_in[1]
    first.submit(lambda: ran_in.append(gevent.getcurrent()))
    assert _settle(lambda: len(ran_in) == 3)
    assert ran_in[2] is ran_in[0]


def _admission_of(**limits):
    from grpyc.config import Limits

    values = {
        "max_concurrent_requests": 2,
        "max_queued_requests": 1,
        "max_request_bytes": 1 << 30,
        "max_send_buffer": 1 << 20,
    }
    values.update(limits)
    idle_calls = []
    waiters = []
    admission = _admission.Admission(
        Limits(**values),
        lambda: idle_calls.append(1),
        gevent.get_hub(),
        SimpleNamespace(idle=waiters),
    )
    return admission, idle_calls, waiters


def test_enter_inline_takes_what_admit_would_run_now_and_nothing_else():
    admission, _, _ = _admission_of(max_concurrent_requests=2)
    first, second, third = object(), object(), object()
    charged = admission.enter_inline(first, 10)
    assert charged == 10 + _admission.HANDLER_COST
    assert admission.running == 1 and admission.bytes_in_flight == charged
    assert admission.enter_inline(second, 10) is not None
    assert admission.enter_inline(third, 10) is None  # both handlers busy
    assert admission.admit(10) == (False, 10 + _admission.HANDLER_COST)  # queued instead
    admission.enqueue(lambda: None, (), 10 + _admission.HANDLER_COST)
    admission.nested_wait(first)  # a handler waiting on a nested call frees a place...
    assert admission.enter_inline(third, 10) is None  # ...but a queued request goes first


def test_enter_inline_respects_the_byte_budget():
    budget = 3 * _admission.HANDLER_COST
    admission, _, _ = _admission_of(max_concurrent_requests=8, max_request_bytes=budget)
    assert admission.enter_inline(object(), _admission.HANDLER_COST) is not None
    assert admission.enter_inline(object(), _admission.HANDLER_COST) is None
    assert admission.admit(_admission.HANDLER_COST) is None  # refused: admit agrees


def test_the_idle_callback_runs_only_when_someone_waits_for_idleness():
    admission, idle_calls, waiters = _admission_of()
    glet = object()
    admission.finish(glet, admission.enter_inline(glet, 0))
    assert idle_calls == [] and admission.is_idle()
    waiters.append("a waiter")
    admission.finish(glet, admission.enter_inline(glet, 0))
    assert idle_calls == [1]
