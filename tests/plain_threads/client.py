"""Plain-thread RPyC client scenarios, run unchanged on stock rpyc and on grpyc.

``python -m tests.plain_threads.client IMPL MODE SCENARIO PORT`` prints one
JSON line: what the scenario observed. IMPL is ``stock`` (real rpyc) or
``grpyc`` (``grpyc.install_as_rpyc()``, then ``import rpyc``); MODE is
``plain`` or ``patched`` (``gevent.monkey.patch_all()`` first). The code of
each scenario is RPyC code: only the two lines choosing the implementation
differ.
"""

import json
import sys


def choose(impl, mode):
    if mode == "patched":
        from gevent import monkey

        monkey.patch_all()
    if impl == "grpyc":
        import grpyc

        grpyc.install_as_rpyc()
    import rpyc

    return rpyc


IMPL, MODE, SCENARIO, PORT = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rpyc = choose(IMPL, MODE)

import threading  # noqa: E402 - after the optional monkey patching
import time  # noqa: E402

CONFIG = {"allow_public_attrs": True, "sync_request_timeout": 5}


def connect():
    return rpyc.connect("127.0.0.1", PORT, config=dict(CONFIG))


def stale_clock():
    """A call after the calling thread blocked outside gevent (longer than the timeout)."""
    conn = connect()
    conn._config["sync_request_timeout"] = 1
    results = {}
    conn.root.add(1, 1)
    for label, before in (
        ("sleep", lambda: time.sleep(1.3)),
        ("poll", lambda: (conn.poll(), time.sleep(1.3))),
        ("poll_all", lambda: (conn.poll_all(0.05), time.sleep(1.3))),
        ("serve", lambda: (conn.serve(0.05), time.sleep(1.3))),
    ):
        before()
        started = time.monotonic()
        try:
            results[label] = [conn.root.add(1, 2), time.monotonic() - started < 0.5]
        except Exception as exc:
            results[label] = [type(exc).__name__, time.monotonic() - started < 0.5]
    conn.close()
    return results


def threads_share(count, calls, with_callback, background=False):
    """`count` threads make `calls` calls each through one connection while
    the thread that made it blocks in ``join()``."""
    conn = connect()
    root = conn.root
    bg = rpyc.BgServingThread(conn) if background else None
    ok = []
    errors = []

    def work(n):
        for i in range(calls):
            try:
                if with_callback:
                    value = root.call(lambda x: x * 2, n * 1000 + i)
                    expected = 2 * (n * 1000 + i)
                else:
                    value = root.add(n, i)
                    expected = n + i
                ok.append(value == expected)
            except Exception as exc:
                errors.append(type(exc).__name__)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # the connection's thread blocks outside gevent
    elapsed = time.monotonic() - started
    if bg is not None:
        bg.stop()
    conn.close()
    return {"ok": sum(ok), "errors": sorted(set(errors)), "elapsed": elapsed}


def bg_event():
    """A callback the server makes later sets an Event the main thread waits on."""
    conn = connect()
    bg = rpyc.BgServingThread(conn)
    fired = threading.Event()
    conn.root.call_later(fired.set, 0.1)
    got = fired.wait(5)
    # A callback that blocks on a threading primitive blocks its serving thread only.
    release = threading.Event()
    conn.root.call_later(lambda: release.wait(5), 0.05)
    time.sleep(0.3)
    started = time.monotonic()
    value = conn.root.add(2, 3)
    fast = time.monotonic() - started < 1
    release.set()
    bg.stop()
    conn.close()
    return {"fired": got, "call_while_callback_blocks": value, "fast": fast}


