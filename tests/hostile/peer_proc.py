"""A peer in its own process, to be killed by a test at a chosen moment.

Run as ``python -m tests.hostile.peer_proc MODE [PORT]``. Each mode prints
``ready`` on stdout once it has reached the moment to be killed at, then
waits (the test sends SIGKILL). Modes:

- ``client-call PORT``: a grpyc client holding references both ways, in the
  middle of a long call to the server.
- ``client-callback PORT``: a grpyc client whose callback the server is
  running (the server waits for its answer).
- ``client-half-frame PORT``: a raw client that sent one ping and then half
  of a frame.
- ``server-half-frame``: a raw server (prints its port first) that answers
  the first request with half a frame.
"""

import socket
import struct
import sys
import time

import gevent

import grpyc
from grpyc import brine, consts
from grpyc.service import Service


def say(line):
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


class ClientSide(Service):
    """Callbacks the server may run; one of them never returns."""

    def exposed_hang(self):
        say("ready")
        gevent.sleep(3600)

    def exposed_answer(self):
        return 42


def client_call(port):
    conn = grpyc.connect("127.0.0.1", port, service=ClientSide)
    root = conn.root
    box = root.make_box(5)
    root.hold(conn._local_root.exposed_answer, [1, 2, 3])
    assert box.get() == 5
    say("ready")
    root.sleep(3600)


def client_callback(port):
    conn = grpyc.connect("127.0.0.1", port, service=ClientSide)
    conn.root.call(conn._local_root.exposed_hang)


def frame(payload):
    return struct.pack("!LB", len(payload), 0) + payload + b"\n"


def ping(seq):
    return frame(b"\x01" + brine.dump((seq, (consts.HANDLE_PING, (2, ((1, "hi"),))))))


def client_half_frame(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(ping(0))
    sock.recv(4096)
    whole = ping(1)
    sock.sendall(whole[: len(whole) // 2])
    say("ready")
    time.sleep(3600)


def server_half_frame():
    listener = socket.create_server(("127.0.0.1", 0))
    say(listener.getsockname()[1])
    sock, _ = listener.accept()
    sock.recv(65536)  # the client's first request (seq 0)
    reply = frame(b"\x02" + brine.dump((0, (1, "x" * 1000))))
    sock.sendall(reply[: len(reply) // 2])
    say("ready")
    time.sleep(3600)


def main():
    mode = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if mode == "client-call":
        client_call(port)
    elif mode == "client-callback":
        client_callback(port)
    elif mode == "client-half-frame":
        client_half_frame(port)
    elif mode == "server-half-frame":
        server_half_frame()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
