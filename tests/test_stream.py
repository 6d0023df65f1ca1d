"""grpyc.stream: sockets (pair, TCP, IPv6, Unix, TLS), pipes, EOF/reset, options, closing."""

import os
import socket as stdlib_socket
import ssl
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import gevent
import gevent.ssl
import pytest
from gevent import socket
from gevent.event import Event

from grpyc.stream import (
    PipeStream,
    SocketStream,
    Stream,
    TunneledSocketStream,
    set_keepalive,
)
from tests.certs import make_pki

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    streams = SocketStream(left), SocketStream(right)
    yield streams
    for stream in streams:
        stream.close()


@pytest.fixture
def pipes():
    streams = PipeStream.create_pair()
    yield streams
    for stream in streams:
        stream.close()


@pytest.fixture
def listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def tcp_pair(listener, **connect_kwargs):
    """(client stream, accepted server stream) over 127.0.0.1."""
    port = listener.getsockname()[1]
    accepting = gevent.spawn(listener.accept)
    client = SocketStream.connect("127.0.0.1", port, **connect_kwargs)
    accepted, _ = accepting.get(timeout=5)
    return client, SocketStream(accepted)


def nodelay(stream):
    return stream.sock.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY)


def round_trip(a, b, data):
    writer = gevent.spawn(a.write, data)
    got = b.read(len(data))
    writer.get(timeout=10)
    return got


# ------------------------------------------------------------------ socketpair


def test_read_returns_exactly_count(pair):
    a, b = pair
    a.write(b"hello world")
    assert b.read(5) == b"hello"
    assert b.read(6) == b" world"
    assert b.read(0) == b""


def test_read_some_and_read_into(pair):
    a, b = pair
    a.write(b"abcdef")
    assert b.read_some(4) == b"abcd"
    buffer = bytearray(10)
    count = b.read_into(memoryview(buffer))
    assert (count, bytes(buffer[:count])) == (2, b"ef")


def test_write_buffers_in_order(pair):
    a, b = pair
    big = os.urandom(1_000_000)
    writer = gevent.spawn(a.write_buffers, [b"head", big, b"", memoryview(b"tail")])
    assert b.read(8 + len(big)) == b"head" + big + b"tail"
    writer.get(timeout=10)


def test_many_buffers_exceeding_iov_max(pair):
    a, b = pair
    parts = [bytes([i % 256]) * 3 for i in range(3000)]
    writer = gevent.spawn(a.write_buffers, parts)
    assert b.read(9000) == b"".join(parts)
    writer.get(timeout=10)


def test_big_write_and_read_are_cooperative(pair):
    a, b = pair
    data = os.urandom(8 * 1024 * 1024)
    assert round_trip(a, b, data) == data


def test_poll(pair):
    a, b = pair
    assert b.poll(0) is False
    assert b.poll(0.01) is False
    later = gevent.spawn_later(0.01, a.write, b"x")
    assert b.poll(5) is True
    later.get(timeout=5)
    assert b.read(1) == b"x"


def test_poll_reports_eof_as_readable(pair):
    a, b = pair
    a.close()
    assert b.poll(1) is True
    with pytest.raises(EOFError, match="connection closed by peer"):
        b.read(1)


def test_eof_closes_the_stream(pair):
    a, b = pair
    a.write(b"ab")
    a.close()
    with pytest.raises(EOFError, match="connection closed by peer"):
        b.read(3)
    assert b.closed is True
    with pytest.raises(EOFError, match="stream has been closed"):
        b.read(1)


def test_local_close_then_every_operation_raises_eof(pair):
    a, _ = pair
    a.close()
    a.close()  # idempotent
    assert a.closed is True
    for operation in (
        lambda: a.read(1),
        lambda: a.read_some(1),
        lambda: a.read_into(memoryview(bytearray(1))),
        lambda: a.write(b"x"),
        lambda: a.write_buffers([b"x", b"y"]),
        a.fileno,
        lambda: a.poll(0),
    ):
        with pytest.raises(EOFError, match="stream has been closed"):
            operation()


def test_write_to_a_closed_peer_raises_eof(pair):
    a, b = pair
    b.close()
    with pytest.raises(EOFError, match="connection broken"):
        a.write(b"x" * 100)
    assert a.closed is True


