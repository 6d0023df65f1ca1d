"""Throughput of grpyc.channel.Channel over a socketpair, next to stock rpyc's Channel.

Run from the repository root:
    PYTHONPATH=. .venv/bin/python bench/channel_bench.py [--size MiB] [--repeat N] [--variants]

Prints MB/s of payload moved one way (send in one greenlet, recv in another)
for big frames with compression off, on and "auto", on random and on
compressible data; frames/s for many small frames; and, with --variants,
the internal knobs of grpyc.channel (read size, large-body path, join limit).
"""

import argparse
import os
import statistics
import threading
import time

import gevent
from gevent import socket as gsocket

from grpyc import channel as channel_module
from grpyc.channel import Channel
from grpyc.stream import SocketStream


def _random(size):
    return b"\x01" + os.urandom(size - 1)


def _compressible(size):
    # Text-like data: compresses to ~30% at zlib level 1.
    path = os.path.join(os.path.dirname(channel_module.__file__), "channel.py")
    with open(path, "rb") as source:
        text = source.read()
    return b"\x01" + (text * (size // len(text) + 1))[: size - 1]


def _grpyc_pair(compress):
    a, b = gsocket.socketpair()
    return Channel(SocketStream(a), compress=compress), Channel(SocketStream(b))


def grpyc_transfer(payload, compress, count=1):
    sender, receiver = _grpyc_pair(compress)
    try:

        def send():
            for _ in range(count):
                sender.send(payload)

        start = time.perf_counter()
        writer = gevent.spawn(send)
        for _ in range(count):
            received = receiver.recv()
        writer.get()
        elapsed = time.perf_counter() - start
        assert len(received) == len(payload)
        return elapsed
    finally:
        sender.close()
        receiver.close()


def rpyc_transfer(payload, compress, count=1):
    import socket

    from rpyc.core.channel import Channel as RpycChannel
    from rpyc.core.stream import SocketStream as RpycSocketStream

    a, b = socket.socketpair()
    sender = RpycChannel(RpycSocketStream(a), compress=compress)
    receiver = RpycChannel(RpycSocketStream(b), compress=compress)
    try:

        def send():
            for _ in range(count):
                sender.send(payload)

        start = time.perf_counter()
        writer = threading.Thread(target=send)
        writer.start()
        for _ in range(count):
            received = receiver.recv()
        writer.join()
        elapsed = time.perf_counter() - start
        assert len(received) == len(payload)
        return elapsed
    finally:
        sender.close()
        receiver.close()


def measure(transfer, payload, compress, repeat, count=1):
    times = [transfer(payload, compress, count) for _ in range(repeat)]
    return statistics.median(times)


def big_frames(size, rpyc_size, repeat):
    # rpyc's SocketStream.write re-slices the rest of the data after every
    # send, so its time grows with the square of the frame size.
    print(
        f"== one frame: grpyc {size >> 20} MiB, rpyc 6.0.2 {rpyc_size >> 20} MiB; "
        f"median of {repeat}; MB/s of payload =="
    )
    for data_name, make in (("random", _random), ("text", _compressible)):
        for compress in (False, True, "auto"):
            row = []
            for name, transfer, nbytes in (
                ("grpyc", grpyc_transfer, size),
                ("rpyc", rpyc_transfer, rpyc_size),
            ):
                if name == "rpyc" and compress == "auto":
                    continue
                seconds = measure(transfer, make(nbytes), compress, repeat)
                row.append(f"{name} {nbytes / seconds / 1e6:6.0f} MB/s")
            print(f"{data_name:6s} compress={compress!s:5s}  " + "   ".join(row))


def small_frames(repeat):
    print(f"== many small frames, median of {repeat}, frames/s ==")
    for size, count in ((100, 50000), (2000, 20000), (8000, 5000)):
        payload = _compressible(size)
        row = []
        for name, transfer in (("grpyc", grpyc_transfer), ("rpyc 6.0.2", rpyc_transfer)):
            seconds = measure(transfer, payload, False, repeat, count)
            row.append(f"{name} {count / seconds:9.0f} frames/s")
        print(f"{size:5d} B x {count:6d}  " + "   ".join(row))


def grpyc_batched_transfer(payload, compress, count=1, batch=64):
    sender, receiver = _grpyc_pair(compress)
    try:

        def send():
            for _ in range(count // batch):
                sender.send_many([payload] * batch)

        start = time.perf_counter()
        writer = gevent.spawn(send)
        for _ in range(count // batch * batch):
            received = receiver.recv()
        writer.get()
        elapsed = time.perf_counter() - start
        assert len(received) == len(payload)
        return elapsed
    finally:
        sender.close()
        receiver.close()


def batched_frames(repeat):
    print(f"== send_many, 64 frames per call, median of {repeat}, frames/s ==")
    for size, count in ((100, 64000), (2000, 19200)):
        payload = _compressible(size)
        seconds = measure(grpyc_batched_transfer, payload, False, repeat, count)
        print(f"{size:5d} B x {count:6d}  grpyc {count / seconds:9.0f} frames/s")


def variants(size, repeat):
    print("== grpyc.channel knobs (compress=False) ==")
    big = _random(size)
    small = _compressible(100)
    saved = (channel_module._READ_SIZE, channel_module._LARGE_BODY, channel_module._JOIN_LIMIT)
    try:
        for read_size in (16 * 1024, 64 * 1024, 256 * 1024):
            channel_module._READ_SIZE = read_size
            seconds = measure(grpyc_transfer, small, False, repeat, 50000)
            print(f"read size {read_size >> 10:4d} KiB: 100 B frames {50000 / seconds:9.0f}/s")
        channel_module._READ_SIZE = saved[0]
        for large_body, label in ((saved[1], "read into final bytes"), (1 << 62, "assemble")):
            channel_module._LARGE_BODY = large_body
            seconds = measure(grpyc_transfer, big, False, repeat)
            print(f"large body {label:22s}: {size / seconds / 1e6:6.0f} MB/s")
        channel_module._LARGE_BODY = saved[1]
        mid = _random(12000)
        for join_limit, label in ((1 << 62, "joined"), (0, "vectored")):
            channel_module._JOIN_LIMIT = join_limit
            seconds = measure(grpyc_transfer, mid, False, repeat, 20000)
            print(f"12000 B frames {label:8s}: {20000 / seconds:9.0f}/s")
    finally:
        channel_module._READ_SIZE, channel_module._LARGE_BODY, channel_module._JOIN_LIMIT = saved


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="big frame size in MiB")
    parser.add_argument("--rpyc-size", type=int, default=8, help="rpyc's big frame in MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", action="store_true", help="also time internal knobs")
    args = parser.parse_args()
    big_frames(args.size << 20, args.rpyc_size << 20, args.repeat)
    small_frames(args.repeat)
    batched_frames(args.repeat)
    if args.variants:
        variants(args.size << 20, args.repeat)


if __name__ == "__main__":
    main()
