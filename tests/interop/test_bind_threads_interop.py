"""grpyc speaks RPyC's ``bind_threads`` framing with stock peers that use it, both ways.

A stock peer with ``bind_threads`` puts two thread ids before every message
and delivers each frame to the thread it names; grpyc with
``bind_threads=True`` (or ``RPYC_BIND_THREADS=true``) addresses its frames so
that calls, callbacks at depth, exceptions and concurrent callers all reach
the right stock thread.
"""

import json
import subprocess
import sys
import threading

import pytest

import grpyc
from grpyc.server import Server
from tests.interop.bind_threads_peer import CONFIG, BoundService, probe

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
EXPECTED = {
    "add": 5,
    "call": 42,
    "bounce": 6,
    "fail": "boom",
    "threads": [100, 101, 102, 103],
}


class GrpycBoundService(grpyc.Service):
    exposed_add = BoundService.exposed_add
    exposed_call = BoundService.exposed_call
    exposed_bounce = BoundService.exposed_bounce
    exposed_fail = BoundService.exposed_fail


@pytest.fixture
def stock_bound_server():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.interop.bind_threads_peer", "server"],
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


def test_grpyc_client_with_bind_threads_talks_to_a_stock_bind_threads_server(stock_bound_server):
    outcome = {}

    def session():
        conn = grpyc.connect(
            "127.0.0.1", stock_bound_server, service=GrpycBoundService, config=dict(CONFIG)
        )
        try:
            outcome.update(probe(conn.root))
        finally:
            conn.close()

    # A plain thread: grpyc's plain-thread runtime, as an RPyC program runs.
    thread = threading.Thread(target=session)
    thread.start()
    thread.join(60)
    assert outcome == EXPECTED


def test_stock_bind_threads_client_talks_to_a_grpyc_server_with_bind_threads():
    server = Server(GrpycBoundService, hostname="127.0.0.1", port=0, protocol_config=dict(CONFIG))
    server._start_in_thread()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.interop.bind_threads_peer", "client", str(server.port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == EXPECTED


def test_environment_variable_turns_bind_threads_on_as_in_rpyc():
    code = (
        "import grpyc.config, grpyc.protocol; "
        "print(grpyc.config.DEFAULT_CONFIG['bind_threads'], "
        "grpyc.protocol.DEFAULT_CONFIG['bind_threads'])"
    )
    for value, expected in (("true", "True True"), ("false", "False False")):
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env={**__import__("os").environ, "RPYC_BIND_THREADS": value},
        )
        assert done.stdout.strip() == expected, done.stderr