def async_result():
    conn = connect()
    out = {}
    res = rpyc.async_(conn.root.sleep)(0.2)
    started = time.monotonic()
    spins = 0
    while not res.ready and spins < 500:
        time.sleep(0.01)
        spins += 1
    out["ready_by_polling"] = res.ready
    out["ready_in_time"] = time.monotonic() - started < 2
    failing = rpyc.async_(conn.root.fail)("boom")
    spins = 0
    while not failing.ready and spins < 500:
        time.sleep(0.01)
        spins += 1
    out["error"] = failing.error
    seen = []
    res = rpyc.async_(conn.root.add)(2, 3)
    res.add_callback(lambda r: seen.append(r.value))
    res.wait()
    out["callbacks_ran_by_wait"] = list(seen)
    res.add_callback(lambda r: seen.append(r.value + 1))
    out["callback_on_ready_result"] = list(seen)
    slow = rpyc.async_(conn.root.sleep)(0.6)
    slow.set_expiry(0.3)
    started = time.monotonic()
    try:
        slow.value
        out["expiry"] = "no timeout"
    except rpyc.AsyncResultTimeout:
        out["expiry"] = 0.25 <= time.monotonic() - started < 0.55
    time.sleep(0.5)
    conn.poll_all(0.1)
    out["expired_after_late_reply"] = [slow.expired, slow.ready]
    conn.close()
    return out


def serve_and_poll():
    conn = connect()
    out = {}
    res = rpyc.async_(conn.root.add)(1, 2)
    time.sleep(0.3)  # the reply is waiting now
    out["poll_with_reply_waiting"] = conn.poll()
    out["ready"] = res.ready
    conn.root.call_later(lambda: None, 0.05)
    time.sleep(0.3)  # the callback is waiting now
    started = time.monotonic()
    out["serve_with_callback_waiting"] = conn.serve(1)
    out["serve_fast"] = time.monotonic() - started < 0.5
    conn.close()
    return out


def close_in_callback():
    conn = connect()
    steps = []

    def callback():
        steps.append("before")
        conn.close()
        steps.append("after")
        return len(steps)

    try:
        conn.root.call(callback)
    except Exception as exc:
        steps.append(type(exc).__name__)
    # Under gevent the callback runs in its own greenlet, which may finish
    # after the call it serves returned: wait for it (bounded).
    deadline = time.monotonic() + 5
    while "after" not in steps and time.monotonic() < deadline:
        time.sleep(0.01)
    steps.sort()
    return {"steps": steps, "closed": conn.closed}


def spawn_thread():
    from rpyc.lib import spawn

    ran = threading.Event()
    thread = spawn(ran.set)
    time.sleep(0.2)  # the main thread sleeps outside gevent
    return {"ran": ran.is_set(), "is_alive_attr": hasattr(thread, "is_alive")}


def big_values():
    """Megabytes each way, from one thread and from four at once."""
    conn = connect()
    big = bytes(range(256)) * 4096 * 3  # 3 MiB
    results = {
        "add": conn.root.add(big, b"!") == big + b"!",
        "callback": conn.root.call(lambda data: data[::-1], big) == big[::-1],
        "text": conn.root.add("é" * 300_000, "") == "é" * 300_000,
    }
    same = []

    def worker(index):
        data = bytes([index]) * (1 << 20)
        same.append(conn.root.add(data, bytes([index])) == data + bytes([index]))

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results["threads"] = sum(same)
    conn.close()
    return results


SCENARIOS = {
    "stale_clock": stale_clock,
    "threads_8x20": lambda: threads_share(8, 20, False),
    "threads_64x20": lambda: threads_share(64, 20, False),
    "threads_8x20_callbacks": lambda: threads_share(8, 20, True),
    "threads_64x20_callbacks": lambda: threads_share(64, 20, True),
    "threads_8x5_callbacks_bg": lambda: threads_share(8, 5, True, background=True),
    "bg_event": bg_event,
    "async_result": async_result,
    "serve_and_poll": serve_and_poll,
    "close_in_callback": close_in_callback,
    "spawn_thread": spawn_thread,
    "big_values": big_values,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[SCENARIO]()), flush=True)
