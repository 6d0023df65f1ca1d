"""One peer must never stop, freeze or bloat a grpyc process (security issue 10).

Each test is an attack sent as raw bytes by one connection to a server in
its own process, while a well-behaved client measures what it costs the
others: latency of its calls, the server's peak RSS (VmHWM), the server
still alive and serving. The figures asserted are the ones docs/security.md
states.
"""

import struct
import subprocess
import sys
import time
import zlib

import gevent
import greenlet
import pytest

import grpyc
from grpyc import _accel, brine, consts, vinegar
from grpyc.framing import FrameDecoder
from grpyc.protocol import is_from_peer
from tests.hostile.conftest import (
    ROOT,
    L,
    R,
    RawPeer,
    T,
    V,
    assert_serves,
    boxed,
    frame,
    request,
)

MIB = 1024 * 1024
KIB = 1024


def exception_message(seq, module, name, text="from the peer"):
    """An exception answer (PROTOCOL.md section 6) naming any class the peer likes."""
    body = ((module, name), (text,), (("_remote_version", "6.0.2"),), "Traceback: the peer's\n")
    return frame(b"\x03" + brine.dump((seq, body)))


class Victim:
    """A well-behaved grpyc client timing its calls to the server under attack."""

    def __init__(self, port):
        self.conn = grpyc.connect("127.0.0.1", port, config={"sync_request_timeout": 30})
        self.echo = self.conn.root.echo
        self.latencies = []

    def call_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.call_once()

    def call_once(self):
        started = time.monotonic()
        assert self.echo(("victim", 1)) == ("victim", 1)
        self.latencies.append(time.monotonic() - started)

    @property
    def worst(self):
        return max(self.latencies)

    @property
    def p99(self):
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def close(self):
        self.conn.close()


@pytest.fixture
def victim():
    made = []

    def make(port):
        client = Victim(port)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


# ----------------------------------------------- finding 1: exceptions are data
PEER_EXCEPTIONS = [
    ("builtins", "KeyboardInterrupt"),
    ("builtins", "SystemExit"),
    ("builtins", "GeneratorExit"),
    ("builtins", "SystemError"),
    ("greenlet", "GreenletExit"),
]


@pytest.mark.parametrize(("module", "name"), PEER_EXCEPTIONS, ids=lambda item: str(item))
def test_an_exception_from_the_peer_never_escapes_the_server(
    server_process, raw_peers, module, name
):
    process = server_process()
    peer = raw_peers(process.port)
    root = peer.root_id_pack()
    foreign = (R, ("x.Y", 77, 78))  # a reference to an object of the peer's
    # echo needs nothing of the reference; call() asks INSPECT, then CALL:
    # the peer answers both with the exception.
    for seq, method in ((1, "echo"), (2, "call")):
        peer.send_request(
            seq, consts.HANDLE_CALLATTR, boxed((L, root), (V, method), (T, (foreign,)), (V, ()))
        )
        while True:
            msg, got_seq, body = peer.recv_message(timeout=10)
            if msg == consts.MSG_REQUEST:  # the server asks the peer something
                peer.send(exception_message(got_seq, module, name))
                continue
            assert got_seq == seq
            break
        if method == "echo":
            assert msg == consts.MSG_REPLY
        else:
            assert msg == consts.MSG_EXCEPTION
            # Handed back as data, named as the peer named it (generic class,
            # as RPyC forwards an exception class it does not have).
            assert body[0][1] == f"{module}.{name}"
    assert process.alive()
    assert_serves(process.port)
    assert "Traceback" not in process.read_log()  # nothing escaped into gevent's hub


