"""Stock rpyc 6.0.2 peers: a server subprocess, and clients in OS threads."""

import os
import subprocess
import sys
from pathlib import Path

import gevent
import pytest

ROOT = Path(__file__).resolve().parents[2]


def start_rpyc_server(*args):
    """Start tests/interop/rpyc_peer.py; returns (process, port)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.interop.rpyc_peer", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("stock rpyc server did not start")
    return proc, int(line)


def stop_process(proc):
    proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


@pytest.fixture(scope="module")
def rpyc_server():
    """Port of a stock rpyc ThreadedServer (StockService) on 127.0.0.1."""
    proc, port = start_rpyc_server()
    yield port
    stop_process(proc)


def in_os_thread(func, *args, timeout=20):
    """Run blocking stock-rpyc code in a real OS thread; the hub keeps running."""
    return gevent.get_hub().threadpool.spawn(func, *args).get(timeout=timeout)


def run_script(script, *args, timeout=60):
    """Run a Python `script` with `args` in a child process (the repository on its
    path; a script may ``monkey.patch_all()`` first); its stdout, once it exited with 0."""
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
