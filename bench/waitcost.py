"""What a process's way of waiting costs a round trip: ``python -m bench.waitcost``.

    python -m bench.waitcost [--count 20000] [--rounds 2] [--fork]

A 24-byte ping-pong between two processes on one CPU, with no RPC code at
all, for each way of waiting for the next message on both sides:

- ``blocking``: a plain socket's ``recv`` blocks in the kernel (stock
  rpyc's threaded client and server wait so);
- ``epoll``: a non-blocking socket, and ``select.epoll`` when it is empty;
- ``hub``: a non-blocking socket, and a libev watcher waited on through
  gevent's hub when it is empty (a greenlet switch and a turn of the loop:
  how grpyc waits);
- ``gevent-socket``: a gevent socket's ``recv``/``sendall`` (gevent's own
  Python wrapper around the same wait).

For each style it prints the time per round trip, each side's user and
system CPU per round trip (the client's from ``os.times()``, the server's
from /proc/PID/stat) and the context switches and page faults of both,
beside what one wait through the hub costs in a warm loop in one process.

``--fork`` runs each pair a second time with the server forked from the
client: the two processes then share every page neither wrote since the
fork. Whatever gets cheaper so is the cost of each process finding its own
memory evicted by the other one on the shared CPU, not of the wait itself.
"""

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time

from bench.proc import context_switches, cpu_times, minor_faults

_MESSAGE = b"x" * 24
STYLES = ("blocking", "epoll", "hub", "gevent-socket")


def _endpoint(style, sock):
    """``(send, recv)`` for `sock` that wait the way `style` says."""
    if style == "blocking":
        return sock.sendall, lambda: sock.recv(64)
    if style == "gevent-socket":
        import gevent.socket

        sock = gevent.socket.socket(fileno=sock.detach())
        return sock.sendall, lambda: sock.recv(64)
    sock.setblocking(False)
    if style == "epoll":
        poller = select.epoll()
        poller.register(sock.fileno(), select.EPOLLIN)

        def wait():
            poller.poll()

    else:
        from gevent import get_hub

        hub = get_hub()
        watcher = hub.loop.io(sock.fileno(), 1)

        def wait():
            hub.wait(watcher)

    def recv():
        while True:
            try:
                return sock.recv(64)
            except BlockingIOError:
                wait()

    return sock.send, recv


def _listener():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def serve(style, cpu, listener=None):
    """Server child: echo one connection's messages until it closes."""
    os.sched_setaffinity(0, {cpu})
    if listener is None:
        listener = _listener()
        print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send, recv = _endpoint(style, conn)
    while True:
        data = recv()
        if not data:
            return
        send(data)


def ping(style, port, server_pid, count, cpu):
    """Client child: ``count`` round trips; prints one JSON line of figures."""
    os.sched_setaffinity(0, {cpu})
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send, recv = _endpoint(style, sock)
    for _ in range(count // 10):  # warm-up
        send(_MESSAGE)
        recv()
    pids = (os.getpid(), server_pid)
    switches_before = sum(map(context_switches, pids))
    faults_before = sum(map(minor_faults, pids))
    server_before, client_before = cpu_times(server_pid), os.times()
    began = time.perf_counter()
    for _ in range(count):
        send(_MESSAGE)
        recv()
    wall = time.perf_counter() - began
    client_after, server_after = os.times(), cpu_times(server_pid)
    switches = sum(map(context_switches, pids)) - switches_before
    faults = sum(map(minor_faults, pids)) - faults_before

    def per_trip(before, after):
        return round((after - before) / count * 1e6, 1)

    figures = {
        "µs per round trip": round(wall / count * 1e6, 1),
        "client user": per_trip(client_before.user, client_after.user),
        "client sys": per_trip(client_before.system, client_after.system),
        "server user": per_trip(server_before[0], server_after[0]),
        "server sys": per_trip(server_before[1], server_after[1]),
        "context switches": round(switches / count, 2),
        "page faults": round(faults / count, 2),
    }
    print(json.dumps(figures, ensure_ascii=False))


def in_process_hub_wait(count):
    """µs per wait of a greenlet woken through the hub, warm, in one process."""
    import gevent
    from gevent.hub import Waiter

    loop = gevent.get_hub().loop
    began = time.perf_counter()
    for _ in range(count):
        waiter = Waiter()
        loop.run_callback(waiter.switch, None)
        waiter.get()
    return (time.perf_counter() - began) / count * 1e6


def ping_forked(server_style, client_style, count, cpu):
    """Client child that forks its server: both processes share every page
    neither has written since (code objects, interned names, ...)."""
    listener = _listener()
    server_pid = os.fork()
    if server_pid == 0:
        try:
            serve(server_style, cpu, listener)
        finally:
            os._exit(0)
    try:
        ping(client_style, listener.getsockname()[1], server_pid, count, cpu)
    finally:
        os.kill(server_pid, 9)
        os.waitpid(server_pid, 0)


def run_forked(server_style, client_style, count, cpu=0):
    """`run_pair` with the server forked from the client child (`ping_forked`)."""
    command = [sys.executable, "-m", "bench.waitcost", "--forked", server_style]
    command += ["--ping", client_style, "--count", str(count), "--cpu", str(cpu)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout)


def run_pair(server_style, client_style, count, cpu=0):
    """One server child and one client child; the client's figures."""
    command = [sys.executable, "-m", "bench.waitcost"]
    serve_command = [*command, "--serve", server_style, "--cpu", str(cpu)]
    with subprocess.Popen(serve_command, stdout=subprocess.PIPE, text=True) as server:
        try:
            port = int(server.stdout.readline())
            ping_command = [*command, "--ping", client_style, "--port", str(port)]
            ping_command += ["--server-pid", str(server.pid), "--count", str(count)]
            done = subprocess.run(
                [*ping_command, "--cpu", str(cpu)],
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
            return json.loads(done.stdout)
        finally:
            server.kill()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.waitcost")
    parser.add_argument("--count", type=int, default=20000, help="round trips per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", choices=STYLES, help=argparse.SUPPRESS)
    parser.add_argument("--ping", choices=STYLES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--forked", choices=STYLES, help=argparse.SUPPRESS)
    parser.add_argument(
        "--fork",
        action="store_true",
        help="also run each pair with the server forked from the client (shared pages)",
    )
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.cpu)
        return
    if args.forked:
        ping_forked(args.forked, args.ping, args.count, args.cpu)
        return
    if args.ping:
        ping(args.ping, args.port, args.server_pid, args.count, args.cpu)
        return
    print(f"in-process hub wait: {in_process_hub_wait(args.count):.2f} µs")
    pairs = [(style, style) for style in STYLES] + [("blocking", "hub"), ("hub", "blocking")]
    for _ in range(args.rounds):
        for server_style, client_style in pairs:
            figures = run_pair(server_style, client_style, args.count)
            pair = f"server {server_style:13s} client {client_style:13s}"
            print(pair, json.dumps(figures, ensure_ascii=False), flush=True)
            if args.fork:
                figures = run_forked(server_style, client_style, args.count)
                print(pair, "forked", json.dumps(figures, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