def test_close_wakes_a_blocked_reader(pair):
    _, b = pair
    started = Event()

    def read():
        started.set()
        try:
            b.read(1)
        except EOFError as exc:
            return str(exc)
        return "no error"

    reader = gevent.spawn(read)
    assert started.wait(5)
    gevent.sleep(0)  # let the reader block in recv
    b.close()
    assert reader.get(timeout=5) != "no error"


@pytest.mark.parametrize("owner_timeout", [None, 0.01])
def test_read_some_waits_in_the_hub_until_bytes_come(pair, owner_timeout):
    # A timeout set on the socket by its owner does not end the read either.
    a, b = pair
    b.sock.settimeout(owner_timeout)
    reader = gevent.spawn(b.read_some, 100)
    gevent.sleep(0.05)  # the reader found nothing and waits (several timeouts pass)
    assert not reader.ready()
    a.write(b"late")
    assert reader.get(timeout=5) == b"late"


def test_write_to_a_full_socket_waits_for_room(pair):
    a, b = pair
    filler = 0
    while True:  # fill the socket buffers without waiting
        try:
            filler += a.sock._sock.send(b"f" * 65536)
        except BlockingIOError:
            break
        assert filler < 1 << 30
    writer = gevent.spawn(a.write, b"tail")
    gevent.sleep(0)
    assert not writer.ready()  # no room: it waits, it does not fail or drop bytes
    assert b.read(filler + 4) == b"f" * filler + b"tail"
    writer.get(timeout=5)


def test_only_plain_gevent_sockets_are_read_past_gevents_wrapper(pair, tmp_path):
    a, _ = pair
    assert a._raw is a.sock._sock
    a.sock = a.sock  # a new socket gets looked at again
    assert a._raw is a.sock._sock
    left, right = stdlib_socket.socketpair()
    with left, right:
        plain = _plain_stream(left)
        assert plain._raw is None  # a blocking socket of a thread outside gevent
    pki = make_pki(tmp_path)
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(pki.ca_cert))
    tls_left, tls_right = socket.socketpair()
    with tls_right:
        wrapped = context.wrap_socket(tls_left, do_handshake_on_connect=False, server_hostname="x")
        tls = SocketStream(wrapped)
        assert tls._raw is None  # encrypted bytes must go through the TLS layer
        tls.close()


def _plain_stream(sock):
    """A SocketStream made in an OS thread that does not use gevent."""
    made = []
    thread = threading.Thread(target=lambda: made.append(SocketStream(sock)))
    thread.start()
    thread.join(5)
    return made[0]


def test_context_manager_closes(pair):
    a, _ = pair
    with a as stream:
        assert stream is a
    assert a.closed is True


def test_plain_blocking_socket_is_adopted_as_gevent_socket():
    left, right = stdlib_socket.socketpair()
    a, b = SocketStream(left), SocketStream(right)
    try:
        assert isinstance(a.sock, socket.socket)
        # A blocking read would stall the hub; here another greenlet writes meanwhile.
        writer = gevent.spawn_later(0.01, a.write, b"ping")
        assert b.read(4) == b"ping"
        writer.get(timeout=5)
    finally:
        a.close()
        b.close()


def test_stream_base_is_abstract():
    stream = Stream()
    with pytest.raises(NotImplementedError):
        stream.read_some(1)
    with pytest.raises(NotImplementedError):
        stream.write(b"x")


def test_tunneled_stream_closes_its_tunnel_once():
    class Tunnel:
        closes = 0

        def close(self):
            self.closes += 1

    left, right = socket.socketpair()
    tunnel = Tunnel()
    stream = TunneledSocketStream(left, tunnel)
    stream.close()
    stream.close()
    right.close()
    assert tunnel.closes == 1
    assert stream.closed is True


# ------------------------------------------------------------------------- TCP


