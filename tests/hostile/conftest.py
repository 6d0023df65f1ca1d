"""Fixtures for the hostile tests: a live server, a raw-bytes peer, a server process."""

import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import gevent
import pytest
from gevent import socket

import grpyc
from grpyc import brine, consts
from grpyc.channel import FrameDecoder
from grpyc.server import Server
from tests.hostile.server_proc import HostileTargetService

ROOT = Path(__file__).resolve().parents[2]

V, T, L, R = consts.LABEL_VALUE, consts.LABEL_TUPLE, consts.LABEL_LOCAL_REF, consts.LABEL_REMOTE_REF


def frame(payload, compressed=False, length=None, trailer=b"\n"):
    """One frame on the wire, built by hand so a test can lie in any field."""
    size = len(payload) if length is None else length
    return struct.pack("!LB", size, int(compressed)) + payload + trailer


def zlib_bomb(inflated_mib):
    """A ~1 KiB-per-MiB zlib stream that inflates to `inflated_mib` MiB of zeros.

    Built without compressing gigabytes: after a full flush deflate starts
    afresh, so the block for each MiB of zeros is the same bytes; the zlib
    trailer is the Adler-32 of n zeros, which is ``(n % 65521) << 16 | 1``.
    """
    packer = zlib.compressobj(9)
    chunk = bytes(1024 * 1024)
    head = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    final_block = packer.flush()[:-4]
    adler = (inflated_mib * len(chunk) % 65521) << 16 | 1
    return head + block * (inflated_mib - 1) + final_block + struct.pack("!L", adler)


def request(seq, handler, boxed_args):
    """A request message payload (PROTOCOL.md section 2)."""
    return b"\x01" + brine.dump((seq, (handler, boxed_args)))


def boxed(*items):
    """The box of an argument tuple whose items are already boxed."""
    return (T, tuple(items))


class RawPeer:
    """A client that speaks raw bytes to a server over a plain gevent socket."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        # Small request, small answer: without this, Nagle waits for a delayed ACK.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder()

    def send(self, data):
        self.sock.sendall(data)

    def send_request(self, seq, handler, boxed_args):
        self.send(frame(request(seq, handler, boxed_args)))

    def recv_frame(self, timeout=5.0):
        """The next payload; None when the server closed the connection."""
        with gevent.Timeout(timeout, TimeoutError(f"no frame within {timeout} s")):
            while True:
                payload = self.decoder.next_frame()
                if payload is not None:
                    return payload
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError:
                    return None
                if not data:
                    return None
                self.decoder.feed(data)

    def recv_message(self, timeout=5.0):
        """``(msg_type, seq, body)`` of the next message; None on close."""
        payload = self.recv_frame(timeout)
        if payload is None:
            return None
        seq, body = brine.load(payload[1:])
        return payload[0], seq, body

    def call(self, seq, handler, boxed_args, timeout=5.0):
        """Send a request and return the answer to it (skipping other messages)."""
        self.send_request(seq, handler, boxed_args)
        while True:
            message = self.recv_message(timeout)
            if message is None or (message[1] == seq and message[0] != consts.MSG_REQUEST):
                return message

    def root_id_pack(self):
        msg, _, body = self.call(10**6, consts.HANDLE_GETROOT, boxed())
        assert msg == consts.MSG_REPLY and body[0] == R
        return body[1]

    def wait_closed(self, timeout=5.0):
        """True once the server closed the connection (EOF or reset)."""
        with gevent.Timeout(timeout, False):
            while True:
                try:
                    if not self.sock.recv(65536):
                        return True
                except OSError:
                    return True
        return False

    def close(self):
        self.sock.close()


def exception_text(message):
    """``"Type: message"`` of an exception reply, for exact assertions."""
    msg, _, body = message
    assert msg == consts.MSG_EXCEPTION, f"expected an exception reply, got {message!r}"
    (_module, name), args = body[0], body[1]
    return f"{name}: {args[0] if args else ''}"


def assert_serves(port, timeout=5):
    """A well-behaved client still gets answers from the server at `port`."""
    conn = grpyc.connect("127.0.0.1", port, config={"sync_request_timeout": timeout})
    try:
        assert conn.root.echo(("still", "here")) == ("still", "here")
    finally:
        conn.close()


@pytest.fixture
def make_server():
    """Factory: ``make_server(**server_kwargs)``, a listening in-process server."""
    servers = []

    def make(**kwargs):
        server = Server(HostileTargetService, hostname="127.0.0.1", port=0, **kwargs)
        server.listen()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def raw_peers():
    """Factory: ``raw_peers(port)``, a connected `RawPeer`; all closed afterwards."""
    peers = []

    def make(port):
        peer = RawPeer(port)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


class ServerProcess:
    """`tests.hostile.server_proc` in a subprocess, with its memory figures."""

    def __init__(self, options=None):
        # A file, not a pipe: a chatty log must never block the server.
        self.log_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile.server_proc", json.dumps(options or {})],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError(f"server process did not start: {self.read_log()!r}")
        self.port = int(line)
        self.pid = self.proc.pid

    def status_kib(self, key):
        """A ``/proc/PID/status`` figure in KiB (VmHWM: peak RSS, VmRSS: now)."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """Stop the server; returns its stderr (the log)."""
        alive = self.alive()
        self.proc.stdin.close()
        if alive:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        log = self.read_log()
        self.proc.stdout.close()
        self.log_file.close()
        return log

    def read_log(self):
        self.log_file.seek(0)
        return self.log_file.read().decode(errors="replace")


@pytest.fixture
def server_process():
    """Factory: ``server_process(options)``, a `ServerProcess`; stopped afterwards."""
    started = []

    def start(options=None):
        process = ServerProcess(options)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
