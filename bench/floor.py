"""The floor: RPyC's framing over raw gevent sockets, with no RPC logic at all.

What grpyc would cost if object proxies, brine, boxing and the attribute
policy were free: the practical limit for request/reply in Python on gevent.

Wire: RPyC's frame (4-byte big-endian length, 1-byte compressed flag
(always 0), payload, newline). The payload is a 6-byte header (kind, op,
4-byte seq) and an opaque body. Each connection has one reader greenlet
(the only code that reads the socket) and a dict of pending
`gevent.event.AsyncResult` slots keyed by seq; writes of whole frames are
serialised by a semaphore.

Ops: ECHO and PING are answered by the reader itself (they never block).
CALLBACK makes the server call the client back once (PING) before it
answers. BOUNCE(d) is the nested chain: the receiver answers 0 when d is 0,
else asks the peer BOUNCE(d-1) and answers that plus one; it runs in its
own greenlet because it waits. See docs/benchmarks.md for what each
scenario means on the floor.
"""

import itertools
import socket
import struct

import gevent
import gevent.lock
import gevent.socket
from gevent.event import AsyncResult
from gevent.server import StreamServer

FRAME_HEADER = struct.Struct("!LB")
MESSAGE_HEADER = struct.Struct("!BBI")
NEWLINE = b"\n"

REQUEST = 1
REPLY = 2

OP_ECHO = 1
OP_PING = 2
OP_CALLBACK = 3
OP_BOUNCE = 4

_READ_SIZE = 64 * 1024
# A body at least this big is read straight into its own buffer (one copy).
_LARGE_BODY = 64 * 1024
# Frames up to this size go out as one joined buffer (one send syscall).
_JOIN_LIMIT = 16 * 1024


class FloorPeer:
    """One end of a floor connection; both ends run the same code."""

    def __init__(self, sock):
        self.sock = sock
        self.pending = {}
        self._seqs = itertools.count(1)
        self._send_lock = gevent.lock.Semaphore()
        self._handlers = set()
        self.closed = False

    # ------------------------------------------------------------ calling
    def call(self, op, body=b""):
        """Send a request and wait for its reply body.

        Raises:
            EOFError: the connection is closed, or closes before the reply.
        """
        if self.closed:
            raise EOFError("floor connection closed")
        seq = next(self._seqs) & 0xFFFFFFFF
        slot = AsyncResult()
        self.pending[seq] = slot
        self.send(REQUEST, op, seq, body)
        return slot.get()

    def send(self, kind, op, seq, body):
        head = FRAME_HEADER.pack(MESSAGE_HEADER.size + len(body), 0)
        head += MESSAGE_HEADER.pack(kind, op, seq)
        with self._send_lock:
            if len(body) <= _JOIN_LIMIT:
                self.sock.sendall(b"".join((head, body, NEWLINE)))
            else:
                self.sock.sendall(head)
                self.sock.sendall(body)
                self.sock.sendall(NEWLINE)

    # ------------------------------------------------------------ reading
    def read_loop(self):
        """Read frames until EOF; then fail every pending call with EOFError."""
        try:
            self._read_frames()
        except OSError:
            pass  # a reset ends the connection like EOF does
        finally:
            self.close()

    def _read_frames(self):
        recv = self.sock.recv
        data = b""
        while True:
            chunk = recv(_READ_SIZE)
            if not chunk:
                return
            data = data + chunk if data else chunk
            data = self._drain(data)

    def _drain(self, data):
        """Dispatch every whole frame in ``data``; returns the unparsed rest."""
        pos = 0
        size = len(data)
        while size - pos >= FRAME_HEADER.size:
            length, _flag = FRAME_HEADER.unpack_from(data, pos)
            start = pos + FRAME_HEADER.size
            end = start + length
            if end >= size:
                if length >= _LARGE_BODY:
                    self._dispatch(self._read_large_body(data, start, length))
                    return b""
                break
            self._dispatch(data[start:end])
            pos = end + 1
        return data[pos:]

    def _read_large_body(self, data, start, length):
        """Finish a big frame by reading into one buffer sized for it."""
        body = bytearray(length + 1)  # + the trailing newline
        view = memoryview(body)
        have = len(data) - start
        view[:have] = memoryview(data)[start:]
        recv_into = self.sock.recv_into
        while have < length + 1:
            count = recv_into(view[have:])
            if not count:
                raise EOFError("floor connection closed inside a frame")
            have += count
        return view[:length]

    def _dispatch(self, payload):
        kind, op, seq = MESSAGE_HEADER.unpack_from(payload, 0)
        body = payload[MESSAGE_HEADER.size :]
        if kind == REPLY:
            slot = self.pending.pop(seq, None)
            if slot is not None:
                slot.set(body)
        elif op in (OP_ECHO, OP_PING):
            self.send(REPLY, op, seq, body)
        else:
            handler = gevent.spawn(self._serve, op, seq, body)
            self._handlers.add(handler)
            handler.link(self._handlers.discard)

    def _serve(self, op, seq, body):
        if op == OP_CALLBACK:
            self.call(OP_PING, body)
            self.send(REPLY, op, seq, b"")
        elif op == OP_BOUNCE:
            depth = int(bytes(body))
            result = 0 if depth == 0 else int(self.call(OP_BOUNCE, b"%d" % (depth - 1))) + 1
            self.send(REPLY, op, seq, b"%d" % result)

    def close(self):
        if self.closed:
            return
        self.closed = True
        for slot in self.pending.values():
            slot.set_exception(EOFError("floor connection closed"))
        self.pending.clear()
        gevent.killall(list(self._handlers), block=False)
        self.sock.close()


# ---------------------------------------------------------------- ends
def connect(host, port):
    """A client `FloorPeer` with its reader greenlet running."""
    sock = gevent.socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer = FloorPeer(sock)
    peer.reader = gevent.spawn(peer.read_loop)
    return peer


def make_server(host="127.0.0.1", port=0):
    """A StreamServer whose per-connection greenlet is the reader itself."""

    def handle(sock, _address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        FloorPeer(sock).read_loop()

    return StreamServer((host, port), handle, backlog=4096)