def test_tcp_connect_and_accept_both_set_nodelay(listener):
    client, server = tcp_pair(listener)
    try:
        assert nodelay(client) != 0
        assert nodelay(server) != 0
        assert round_trip(client, server, b"to server") == b"to server"
        assert round_trip(server, client, b"to client") == b"to client"
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("cooperative", [True, False])
def test_a_numeric_address_is_not_handed_to_a_resolver(listener, monkeypatch, cooperative):
    """gevent's resolver runs every lookup in its thread pool, even of
    "127.0.0.1" (~90 us of a connect): a numeric address skips it, a name
    does not. Both give the addresses getaddrinfo gives."""
    from grpyc import stream as stream_module

    calls = []

    def recorded(kind):
        def getaddrinfo(host, *args):
            calls.append((kind, host))
            return stdlib_socket.getaddrinfo(host, *args)

        return getaddrinfo

    monkeypatch.setattr(stream_module.gsocket, "getaddrinfo", recorded("gevent"))
    monkeypatch.setattr(stream_module, "_original_getaddrinfo", recorded("blocking"))
    port = listener.getsockname()[1]
    tcp = (stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, 0)
    numeric = stream_module._resolve("127.0.0.1", port, *tcp, cooperative)
    assert numeric == stdlib_socket.getaddrinfo("127.0.0.1", port, *tcp)
    assert calls == [("blocking", "127.0.0.1")]  # with AI_NUMERICHOST: no lookup
    del calls[:]
    named = stream_module._resolve("localhost", port, *tcp, cooperative)
    assert named == stdlib_socket.getaddrinfo("localhost", port, *tcp)
    resolver = "gevent" if cooperative else "blocking"
    assert calls == [("blocking", "localhost"), (resolver, "localhost")]


def test_nodelay_can_be_left_off(listener):
    client, server = tcp_pair(listener, nodelay=False)
    try:
        assert nodelay(client) == 0
    finally:
        client.close()
        server.close()


def test_connect_with_keepalive_seconds(listener):
    client, server = tcp_pair(listener, keepalive=7)
    try:
        sock = client.sock
        assert sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_KEEPALIVE) != 0
        if hasattr(stdlib_socket, "TCP_KEEPIDLE"):
            get = sock.getsockopt
            assert get(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_KEEPIDLE) == 7
            assert get(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_KEEPINTVL) == 7
            assert get(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_KEEPCNT) == 5
    finally:
        client.close()
        server.close()


@pytest.mark.skipif(not hasattr(stdlib_socket, "TCP_KEEPIDLE"), reason="no TCP_KEEPIDLE here")
def test_set_keepalive_on_an_accepted_socket(listener):
    client, server = tcp_pair(listener)
    try:
        set_keepalive(server.sock, idle=11, interval=3, count=2)
        get = server.sock.getsockopt
        assert get(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_KEEPALIVE) != 0
        assert get(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_KEEPIDLE) == 11
        assert get(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_KEEPINTVL) == 3
        assert get(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_KEEPCNT) == 2
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize(("key", "value"), [("idle", 0), ("interval", -1), ("count", 1.5)])
def test_set_keepalive_rejects_bad_values(key, value):
    sock = socket.socket()
    try:
        with pytest.raises(
            ValueError, match=rf"^keepalive {key} must be an int >= 1, got {value}$"
        ):
            set_keepalive(sock, **{key: value})
    finally:
        sock.close()


def test_connect_refused_raises_oserror():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ConnectionRefusedError):
        SocketStream.connect("127.0.0.1", port)