class HostileServer:
    """A raw-bytes server: its root's ``call(f)`` calls `f` back, and it answers
    any other attribute the callback asks for with the exception it was told to."""

    ROOT = ("hostile.Root", 5, 6)
    METHOD = ("hostile.Method", 7, 8)

    def __init__(self, module, name):
        self.module, self.name = module, name
        self.listener = gevent.socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.accepted = []
        self.worker = gevent.spawn(self._serve)

    def _reply(self, peer, seq, boxed_value):
        peer.send(frame(b"\x02" + brine.dump((seq, boxed_value))))

    def _serve(self):
        sock, _ = self.listener.accept()
        self.accepted.append(sock)
        peer = RawPeer.__new__(RawPeer)
        peer.sock, peer.decoder = sock, FrameDecoder()
        while (message := peer.recv_message(timeout=20)) is not None:
            msg, seq, body = message
            if msg != consts.MSG_REQUEST:
                continue  # the client's answers to our callback
            handler, (_label, args) = body
            if handler == consts.HANDLE_GETROOT:
                self._reply(peer, seq, (R, self.ROOT))
            elif handler == consts.HANDLE_PING:
                self._reply(peer, seq, (V, args[0]))  # PING(data): a plain value
            elif handler == consts.HANDLE_INSPECT:
                self._reply(peer, seq, (V, (("__call__", None),)))
            elif handler == consts.HANDLE_GETATTR and args[1] == (V, "call"):
                self._reply(peer, seq, (R, self.METHOD))
            elif handler == consts.HANDLE_GETATTR:
                peer.send(exception_message(seq, self.module, self.name))
            elif handler == consts.HANDLE_CALL:
                callback = args[1][1][0][1]  # CALL(method, (callback,), ()): by reference
                peer.send_request(900, consts.HANDLE_CALL, boxed((L, callback), (V, ()), (V, ())))

    def close(self):
        self.worker.kill()
        for sock in self.accepted:
            sock.close()
        self.listener.close()


@pytest.mark.parametrize(("module", "name"), PEER_EXCEPTIONS, ids=lambda item: str(item))
def test_an_exception_from_the_peer_never_escapes_a_client_serving_callbacks(module, name):
    server = HostileServer(module, name)
    seen = []
    conn = grpyc.connect("127.0.0.1", server.port, config={"sync_request_timeout": 10})
    try:

        def callback():
            try:
                conn.root.ping_me()
            except BaseException as exc:
                seen.append(type(exc).__name__)
                raise
            return "unreachable"

        def outer_call():
            try:
                conn.root.call(callback)
            except Exception as exc:  # the hostile server never answers it
                return type(exc).__name__

        caller = gevent.spawn(outer_call)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            gevent.sleep(0.01)
        # Raised only in the code that made the nested call, as data (a plain
        # Exception of the peer's class name), then answered back to the peer.
        assert seen == [f"{module}.{name}"]
        assert conn.ping() is None
        assert not conn.closed
        caller.kill()
    finally:
        conn.abort()
        server.close()


