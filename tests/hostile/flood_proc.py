"""A peer that floods a server with small requests from its own process.

``python -m tests.hostile.flood_proc PORT SECONDS`` connects to 127.0.0.1:PORT
and sends PING requests back to back for SECONDS, reading (and dropping) the
replies in a second thread so the server's writes never block. Prints the
number of PINGs sent. Plain blocking sockets and threads: nothing here
yields to anyone.
"""

import socket
import struct
import sys
import threading
import time

from grpyc import brine, consts


def ping_frame(seq):
    payload = b"\x01" + brine.dump((seq, (consts.HANDLE_PING, (2, ((1, "x"),)))))
    return struct.pack("!LB", len(payload), 0) + payload + b"\n"


def main():
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def drain():
        try:
            while sock.recv(1 << 20):
                pass
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    batch = b"".join(ping_frame(seq) for seq in range(1000))
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.sendall(batch)
            sent += 1000
    except OSError:
        pass
    print(sent, flush=True)
    sock.close()


if __name__ == "__main__":
    main()