def test_tcp_reset_reads_as_eof(listener):
    client, server = tcp_pair(listener)
    try:
        # SO_LINGER with zero timeout: close() sends RST instead of FIN.
        server.sock.setsockopt(
            stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        server.sock.close()
        with pytest.raises(EOFError, match=r"connection broken: .*reset"):
            client.read(1)
        assert client.closed is True
    finally:
        client.close()
        server.close()


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("Python was built without IPv6 support")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.bind(("::1", 0))
    except OSError as exc:
        sock.close()
        pytest.skip(f"cannot bind to ::1 (no IPv6 loopback here): {exc}")
    sock.listen(1)
    try:
        accepting = gevent.spawn(sock.accept)
        client = SocketStream.connect("::1", sock.getsockname()[1], ipv6=True)
        accepted, _ = accepting.get(timeout=5)
        server = SocketStream(accepted)
        try:
            assert client.sock.family == socket.AF_INET6
            assert nodelay(client) != 0
            assert nodelay(server) != 0
            assert round_trip(client, server, b"six") == b"six"
        finally:
            client.close()
            server.close()
    finally:
        sock.close()


# ------------------------------------------------------------------------ Unix


@pytest.mark.parametrize("how", ["unix_connect", "socket_path"])
def test_unix_socket(tmp_path, how):
    path = str(tmp_path / "s.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen(1)
    try:
        accepting = gevent.spawn(listening.accept)
        if how == "unix_connect":
            client = SocketStream.unix_connect(path)
        else:
            client = SocketStream.connect("ignored", 0, socket_path=path)
        server = SocketStream(accepting.get(timeout=5)[0])
        try:
            assert client.sock.family == socket.AF_UNIX
            assert round_trip(server, client, b"unix") == b"unix"
        finally:
            client.close()
            server.close()
    finally:
        listening.close()


def test_unix_connect_to_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        SocketStream.unix_connect(str(tmp_path / "missing.sock"))


# ------------------------------------------------------------------------- TLS


def tls_server(listener, pki):
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))

    def serve():
        sock, _ = listener.accept()
        stream = SocketStream(context.wrap_socket(sock, server_side=True))
        try:
            stream.write(stream.read(5)[::-1])
        finally:
            stream.close()

    return gevent.spawn(serve)


def test_ssl_connect_verifies_and_round_trips(listener, tmp_path):
    pki = make_pki(tmp_path)
    server = tls_server(listener, pki)
    ssl_kwargs = {"ca_certs": str(pki.ca_cert)}
    client = SocketStream.ssl_connect("127.0.0.1", listener.getsockname()[1], ssl_kwargs)
    try:
        assert ssl_kwargs == {"ca_certs": str(pki.ca_cert)}  # not consumed
        assert isinstance(client.sock, gevent.ssl.SSLSocket)
        assert nodelay(client) != 0
        client.write_buffers([b"he", b"llo"])
        assert client.read(5) == b"olleh"
        server.get(timeout=5)
    finally:
        client.close()


def test_ssl_connect_with_rpyc_factory_kwargs(listener, tmp_path):
    # What rpyc.utils.factory.ssl_connect passes when given no CA.
    pki = make_pki(tmp_path)
    server = tls_server(listener, pki)
    ssl_kwargs = {"server_side": False, "cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    client = SocketStream.ssl_connect("127.0.0.1", listener.getsockname()[1], ssl_kwargs)
    try:
        client.write(b"abcde")
        assert client.read(5) == b"edcba"
        server.get(timeout=5)
    finally:
        client.close()


def test_ssl_connect_refuses_an_unknown_ca(listener, tmp_path):
    pki = make_pki(tmp_path)
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))

    def serve():
        sock, _ = listener.accept()
        try:
            context.wrap_socket(sock, server_side=True)
        except ssl.SSLError as exc:
            return type(exc).__name__
        finally:
            sock.close()
        return "handshake completed"

    server = gevent.spawn(serve)
    ssl_kwargs = {"ca_certs": str(pki.other_ca_cert)}
    with pytest.raises(ssl.SSLCertVerificationError):
        SocketStream.ssl_connect("127.0.0.1", listener.getsockname()[1], ssl_kwargs)
    assert server.get(timeout=5) != "handshake completed"


# ----------------------------------------------------------------------- pipes


def test_pipe_pair_round_trip_both_ways(pipes):
    a, b = pipes
    data = os.urandom(3 * 1024 * 1024)
    assert round_trip(a, b, data) == data
    assert round_trip(b, a, b"back") == b"back"


def test_pipe_read_into_and_write_buffers(pipes):
    a, b = pipes
    a.write_buffers([b"ab", b"cd"])
    buffer = bytearray(8)
    count = b.read_into(memoryview(buffer))
    assert bytes(buffer[:count]) == b"abcd"[:count]
    assert b.read(4 - count) == b"abcd"[count:]


def test_pipe_poll(pipes):
    a, b = pipes
    assert b.poll(0) is False
    a.write(b"x")
    assert b.poll(1) is True
    assert b.fileno() == b.incoming.fileno()


def test_pipe_eof_when_peer_closes(pipes):
    a, b = pipes
    a.write(b"last")
    a.close()
    assert b.read(4) == b"last"
    with pytest.raises(EOFError, match="pipe closed by peer"):
        b.read(1)
    assert b.closed is True


