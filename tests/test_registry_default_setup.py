"""The registry out of the box: default registry, default registrars, one machine.

Each test runs one scenario in a network namespace of its own (``unshare
--net``), so the default port 18811 never meets another run and broadcasts
behave alike on every machine. The namespace looks like a host on a LAN:
loopback plus ``veth0`` (10.199.0.1/24) holding the default route, so a
broadcast from an unbound socket leaves by ``veth0`` with that source, as it
would leave by ``eth0`` on a real host. ``lo_only`` namespaces have no route
at all, like a machine without a network.

Nothing is configured by hand inside: registries, servers and clients all
use their defaults (grpyc's and stock rpyc 6.0.2's), which is the point.
The scenario code below runs as ``python -m tests.test_registry_default_setup
'<json>'`` inside the namespace and prints one JSON line of results.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST_ADDRESS = "10.199.0.1"
NEIGHBOUR_ADDRESS = "10.199.0.2"
SETUPS = {
    "lan": " && ".join(
        [
            "ip link set lo up",
            "ip link add veth0 type veth peer name veth1",
            f"ip addr add {HOST_ADDRESS}/24 dev veth0",
            "ip link set veth0 up",
            "ip link set veth1 up",
            "ip route add default via 10.199.0.254 dev veth0",
        ]
    ),
    "lo_only": "ip link set lo up",
}

STOCK_REGISTRY = """
import sys, threading
from rpyc.utils.registry import UDPRegistryServer
server = UDPRegistryServer()
threading.Thread(target=server.start, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

STOCK_SERVER = """
import sys, threading
import rpyc
from rpyc.utils.server import ThreadedServer

class EchoService(rpyc.Service):
    def exposed_echo(self, value):
        return value

server = ThreadedServer(EchoService, auto_register=True)
threading.Thread(target=server.start, daemon=True).start()
print(server.port, flush=True)
sys.stdin.read()
server.close()
"""

NEIGHBOUR = f"""
import json, socket, subprocess, sys
print("ready", flush=True)
sys.stdin.readline()  # "go": veth1 is in this namespace now
for command in ("ip link set lo up", "ip addr add {NEIGHBOUR_ADDRESS}/24 dev veth1",
                "ip link set veth1 up"):
    subprocess.run(command.split(), check=True)
from grpyc import brine
replies = {{}}
probes = {{
    "broadcast_register": (("255.255.255.255", 18811),
                           brine.dump(("RPYC", "REGISTER", (("INTRUDER",), 4444)))),
    "unicast_query": (("{HOST_ADDRESS}", 18811), brine.dump(("RPYC", "QUERY", ("INTRUDER",)))),
}}
for name, (address, request) in probes.items():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("{NEIGHBOUR_ADDRESS}", 0))
        sock.settimeout(1.0)
        sock.sendto(request, address)
        try:
            replies[name] = brine.load(sock.recvfrom(1500)[0])
        except OSError as exc:
            replies[name] = type(exc).__name__
print(json.dumps(replies), flush=True)
"""


def run_scenario(setup, **spec):
    """Run ``spec`` in a fresh namespace set up by ``SETUPS[setup]``; its results."""
    script = f'{SETUPS[setup]} && exec "$0" -m tests.test_registry_default_setup "$1"'
    spec["outer_namespace"] = os.readlink("/proc/self/ns/net")
    proc = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, sys.executable, json.dumps(spec)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


# ---------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["grpyc", "stock"])
@pytest.mark.parametrize("registry", ["grpyc", "stock"])
def test_default_server_registers_with_default_registry_and_clients_find_it(registry, server):
    results = run_scenario("lan", scenario="pair", registry=registry, server=server)

    # A grpyc server binds 127.0.0.1 and registers from it; a stock server
    # binds every interface and registers from the address of the route.
    host = "127.0.0.1" if server == "grpyc" else HOST_ADDRESS
    found = [[host, results["server_port"]]]
    assert results["grpyc_discover"] == found
    assert results["grpyc_connect_by_service"] == "hello grpyc"
    assert results["stock_discover"] == found
    assert results["stock_connect_by_service"] == "hello stock"
    assert results["after_close"] == []


def test_without_any_network_grpyc_clients_ask_the_local_registry():
    results = run_scenario("lo_only", scenario="pair", registry="grpyc", server="grpyc")

    found = [["127.0.0.1", results["server_port"]]]
    assert results["grpyc_discover"] == found
    assert results["grpyc_connect_by_service"] == "hello grpyc"
    # Stock's client cannot send a broadcast without a route, and says so.
    unreachable = "OSError: [Errno 101] Network is unreachable"
    assert results["stock_discover"] == unreachable
    assert results["stock_connect_by_service"] == unreachable
    assert results["after_close"] == []


@pytest.mark.parametrize(
    ("registry_host", "expected"),
    [
        # The default: the neighbour's broadcast is ignored, its unicast
        # meets no socket, and nothing is recorded.
        (None, {"broadcast_register": "TimeoutError", "unicast_query": "TimeoutError"}),
        # Serving the LAN is a choice: then the neighbour is heard.
        (
            "0.0.0.0",
            {"broadcast_register": "OK", "unicast_query": [[NEIGHBOUR_ADDRESS, 4444]]},
        ),
    ],
)
def test_lan_neighbour_reaches_the_registry_only_when_it_serves_the_lan(registry_host, expected):
    results = run_scenario("lan", scenario="neighbour", registry_host=registry_host)

    assert results["neighbour"] == expected
    assert results["recorded"] == ([] if registry_host is None else [[NEIGHBOUR_ADDRESS, 4444]])


# ---------------------------------------------------------------------------
# the scenarios, run inside the namespace
# ---------------------------------------------------------------------------


def _start(code):
    """A stock rpyc process running ``code``; returns it and its first stdout line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise RuntimeError(f"stock process did not start: {code[:60]!r}")
    return proc, line


def _stop(proc):
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _poll(probe, done, timeout=10.0):
    """``probe()`` until ``done(result)`` or the deadline; the last result."""
    import gevent

    deadline = time.monotonic() + timeout
    result = probe()
    while not done(result) and time.monotonic() < deadline:
        gevent.sleep(0.05)
        result = probe()
    return result


def _outcome(func):
    try:
        return func()
    except Exception as exc:  # the scenario reports it; the test asserts on it
        return f"{type(exc).__name__}: {exc}"


def _in_os_thread(func):
    """Run blocking stock-rpyc code in an OS thread while this hub keeps serving."""
    import gevent

    return gevent.get_hub().threadpool.apply(_outcome, (func,))


def _stock_discover():
    import rpyc

    return [list(address) for address in rpyc.discover("ECHO")]


def _stock_connect_by_service():
    import rpyc

    conn = rpyc.connect_by_service("ECHO")
    try:
        return conn.root.echo("hello stock")
    finally:
        conn.close()


def _grpyc_connect_by_service():
    import grpyc

    conn = grpyc.connect_by_service("ECHO")
    try:
        return conn.root.echo("hello grpyc")
    finally:
        conn.close()


def _discover_now():
    from grpyc.registry import UDPRegistryClient

    return [list(address) for address in UDPRegistryClient(timeout=1).discover("ECHO")]


def _start_registry(kind, *options):
    """``grpyc registry`` (the command, with ``options``) or stock's registry
    with its defaults; returns how to stop it."""
    if kind == "stock":
        proc, _ = _start(STOCK_REGISTRY)
        return lambda: _stop(proc)
    proc = subprocess.Popen(
        [sys.executable, "-m", "grpyc", "registry", "--logfile", os.devnull, *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stderr.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"grpyc registry did not start: {line}{proc.stderr.read()}")

    def stop():
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()

    return stop


def _start_server(kind):
    if kind == "stock":
        proc, port = _start(STOCK_SERVER)
        return int(port), lambda: _stop(proc)
    import grpyc
    from grpyc.server import Server

    class EchoService(grpyc.Service):
        def exposed_echo(self, value):
            return value

    server = Server(EchoService, auto_register=True)
    server.listen()
    return server.port, server.close


def pair_scenario(registry, server):
    import grpyc

    results = {}
    stop_registry = _start_registry(registry)
    try:
        results["server_port"], stop_server = _start_server(server)
        try:
            _poll(_discover_now, bool)
            results["grpyc_discover"] = _outcome(
                lambda: [list(address) for address in grpyc.discover("ECHO")]
            )
            results["grpyc_connect_by_service"] = _outcome(_grpyc_connect_by_service)
            results["stock_discover"] = _in_os_thread(_stock_discover)
            results["stock_connect_by_service"] = _in_os_thread(_stock_connect_by_service)
        finally:
            stop_server()
        results["after_close"] = _poll(_discover_now, lambda found: not found)
    finally:
        stop_registry()
    return results


def neighbour_scenario(registry_host):
    from grpyc.registry import UDPRegistryClient

    stop_registry = _start_registry(
        "grpyc", *([] if registry_host is None else ["--host", registry_host])
    )
    neighbour = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c", NEIGHBOUR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        import gevent

        threadpool = gevent.get_hub().threadpool
        assert threadpool.apply(neighbour.stdout.readline) == "ready\n"
        # veth1 moves into the neighbour's namespace: a second host on the LAN.
        subprocess.run(["ip", "link", "set", "veth1", "netns", str(neighbour.pid)], check=True)
        neighbour.stdin.write("go\n")
        neighbour.stdin.flush()
        replies = threadpool.spawn(neighbour.stdout.read).get(timeout=20)
        recorded = UDPRegistryClient("127.0.0.1", timeout=1).discover("INTRUDER")
    finally:
        neighbour.wait(timeout=10)
        stop_registry()
    return {"neighbour": json.loads(replies), "recorded": [list(a) for a in recorded]}


SCENARIOS = {"pair": pair_scenario, "neighbour": neighbour_scenario}


def main():
    spec = json.loads(sys.argv[1])
    # A scenario binds the default ports: only ever inside a namespace of its own.
    assert os.readlink("/proc/self/ns/net") != spec.pop("outer_namespace"), "not in a namespace"
    scenario = SCENARIOS[spec.pop("scenario")]
    sys.stdout.write(json.dumps(scenario(**spec)) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
