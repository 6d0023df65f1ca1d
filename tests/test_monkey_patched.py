"""grpyc under gevent.monkey.patch_all(), in a subprocess (patching is process-wide)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import threading
    import time

    import grpyc
    from grpyc.server import Server


    class Svc(grpyc.Service):
        def exposed_sleep(self, t):
            time.sleep(t)  # patched: yields
            return t

        def exposed_call(self, func, value):
            return func(value)


    server = Server(Svc, hostname="127.0.0.1", port=0)
    server.listen()
    conn = grpyc.connect("127.0.0.1", server.port)
    root = conn.root
    assert root.call(lambda v: v + 1, 41) == 42

    results = []
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: results.append(root.sleep(0.2)))
               for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert results == [0.2] * 10, results
    assert elapsed < 1.0, elapsed
    conn.close()
    server.close()
    print("patched-ok", round(elapsed, 2))
""")


def test_calls_callbacks_and_overlap_under_patch_all():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("patched-ok")