def test_pipe_write_to_closed_peer_raises_eof(pipes):
    a, b = pipes
    b.close()
    with pytest.raises(EOFError, match="pipe broken"):
        a.write(b"x")


def test_pipe_close_wakes_blocked_reader_and_writer(pipes):
    a, _ = pipes
    outcomes = []

    def run(operation):
        try:
            operation()
        except EOFError as exc:
            outcomes.append(str(exc))

    reader = gevent.spawn(run, lambda: a.read(1))
    writer = gevent.spawn(run, lambda: a.write(b"x" * (16 * 1024 * 1024)))
    gevent.sleep(0)  # both block: nothing to read, the pipe buffer is full
    assert outcomes == []
    a.close()
    gevent.joinall([reader, writer], timeout=5, raise_error=True)
    assert outcomes == ["stream has been closed"] * 2


def test_pipe_descriptors_get_their_blocking_mode_back():
    read_fd, write_fd = os.pipe()
    spare = os.dup(read_fd)  # shares the open file description with read_fd
    stream = PipeStream(read_fd, write_fd)
    assert os.get_blocking(spare) is False
    stream.close()
    assert os.get_blocking(spare) is True
    os.close(spare)


def run_python(code, stdin=b"", timeout=30):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_from_std_shields_the_stream_from_prints():
    child = run_python(
        """
        import os
        from grpyc.stream import PipeStream
        stream = PipeStream.from_std()
        print("stray print")
        os.write(1, b"stray C-level write")
        stream.write(stream.read(5)[::-1])
        stream.close()
        """,
        stdin=b"hello",
    )
    assert child.returncode == 0, child.stderr.decode()
    assert child.stdout == b"olleh"


def test_channel_round_trip_under_monkey_patching():
    child = run_python(
        """
        from gevent import monkey
        monkey.patch_all()
        import socket, threading
        from grpyc.channel import Channel
        from grpyc.stream import SocketStream
        left, right = socket.socketpair()
        a, b = Channel(SocketStream(left)), Channel(SocketStream(right))
        payload = b"\\x01" + bytes(5_000_000)
        sender = threading.Thread(target=a.send, args=(payload,))
        sender.start()
        assert b.recv() == payload
        sender.join()
        a.close()
        b.close()
        print("ok")
        """
    )
    assert child.returncode == 0, child.stderr.decode()
    assert child.stdout == b"ok\n"


def _gevent_pair():
    left, right = socket.socketpair()
    return SocketStream(left), SocketStream(right)


def _plain_pair():
    left, right = stdlib_socket.socketpair()
    return _plain_stream(left), _plain_stream(right)


@pytest.mark.parametrize("make_pair", [_gevent_pair, _plain_pair], ids=["gevent", "plain"])
def test_read_ready_returns_what_is_there_and_never_waits(make_pair):
    """A gevent socket's non-blocking OS socket, or the blocking socket of a
    thread outside gevent (recv with MSG_DONTWAIT): what is there, no wait."""
    writer, reader = make_pair()
    try:
        began = time.monotonic()
        assert reader.read_ready(10) == b""
        assert time.monotonic() - began < 0.5
        writer.write(b"hello")
        assert reader.read_ready(3) == b"hel"
        assert reader.read_ready(10) == b"lo"
        writer.close()
        assert reader.read_ready(10) == b""  # the end is for `read_some` to report
        with pytest.raises(EOFError):
            reader.read_some(10)
    finally:
        reader.close()


def test_a_plain_threads_stream_reads_ready_bytes_on_its_blocking_socket():
    writer, reader = _plain_pair()
    with writer, reader:
        assert reader._raw is None and reader._dontwait is True
        assert reader.sock.gettimeout() is None  # its reads still block


def test_a_stream_without_a_shortcut_reads_nothing_ready():
    assert Stream.read_ready(Stream(), 10) == b""


# ------------------------------------------------------------ big frame bodies
_LINUX = sys.platform == "linux"
_SO_RCVLOWAT = getattr(stdlib_socket, "SO_RCVLOWAT", 0)
linux_low_water = pytest.mark.skipif(
    not (_LINUX and _SO_RCVLOWAT), reason="SO_RCVLOWAT is used on Linux only"
)