# ---------------------------------------------------- finding 2: reader fairness
def test_a_flood_of_small_requests_does_not_starve_other_clients(server_process, victim):
    process = server_process()
    client = victim(process.port)
    client.call_once()
    flood = subprocess.Popen(
        [sys.executable, "-m", "tests.hostile.flood_proc", str(process.port), "5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        gevent.sleep(0.3)  # time passing, not synchronisation: the flood is under way
        client.latencies.clear()
        client.call_for(4.5)
        sent = int(flood.communicate(timeout=30)[0])
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
        flood.stdout.close()
    print(
        f"\nflood: {sent} PINGs; victim {len(client.latencies)} calls, worst"
        f" {client.worst * 1000:.0f} ms, p99 {client.p99 * 1000:.0f} ms"
    )
    assert sent > 50_000  # the flood really flooded
    assert len(client.latencies) >= 20
    assert client.worst < 0.5, client.worst
    # Starved, a client would wait out the 5 s flood. A fair turn of the reader
    # handles a batch of the flood's frames first, and the pure-Python build
    # (the server child runs the same build as this process) spends ~1.5-2x the
    # compiled one's time on each: p99 28-34 ms compiled, 40-49 ms pure on a
    # 2-vCPU VM, where a slow moment of the machine once took pure to 113 ms.
    assert client.p99 < (0.1 if _accel.compiled_modules() else 0.2), client.p99
    assert process.alive()


# ------------------------------------------------------ finding 3: decode cost
def pair(first, second_encoded):
    """Brine of the 2-tuple ``(first, <already encoded>)``, without decoding anything."""
    return b"\x11" + brine.dump(first) + second_encoded


def colliding_frozenset_frame(count):
    """A PING of a frozenset of `count` ints that all hash to 0 (built as bytes:
    making the frozenset here would take the O(n^2) time the attack is about)."""
    items = b"\x1a" + brine.dump(tuple(k * (2**61 - 1) for k in range(1, count + 1)))
    # The message is seq 1, PING, one boxed frozenset argument.
    boxed_arg = b"\x11" + brine.dump(V) + items
    args = b"\x11" + brine.dump(T) + b"\x10" + boxed_arg
    return frame(b"\x01" + pair(1, b"\x11" + brine.dump(consts.HANDLE_PING) + args))


def repeated_tuple(item, count):
    """Brine of a tuple of `count` copies of `item`, built as bytes."""
    return b"\x15" + struct.pack("!L", count) + brine.dump(item) * count


def test_a_frozenset_of_colliding_hashes_is_refused_at_once(server_process, raw_peers, victim):
    process = server_process()
    client = victim(process.port)
    client.call_once()
    data = colliding_frozenset_frame(40_000)
    assert MIB * 0.5 < len(data) < 2 * MIB
    peer = raw_peers(process.port)
    worker = gevent.spawn(client.call_for, 2)
    started = time.monotonic()
    peer.send(data)
    message = peer.recv_message(timeout=10)
    answered_in = time.monotonic() - started
    worker.get(timeout=10)
    # Refused (the frame is undecodable: the connection closes) within a second.
    assert message is None or message[0] == consts.MSG_EXCEPTION
    print(
        f"\ncolliding frozenset: answered in {answered_in * 1000:.0f} ms;"
        f" victim worst {client.worst * 1000:.0f} ms"
    )
    assert answered_in < 1
    assert client.worst < 1, client.worst
    assert_serves(process.port)


# -------------------------------------- finding 4: memory in decoded terms
def small_ints_frame(count):
    """A compressed PING of `count` three-digit ints: 5 wire bytes, ~36 B of objects each."""
    # The message is seq 1, PING, one boxed tuple argument.
    boxed_arg = b"\x11" + brine.dump(V) + repeated_tuple(999, count)
    args = b"\x11" + brine.dump(T) + b"\x10" + boxed_arg
    payload = b"\x01" + pair(1, b"\x11" + brine.dump(consts.HANDLE_PING) + args)
    return frame(zlib.compress(payload, 1), compressed=True)


def test_a_small_compressed_frame_of_ints_cannot_pin_hundreds_of_mib(
    server_process, raw_peers, victim
):
    process = server_process()
    client = victim(process.port)
    client.call_once()
    baseline = process.status_kib("VmHWM")
    data = small_ints_frame(10 * MIB)  # 50 MiB inflated, ~360 MiB if decoded
    assert len(data) < 400 * KIB
    peer = raw_peers(process.port)
    worker = gevent.spawn(client.call_for, 3)
    peer.send(data)
    message = peer.recv_message(timeout=20)
    worker.get(timeout=20)
    assert message is None or message[0] == consts.MSG_EXCEPTION
    grown_mib = (process.status_kib("VmHWM") - baseline) / KIB
    print(
        f"\nzlib frame of small ints ({len(data) // KIB} KiB): peak RSS +{grown_mib:.0f} MiB;"
        f" victim worst {client.worst * 1000:.0f} ms"
    )
    assert grown_mib < 300, grown_mib
    assert client.worst < 1, client.worst
    assert_serves(process.port)


def test_big_frames_behind_an_unanswered_inspect_park_nothing(server_process, raw_peers, victim):
    process = server_process()
    client = victim(process.port)
    client.call_once()
    baseline = process.status_kib("VmHWM")
    peer = raw_peers(process.port)
    root = peer.root_id_pack()
    foreign = (R, ("x.Never", 5, 6))  # its INSPECT is never answered
    # Built before the victim starts: compressing 30 MB here is CPU in the
    # victim's own process, which would show up as the server's stall.
    frames = []
    for seq in (1, 2):
        # CALLATTR(root, "call", (foreign, (999,) * 10M)): 10M ints, ~360 MiB decoded.
        big = b"\x11" + brine.dump(V) + repeated_tuple(999, 10 * MIB)
        call_args = b"\x11" + brine.dump(T) + b"\x12" + brine.dump(foreign) + big
        boxed_args = (
            b"\x11"
            + brine.dump(T)
            + b"\x13"
            + brine.dump((L, root))
            + brine.dump((V, "call"))
            + call_args
            + brine.dump((V, ()))
        )
        body = b"\x11" + brine.dump(consts.HANDLE_CALLATTR) + boxed_args
        frames.append(frame(zlib.compress(b"\x01" + pair(seq, body), 1), compressed=True))
        del big, call_args, boxed_args, body
    worker = gevent.spawn(client.call_for, 3)
    for data in frames:
        peer.send(data)
    # Each frame decodes past max_decoded_size: refused before it is all made
    # (the connection closes, as for any frame over a limit).
    answer = peer.recv_message(timeout=30)
    assert answer is None or answer[0] == consts.MSG_EXCEPTION
    grown_mib = (process.status_kib("VmHWM") - baseline) / KIB
    worker.get(timeout=30)
    print(
        f"\ntwo 10M-int frames behind an unanswered INSPECT: peak RSS +{grown_mib:.0f} MiB;"
        f" victim worst {client.worst * 1000:.0f} ms"
    )
    assert grown_mib < 300, grown_mib
    assert client.worst < 1, client.worst
    assert_serves(process.port)


# ------------------------------------------ finding 5: DELs behind a full writer
def test_unsolicited_replies_with_references_queue_no_dels(server_process, raw_peers, victim):
    process = server_process()
    client = victim(process.port)
    client.call_once()
    worker = gevent.spawn(client.call_for, 3)
    baseline = process.status_kib("VmRSS")
    peer = raw_peers(process.port)
    peer.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
    sent = 0
    seq = 10**7
    body = brine.dump((T, tuple((R, ("x.Ref", 9, n)) for n in range(2000))))
    while sent < 42 * MIB:
        payload = b"\x02" + pair(seq, body)
        peer.send(frame(payload))
        sent += len(payload)
        seq += 1
    assert_serves(process.port)
    grown_mib = (process.status_kib("VmRSS") - baseline) / KIB
    worker.get(timeout=30)
    print(
        f"\n{sent // MIB} MiB of replies with references to a non-reader: RSS +{grown_mib:.0f}"
        f" MiB; victim worst {client.worst * 1000:.0f} ms"
    )
    assert grown_mib < 200, grown_mib
    assert client.worst < 1, client.worst
    assert process.alive()


# ---------------------------------------- finding 6: names in references
def test_references_with_huge_class_names_are_refused(server_process, raw_peers, victim):
    process = server_process()
    client = victim(process.port)
    client.call_once()
    peer = raw_peers(process.port)
    root = peer.root_id_pack()
    packed_frames = []  # compressed before the victim starts: see the INSPECT test
    for seq in range(8):
        huge = (R, ("x" * (16 * MIB), seq, seq + 1))
        payload = request(
            seq, consts.HANDLE_CALLATTR, boxed((L, root), (V, "echo"), (T, (huge,)), (V, ()))
        )
        packed_frames.append(zlib.compress(payload, 9))
        del huge, payload
    baseline = process.status_kib("VmRSS")
    worker = gevent.spawn(client.call_for, 2)
    for packed in packed_frames:
        assert len(packed) < 128 * KIB
        peer.send(frame(packed, compressed=True))
        msg, _, body = peer.recv_message(timeout=20)
        assert msg == consts.MSG_EXCEPTION
        assert "id pack names a class of 16777216 characters" in body[1][0]
    assert_serves(process.port)
    retained_mib = (process.status_kib("VmRSS") - baseline) / KIB
    worker.get(timeout=30)
    print(
        f"\n8 references with 16 MiB class names: RSS +{retained_mib:.0f} MiB retained;"
        f" victim worst {client.worst * 1000:.0f} ms"
    )
    assert client.worst < 1, client.worst
    assert retained_mib < 100, retained_mib


# ------------------------------------------------- finding 7: parked handlers
def test_parked_handlers_on_four_connections_stay_bounded(server_process, raw_peers, victim):
    process = server_process()
    client = victim(process.port)
    client.call_once()
    baseline = process.status_kib("VmHWM")
    worker = gevent.spawn(client.call_for, 3)
    refused = 0
    peers = [raw_peers(process.port) for _ in range(4)]
    for peer in peers:
        root = peer.root_id_pack()
        burst = b"".join(
            frame(
                request(
                    seq,
                    consts.HANDLE_CALLATTR,
                    boxed((L, root), (V, "call"), (T, ((R, ("x.Never", 1, seq)),)), (V, ())),
                )
            )
            for seq in range(6000)
        )
        peer.send(burst)
    for peer in peers:
        # Each handler asks INSPECT (never answered) and parks; past the
        # budget, requests are answered at once with "too many requests".
        answers = 0
        while answers < 6000:
            try:
                message = peer.recv_message(timeout=1)
            except TimeoutError:
                break  # the rest are parked
            if message is None:
                break
            if message[0] == consts.MSG_EXCEPTION:
                refused += 1
            answers += message[0] != consts.MSG_REQUEST
    grown_mib = (process.status_kib("VmHWM") - baseline) / KIB
    worker.get(timeout=30)
    print(
        f"\nparked handlers, 4 x 6,000 requests: {refused} refused, peak RSS +{grown_mib:.0f} MiB;"
        f" victim worst {client.worst * 1000:.0f} ms"
    )
    assert client.worst < 1, client.worst
    assert grown_mib < 100 or refused > 0.5 * 4 * 6000, (grown_mib, refused)
    assert refused > 0.5 * 4 * 6000, refused
    assert grown_mib < 150, grown_mib
    assert_serves(process.port)


# ------------------------------------------------- finding 10: exported objects
def test_exported_objects_are_capped_with_a_clear_error(server_process, raw_peers):
    process = server_process({"protocol_config": {"max_exported_objects": 100}})
    peer = raw_peers(process.port)
    root = peer.root_id_pack()
    answers = [
        peer.call(
            seq, consts.HANDLE_CALLATTR, boxed((L, root), (V, "make_box"), (V, (seq,)), (V, ()))
        )
        for seq in range(1, 120)
    ]
    refusals = [answer for answer in answers if answer[0] == consts.MSG_EXCEPTION]
    assert len(refusals) == 119 - 99  # the root is exported too
    assert "max_exported_objects=100" in refusals[0][2][1][0]
    assert_serves(process.port)


def test_steering_exceptions_from_the_peer_arrive_as_plain_exceptions():
    # The class a peer names is rebuilt as the real one, raised only to the caller.
    exc = vinegar.load(
        (("greenlet", "GreenletExit"), ("x",), (), "tb"),
        import_custom_exceptions=False,
        instantiate_custom_exceptions=False,
        instantiate_oldstyle_exceptions=False,
    )
    assert not isinstance(exc, greenlet.GreenletExit)
    assert isinstance(exc, Exception)
    assert type(exc).__name__ == "greenlet.GreenletExit"
    assert is_from_peer(exc)


# -------------------------------------- DELs in batches with nothing behind them
def test_batches_of_dels_are_answered_without_a_request_behind_them(
    server_process, raw_peers, victim
):
    """A peer takes 500 references to the root (GETROOT each), then drops them
    in one write of 500 DELs with nothing after it, twenty times: the server
    answers every DEL on its own (its deferred flush: the batch had no answer
    of ours to carry them), within a second, and another client is not held up."""
    process = server_process()
    client = victim(process.port)
    client.call_once()
    peer = raw_peers(process.port)
    root = peer.root_id_pack()
    worker = gevent.spawn(client.call_for, 2)
    baseline = process.status_kib("VmRSS")
    per_batch, seq, slowest = 500, 1, 0.0
    for _ in range(20):
        peer.send(
            b"".join(
                frame(request(seq + n, consts.HANDLE_GETROOT, boxed())) for n in range(per_batch)
            )
        )
        assert all(peer.recv_message()[0] == consts.MSG_REPLY for _ in range(per_batch))
        seq += per_batch
        dropped = boxed((L, root), (V, 1))
        started = time.monotonic()
        peer.send(
            b"".join(frame(request(seq + n, consts.HANDLE_DEL, dropped)) for n in range(per_batch))
        )
        answers = [peer.recv_message() for _ in range(per_batch)]
        slowest = max(slowest, time.monotonic() - started)
        assert [(msg, body) for msg, _, body in answers] == [
            (consts.MSG_REPLY, (V, None))
        ] * per_batch
        seq += per_batch
    worker.get(timeout=30)
    assert_serves(process.port)
    grown_mib = (process.status_kib("VmRSS") - baseline) / KIB
    print(
        f"\n20 x {per_batch} DELs with nothing behind: all answered, the slowest batch in"
        f" {slowest * 1000:.0f} ms; RSS +{grown_mib:.1f} MiB;"
        f" victim worst {client.worst * 1000:.0f} ms"
    )
    assert slowest < 1, slowest
    assert client.worst < 1, client.worst
    assert grown_mib < 50, grown_mib
