"""RPyC programs that do not run gevent (plain threads, blocking waits), side by side with stock.

Each scenario of `tests.plain_threads.client` is an RPyC program run three
ways against the same stock rpyc server process: on stock rpyc, on grpyc
without monkey patching (its plain-thread runtime) and on grpyc after
``gevent.monkey.patch_all()``. grpyc must observe what stock observes;
where stock is slow (threads sharing a connection with callbacks), grpyc
must also meet the time bound.
"""

import json
import subprocess
import sys

import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
MODES = [("stock", "plain"), ("grpyc", "plain"), ("grpyc", "patched")]


@pytest.fixture(scope="module")
def stock_port():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.plain_threads.service"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def run_everywhere(scenario, port, timeout=40):
    """The scenario's JSON result on stock, grpyc and grpyc patched (run at once)."""
    procs = {
        mode: subprocess.Popen(
            [sys.executable, "-m", "tests.plain_threads.client", *mode, scenario, str(port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in MODES
    }
    results = {}
    for mode, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{scenario} on {mode} hung: {err[-2000:]}")
        assert proc.returncode == 0, f"{scenario} on {mode} failed: {err[-2000:]}"
        results[mode] = json.loads(out.strip().splitlines()[-1])
    return results


def assert_same_as_stock(results):
    stock = results[("stock", "plain")]
    for mode in MODES[1:]:
        assert results[mode] == stock, (mode, results[mode], stock)


def assert_no_stall(results, mode):
    """No wait for a timeout: the calls took under 2 s, or no longer than stock's
    (the three modes run at once; on a slow machine stock takes ~10 s for
    64 threads with callbacks). Before the fix, plain threads stalled 30 s."""
    if mode[0] == "grpyc":
        elapsed = results[mode]["elapsed"]
        assert elapsed < max(2.0, results[("stock", "plain")]["elapsed"]), (mode, elapsed)


def test_call_after_blocking_outside_gevent_is_not_timed_out(stock_port):
    # The thread sleeps (plain time.sleep) longer than sync_request_timeout,
    # before and after poll/poll_all/serve: the next call still succeeds.
    results = run_everywhere("stale_clock", stock_port)
    assert results[("stock", "plain")]["sleep"] == [3, True]
    assert_same_as_stock(results)


@pytest.mark.parametrize("scenario", ["threads_8x20", "threads_64x20"])
def test_threads_share_one_connection_while_its_thread_blocks_in_join(stock_port, scenario):
    results = run_everywhere(scenario, stock_port)
    calls = 8 * 20 if scenario == "threads_8x20" else 64 * 20
    for result in results.values():
        assert result["ok"] == calls
        assert result["errors"] == []
    assert_no_stall(results, ("grpyc", "plain"))
    assert_no_stall(results, ("grpyc", "patched"))


@pytest.mark.parametrize(
    "scenario", ["threads_8x20_callbacks", "threads_64x20_callbacks", "threads_8x5_callbacks_bg"]
)
def test_threads_with_callbacks_through_one_connection(stock_port, scenario):
    results = run_everywhere(scenario, stock_port)
    for mode in MODES:
        assert (results[mode]["ok"], results[mode]["errors"]) == (
            results[("stock", "plain")]["ok"],
            [],
        ), mode
        assert_no_stall(results, mode)


def test_bg_serving_thread_serves_callbacks_while_the_main_thread_blocks(stock_port):
    results = run_everywhere("bg_event", stock_port)
    assert results[("stock", "plain")] == {
        "fired": True,
        "call_while_callback_blocks": 5,
        "fast": True,
    }
    assert_same_as_stock(results)


def test_async_result_completes_without_gevent(stock_port):
    results = run_everywhere("async_result", stock_port)
    assert results[("stock", "plain")] == {
        "ready_by_polling": True,
        "ready_in_time": True,
        "error": True,
        "callbacks_ran_by_wait": [5],
        "callback_on_ready_result": [5, 6],
        "expiry": True,
        "expired_after_late_reply": [True, False],
    }
    assert_same_as_stock(results)


def test_serve_and_poll_report_messages_waiting(stock_port):
    results = run_everywhere("serve_and_poll", stock_port)
    assert results[("stock", "plain")] == {
        "poll_with_reply_waiting": True,
        "ready": True,
        "serve_with_callback_waiting": True,
        "serve_fast": True,
    }
    assert_same_as_stock(results)


def test_close_inside_a_callback_lets_the_callback_finish(stock_port):
    results = run_everywhere("close_in_callback", stock_port)
    assert results[("stock", "plain")] == {"steps": ["EOFError", "after", "before"], "closed": True}
    assert_same_as_stock(results)


def test_spawn_starts_a_thread_that_runs_while_the_caller_sleeps(stock_port):
    results = run_everywhere("spawn_thread", stock_port)
    assert results[("stock", "plain")] == {"ran": True, "is_alive_attr": True}
    assert_same_as_stock(results)


def test_big_values_from_plain_threads(stock_port):
    # Megabytes sent (as pieces of a vectored write) and received (read into
    # their own buffer) on the plain-threads runtime, against a stock server.
    results = run_everywhere("big_values", stock_port)
    assert results[("stock", "plain")] == {
        "add": True,
        "callback": True,
        "text": True,
        "threads": 4,
    }
    assert_same_as_stock(results)