def _low_water(stream):
    return stream.sock.getsockopt(stdlib_socket.SOL_SOCKET, _SO_RCVLOWAT)


def _big_receiver(listener):
    """(a plain blocking client socket, the accepted gevent stream), the stream's
    receive buffer big enough for a mark."""
    port = listener.getsockname()[1]
    accepting = gevent.spawn(listener.accept)
    client = stdlib_socket.create_connection(("127.0.0.1", port))
    accepted, _ = accepting.get(timeout=5)
    server = SocketStream(accepted)
    server.sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 1 << 20)
    return client, server


def _read_body(stream, size, read):
    """``size`` bytes through ``read`` (a body reader); the bytes and the calls it took."""
    body = bytearray(size)
    view = memoryview(body)
    have = calls = 0
    while have < size:
        have += read(view[have:])
        calls += 1
    return bytes(body), calls


def _write_in_pieces(sock, data, piece):
    """Write ``data`` from an OS thread, a piece every half millisecond."""
    for start in range(0, len(data), piece):
        sock.sendall(data[start : start + piece])
        time.sleep(0.0005)


@linux_low_water
@pytest.mark.parametrize("how", ["read_into", "read_body_into"])
def test_a_big_body_wakes_its_reader_once_a_share_of_it_is_there(listener, monkeypatch, how):
    # The patience is long here: only the mark may wake the reader early.
    monkeypatch.setattr("grpyc.stream._BODY_PATIENCE", 30.0)
    monkeypatch.setattr("grpyc.stream._BODY_LOW_WATER_FROM", 0)  # a mark to the end
    client, server = _big_receiver(listener)
    body = os.urandom(2 << 20)
    marks = []

    def watch_the_mark():
        while True:
            marks.append(_low_water(server))
            gevent.sleep(0.001)

    with client, server:
        watcher = gevent.spawn(watch_the_mark)
        writer = gevent.get_hub().threadpool.spawn(_write_in_pieces, client, body, 16 * 1024)
        got, calls = _read_body(server, len(body), getattr(server, how))
        writer.get(timeout=10)
        watcher.kill()
        assert got == body
        assert _low_water(server) == 1  # every other read waits for one byte
    if how == "read_into":  # the reader woke for about every piece
        assert calls > 64 and set(marks) == {1}
    else:  # woken once 1/4 of the receive buffer (or all that is left) is there
        assert calls <= 32 and max(marks) >= 64 * 1024


def _waiting_read(stream, size, then_send, client):
    """What `stream.read_body_into` of ``size`` bytes returns when it waits
    first and ``then_send`` comes after, and how long it took."""
    began = time.monotonic()
    reader = gevent.spawn(stream.read_body_into, memoryview(bytearray(size)))
    gevent.sleep(0.02)  # it found nothing and waits
    assert not reader.ready()
    client.sendall(then_send)
    return reader.get(timeout=10), time.monotonic() - began


@linux_low_water
def test_the_mark_is_never_above_what_is_left_of_the_body(listener, monkeypatch):
    # The patience is long: a mark above the 100,000 bytes left would hold the reader.
    monkeypatch.setattr("grpyc.stream._BODY_PATIENCE", 30.0)
    monkeypatch.setattr("grpyc.stream._BODY_LOW_WATER_FROM", 0)
    client, server = _big_receiver(listener)
    with client, server:
        count, took = _waiting_read(server, 100_000, b"x" * 100_000, client)
        assert took < 5
        assert server.read_ready(100_000) == b"x" * (100_000 - count)


@linux_low_water
@pytest.mark.parametrize(
    ("mark_from", "patience"),
    [
        # Under ~1.5 MiB left, waiting for all of it costs more than the wakes it saves.
        (1500 * 1024, 30.0),
        # A mark, and a sender that stops short of it: read after the patience.
        (0, 0.005),
    ],
    ids=["no-mark-for-the-last-part", "patience"],
)
def test_a_few_bytes_of_a_body_are_read_as_they_come(listener, monkeypatch, mark_from, patience):
    monkeypatch.setattr("grpyc.stream._BODY_LOW_WATER_FROM", mark_from)
    monkeypatch.setattr("grpyc.stream._BODY_PATIENCE", patience)
    client, server = _big_receiver(listener)
    with client, server:
        # 10,000 bytes of a 1 MiB body, then nothing for a long while.
        count, took = _waiting_read(server, 1 << 20, b"a" * 10_000, client)
        assert count == 10_000 and took < 2
        assert _low_water(server) == 1


