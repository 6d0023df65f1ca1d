"""AsyncResult: RPyC semantics and gevent waiting."""

import threading
import time

import gevent
import pytest

from grpyc import consts
from grpyc.async_ import AsyncResult, AsyncResultTimeout


def call_async(client, name, *args, timeout=None):
    return client.async_request(
        consts.HANDLE_CALLATTR, client.root, name, args, (), timeout=timeout
    )


def test_value_ready_and_error_flags(pair):
    _, client = pair
    ok = call_async(client, "echo", 1)
    bad = call_async(client, "fail", "nope")
    assert ok.value == 1
    assert ok.ready
    assert not ok.error
    with pytest.raises(ValueError, match="nope"):
        bad.value
    assert bad.ready
    assert bad.error
    assert "error" in repr(bad)


def test_wait_then_value(pair):
    _, client = pair
    result = call_async(client, "sleep", 0.05)
    assert not result.ready
    result.wait()
    assert result.ready
    assert result.value == 0.05


def test_set_expiry_makes_wait_raise(pair):
    _, client = pair
    result = call_async(client, "sleep", 0.5)
    result.set_expiry(0.05)
    with pytest.raises(AsyncResultTimeout, match="expired"):
        result.wait()
    assert result.expired
    assert isinstance(AsyncResultTimeout("x"), TimeoutError)


def test_add_callback_before_and_after_arrival(pair):
    _, client = pair
    seen = []
    done = gevent.event.Event()

    def callback(res):
        seen.append(res.value)
        if len(seen) == 2:
            done.set()

    result = call_async(client, "echo", "x")
    result.add_callback(callback)
    result.wait()
    result.add_callback(callback)
    assert done.wait(2)
    assert seen == ["x", "x"]


def test_gevent_iwait_yields_results_as_they_arrive(pair):
    _, client = pair
    results = [call_async(client, "sleep", t) for t in (0.15, 0.01, 0.08)]
    order = [res.value for res in gevent.iwait(results, timeout=5)]
    assert order == [0.01, 0.08, 0.15]
    assert all(isinstance(res, AsyncResult) for res in results)


def test_gevent_wait_wakes_at_the_expiry(pair):
    """A result that expires wakes gevent.wait() then, not at its own timeout
    (or never, without one); one that arrives first is waited as usual."""
    _, client = pair
    late = call_async(client, "sleep", 0.5)  # as short as can tell expiry from arrival
    late.set_expiry(0.05)
    began = time.monotonic()
    assert gevent.wait([late]) == [late]
    assert late.expired
    assert time.monotonic() - began < 0.45  # woken at the expiry, before the reply
    prompt = call_async(client, "sleep", 0.01)
    prompt.set_expiry(5)
    assert gevent.wait([prompt], timeout=5) == [prompt]
    assert prompt.value == 0.01


def test_value_from_a_foreign_thread(pair):
    _, client = pair
    result = call_async(client, "sleep", 0.05)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(result.value))
    thread.start()
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        gevent.sleep(0.01)
    thread.join(1)
    assert seen == [0.05]