@linux_low_water
def test_after_the_patience_the_rest_of_the_body_is_read_without_a_mark(listener, monkeypatch):
    """A sender slower than the mark: one wait for the patience per body, not per read."""
    monkeypatch.setattr("grpyc.stream._BODY_LOW_WATER_FROM", 0)
    client, server = _big_receiver(listener)
    with client, server:
        assert _waiting_read(server, 1 << 20, b"a" * 10_000, client)[0] == 10_000
        monkeypatch.setattr("grpyc.stream._BODY_PATIENCE", 30.0)  # a mark now would hold it
        rest = (1 << 20) - 10_000
        count, took = _waiting_read(server, rest, b"b" * 10_000, client)
        assert count == 10_000 and took < 2
        # A bigger body (a new one) gets its mark again: the patience holds it.
        reader = gevent.spawn(server.read_body_into, memoryview(bytearray(2 << 20)))
        gevent.sleep(0.02)
        client.sendall(b"c" * 10_000)
        gevent.sleep(0.05)
        assert not reader.ready() and _low_water(server) > 1
        client.sendall(b"d" * (2 << 20))
        assert reader.get(timeout=10) >= 10_000


def test_close_wakes_a_reader_waiting_for_a_body(listener, monkeypatch):
    monkeypatch.setattr("grpyc.stream._BODY_PATIENCE", 30.0)
    monkeypatch.setattr("grpyc.stream._BODY_LOW_WATER_FROM", 0)
    client, server = _big_receiver(listener)
    with client, server:

        def read():
            try:
                server.read_body_into(memoryview(bytearray(1 << 20)))
            except EOFError as exc:
                return str(exc)
            return "no error"

        reader = gevent.spawn(read)
        gevent.sleep(0.01)  # it waits for its mark
        assert not reader.ready()
        server.close()
        assert "closed" in reader.get(timeout=5)


@linux_low_water
def test_tls_and_plain_thread_streams_read_a_body_as_it_comes(listener, tmp_path, monkeypatch):
    """No mark where a read could not stop waiting for it (a plain thread's
    blocking socket) or where the kernel counts other bytes (TLS)."""
    monkeypatch.setattr("grpyc.stream._BODY_PATIENCE", 30.0)
    monkeypatch.setattr("grpyc.stream._BODY_LOW_WATER_FROM", 0)
    port = listener.getsockname()[1]

    def plain_thread_reads():
        stream = SocketStream.connect("127.0.0.1", port)  # no hub in this thread
        try:
            stream.sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 1 << 20)
            stream.write(b"go")
            return stream.read_body_into(memoryview(bytearray(1 << 20)))
        finally:
            stream.close()

    accepting = gevent.spawn(listener.accept)
    thread_read = gevent.get_hub().threadpool.spawn(plain_thread_reads)
    accepted, _ = accepting.get(timeout=5)
    with SocketStream(accepted) as peer:
        assert peer.read(2) == b"go"
        peer.write(b"b" * 10_000)
        assert thread_read.get(timeout=5) == 10_000

    pki = make_pki(tmp_path)
    server = tls_server(listener, pki)
    with SocketStream.ssl_connect("127.0.0.1", port, {"ca_certs": str(pki.ca_cert)}) as client:
        client.sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 1 << 20)
        client.write(b"abcde")
        assert client.read_body_into(memoryview(bytearray(1 << 20))) == 5
        server.get(timeout=5)


# ------------------------------------------------------ acknowledging now
def test_ack_now_on_tcp_sets_quickack_where_the_kernel_has_it(listener, monkeypatch):
    client, server = tcp_pair(listener)
    with client, server:
        if hasattr(stdlib_socket, "TCP_QUICKACK"):
            assert server.ack_now() is True
        monkeypatch.setattr("grpyc.stream._TCP_QUICKACK", 0)
        assert server.ack_now() is False  # then only a frame written acknowledges


def test_ack_now_on_a_unix_socket_has_nothing_to_do(pair):
    assert pair[0].ack_now() is True
