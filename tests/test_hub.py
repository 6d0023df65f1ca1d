"""The connection hub: limits, writer, shutdown, foreign threads."""

import gc
import os
import threading
import time

import gevent
import pytest

from grpyc._blockhook import HOOK
from grpyc.config import Limits
from grpyc.hub import ConnectionHub, ForeignThreadError, ReplySlot
from tests.services import TestService
from tests.test_faults import live_greenlets
from tests.test_protocol import outcome_of


def test_reader_hands_frames_over_in_order(make_hub):
    hub, peer, frames, _ = make_hub()
    for n in range(5):
        peer.send(b"\x02frame%d" % n)
    deadline = time.monotonic() + 2
    while len(frames) < 5 and time.monotonic() < deadline:
        hub.wait_frame(0.5)
    assert frames == [b"\x02frame%d" % n for n in range(5)]
    hub.shutdown(EOFError("done"))


def test_shutdown_fails_every_pending_slot_at_once(make_hub):
    hub, peer, _, closed = make_hub()
    slots = [ReplySlot() for _ in range(3)]
    for seq, slot in enumerate(slots):
        hub.expect_reply(seq, slot)
    peer.close()
    outcomes = [hub.wait_reply(slot, 2) for slot in slots]
    assert all(is_exc and isinstance(exc, EOFError) for is_exc, exc, _ in outcomes)
    assert len(closed) == 1
    hub.shutdown(EOFError("again"))
    assert len(closed) == 1


def test_submit_runs_queues_then_refuses(make_hub):
    hub, _, _, _ = make_hub(max_concurrent_requests=2, max_queued_requests=1)
    release = gevent.event.Event()
    ran = []

    def job(n):
        release.wait(5)
        ran.append(n)

    assert [hub.submit(job, n) for n in range(4)] == [True, True, True, False]
    assert hub.running_handlers == 2
    release.set()
    deadline = time.monotonic() + 2
    while len(ran) < 3 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert sorted(ran) == [0, 1, 2]
    hub.shutdown(EOFError("done"))


def _spy_on_writes(monkeypatch, channel, hold=0.0):
    """The number of frames of each write to `channel` (a list it fills); each
    write first sleeps `hold` seconds."""
    writes = []
    send, send_many = channel.send, channel.send_many

    def spy_send(payload):
        writes.append(1)
        gevent.sleep(hold)
        send(payload)

    def spy_send_many(payloads):
        writes.append(len(payloads))
        gevent.sleep(hold)
        send_many(payloads)

    monkeypatch.setattr(channel, "send", spy_send)
    monkeypatch.setattr(channel, "send_many", spy_send_many)
    return writes


def test_small_frames_queued_while_writing_are_coalesced(make_hub, monkeypatch):
    hub, peer, _, _ = make_hub()
    writes = _spy_on_writes(monkeypatch, hub._writer._channel, hold=0.01)  # the others queue
    jobs = [gevent.spawn(hub.send, b"\x01msg%d" % n) for n in range(10)]
    gevent.joinall(jobs, timeout=2, raise_error=True)
    assert writes[0] == 1
    assert sum(writes) == 10
    assert len(writes) == 2
    assert [peer.recv() for _ in range(10)] == [b"\x01msg%d" % n for n in range(10)]
    hub.shutdown(EOFError("done"))


@pytest.mark.parametrize("pieces", [False, True], ids=["bytes", "pieces"])
def test_peer_that_never_reads_is_dropped_at_the_send_buffer_limit(make_hub, pieces):
    from grpyc.framing import Pieces

    hub, peer, _, closed = make_hub(max_send_buffer=256 * 1024)
    chunk = b"\x01" + b"x" * (64 * 1024)
    if pieces:  # a message with a big value counts its full size, not its buffer count
        chunk = Pieces([b"\x01", b"x" * (64 * 1024)])
    writer = gevent.spawn(outcome_of, lambda: [hub.send(chunk) for _ in range(1000)])
    deadline = time.monotonic() + 5
    while not hub.closed and time.monotonic() < deadline:
        hub.send_nowait(chunk)
        gevent.sleep(0.01)
    assert hub.closed
    assert "send buffer" in str(closed[0])
    assert isinstance(writer.get(timeout=2), EOFError)
    peer.close()


def test_interrupted_write_closes_the_connection(make_hub):
    hub, peer, _, closed = make_hub(max_send_buffer=1 << 30)
    big = b"\x01" + os.urandom(8 << 20)  # incompressible, far more than socket buffers
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.2):
        hub.send(big)
    assert hub.closed
    assert "interrupted" in str(closed[0])
    peer.close()


def test_foreign_thread_call_runs_on_the_hub(make_hub):
    hub, _, _, _ = make_hub()
    results = []
    thread = threading.Thread(
        target=lambda: results.append(hub.call_from_thread(lambda a, b: a + b, (2, 3), 5))
    )
    thread.start()
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        gevent.sleep(0.01)
    thread.join(1)
    assert results == [5]
    hub.shutdown(EOFError("done"))


def test_foreign_thread_call_times_out_when_hub_is_blocked(make_hub):
    hub, _, _, _ = make_hub()
    errors = []

    def worker():
        try:
            hub.call_from_thread(lambda: 1, (), 0.2)
        except ForeignThreadError as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)  # blocks this (the hub's) thread outside gevent
    assert len(errors) == 1
    assert "did not run the call" in str(errors[0])
    gevent.sleep(0)  # let the late callback run; it must not break anything
    hub.shutdown(EOFError("done"))


def test_shutdown_kills_handler_greenlets(make_hub):
    hub, _, _, _ = make_hub()
    started = gevent.event.Event()

    def stuck():
        started.set()
        gevent.sleep(30)

    hub.submit(stuck)
    started.wait(2)
    before = live_greenlets()
    hub.shutdown(EOFError("done"))
    gevent.sleep(0)
    gc.collect()
    assert live_greenlets() < before


def test_blocking_inline_request_hands_reading_over(pair):
    _, client = pair
    root = client.root
    slow = gevent.spawn(root.sleep, 0.5)
    gevent.sleep(0.05)
    started = time.monotonic()
    assert root.echo("fast") == "fast"
    assert time.monotonic() - started < 0.3
    assert slow.get(timeout=2) == 0.5


def test_blocking_requests_of_one_connection_overlap_under_a_foreign_switch_tracer(pair):
    import greenlet

    _, client = pair
    seen = []
    previous = greenlet.settrace(lambda event, args: seen.append(event))
    try:
        started = time.monotonic()
        jobs = [gevent.spawn(client.root.sleep, 0.2) for _ in range(5)]
        gevent.joinall(jobs, timeout=3, raise_error=True)
        elapsed = time.monotonic() - started
        assert [job.value for job in jobs] == [0.2] * 5
        assert elapsed < 0.6  # one after another would take 1 s
        assert greenlet.gettrace() is not None  # ours, left alone
    finally:
        greenlet.settrace(previous)
    assert seen


def test_callers_woken_by_a_batch_of_replies_send_in_few_writes(pair, monkeypatch):
    """64 callers on one connection: the next requests of the callers one batch
    of replies wakes go out in one write, not one write each."""
    _, client = pair
    echo = client.root.echo
    frames_per_write = _spy_on_writes(monkeypatch, client._hub._writer._channel)
    callers, calls = 64, 20

    def caller(n):
        return [echo((n, i)) for i in range(calls)]

    jobs = [gevent.spawn(caller, n) for n in range(callers)]
    gevent.joinall(jobs, timeout=20, raise_error=True)
    assert [job.value for job in jobs] == [[(n, i) for i in range(calls)] for n in range(callers)]
    assert sum(frames_per_write) >= callers * calls
    assert len(frames_per_write) < callers * calls / 8


def test_a_greenlet_serving_a_connection_until_it_closes_is_its_only_reader():
    """``serve_all`` reads in the calling greenlet (it waits there anyway) and
    keeps reading there; the other side, served by nobody, holds no reader
    greenlet between calls."""
    from grpyc.service import VoidService
    from tests.conftest import _socketpair_channels
    from tests.services import TestService

    left, right = _socketpair_channels()
    server = TestService()._connect(left, {})
    serving = gevent.spawn(server.serve_all)
    client = VoidService()._connect(right, {})
    for _ in range(3):
        assert client.root.echo("hi") == "hi"
        assert server._hub._baton.reader is serving
        assert client._hub._baton.reader is None
    client.close()
    serving.join(timeout=5)
    assert serving.dead


def test_runtime_greenlets_do_not_record_their_spawning_stack(pair):
    server, client = pair
    callback_ran_in = []

    def callback():
        callback_ran_in.append(gevent.getcurrent())
        return 1

    assert server.root is not None
    assert client.root.call(callback) == 1
    handler = callback_ran_in[0]
    assert isinstance(handler, gevent.Greenlet)
    assert handler.spawning_stack is None
    readers = []
    server._local_root.exposed_echo = lambda value: readers.append(gevent.getcurrent()) or value
    assert client.root.echo(1) == 1
    assert isinstance(readers[0], gevent.Greenlet)  # the server's pool reader ran it
    assert readers[0].spawning_stack is None


def test_a_caller_handles_the_frames_that_came_with_its_reply():
    """A peer sends its DEL of our object right behind its reply (one write):
    the caller handles it before returning; passing the baton on for it cost
    the reader a wake-up and the next call a follow (S1 root.echo 1.07x)."""
    from grpyc import consts
    from grpyc.messages import decode_message, encode_del, encode_reply
    from grpyc.service import VoidService
    from tests.conftest import _socketpair_channels

    left, peer = _socketpair_channels()
    client = VoidService()._connect(left, {})
    exported = client._local_objects
    try:
        for _ in range(5):
            label, id_pack = client._box(lambda: None)
            assert label == consts.LABEL_REMOTE_REF and len(exported) == 1

            def answer(id_pack=id_pack):
                msg = None
                while msg != consts.MSG_REQUEST:  # skip our answers to earlier DELs
                    msg, seq, _ = decode_message(peer.recv(), 64)
                reply = encode_reply(seq, (consts.LABEL_VALUE, "pong"))
                peer.send_many([reply, encode_del(10_000 + seq, id_pack, 1)])

            answering = gevent.spawn(answer)
            assert client.sync_request(consts.HANDLE_PING, "pong") == "pong"
            assert len(exported) == 0  # the DEL was handled before the call returned
            answering.get(timeout=2)
    finally:
        peer.close()
        client.close()


def test_a_caller_does_not_wait_on_a_handler_started_behind_its_reply():
    """Behind the reply come a request (its handler runs long without
    yielding) and a PING: the caller returns at once, not after the handler."""
    from grpyc import consts
    from grpyc.messages import decode_message, encode_reply, encode_request
    from grpyc.service import VoidService
    from tests.conftest import _socketpair_channels

    left, peer = _socketpair_channels()
    client = VoidService()._connect(left, {})
    ran = []

    def busy():
        began = time.monotonic()
        while time.monotonic() - began < 0.4:  # CPU-bound: never yields
            pass
        ran.append(True)

    _, id_pack = client._box(busy)
    call_busy = (
        consts.LABEL_TUPLE,
        ((consts.LABEL_LOCAL_REF, id_pack), (consts.LABEL_TUPLE, ()), (consts.LABEL_TUPLE, ())),
    )
    ping = (consts.LABEL_TUPLE, ((consts.LABEL_VALUE, "x"),))

    def answer():
        _, seq, _ = decode_message(peer.recv(), 64)
        peer.send_many(
            [
                encode_reply(seq, (consts.LABEL_VALUE, "pong")),
                encode_request(1, consts.HANDLE_CALL, call_busy),
                encode_request(2, consts.HANDLE_PING, ping),
            ]
        )

    answering = gevent.spawn(answer)
    try:
        began = time.monotonic()
        assert client.sync_request(consts.HANDLE_PING, "pong") == "pong"
        assert time.monotonic() - began < 0.3
        assert not ran
        answering.get(timeout=2)
        deadline = time.monotonic() + 5
        while not ran and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert ran  # and the handler did run
    finally:
        peer.close()
        client.close()


def test_a_caller_handles_at_most_one_batch_behind_its_reply():
    """A peer floods small frames right behind a caller's reply: the caller
    returns after one batch (FAIR_FRAMES); the reader handles the rest."""
    import logging

    from grpyc.hub import FAIR_FRAMES
    from grpyc.messages import encode_reply
    from tests.conftest import _socketpair_channels

    left, peer = _socketpair_channels()
    slot = ReplySlot()
    handled_by = []

    def on_frame(payload):
        handled_by.append(gevent.getcurrent())
        slot.deliver(False, "ours")  # the first frame is the caller's reply

    hub = ConnectionHub(
        left, on_frame, lambda reason: None, name="test", logger=logging.getLogger("test"),
        limits=Limits(
            max_concurrent_requests=4, max_queued_requests=2,
            max_request_bytes=1 << 30, max_send_buffer=1 << 20,
        ),
    )  # fmt: skip
    hub.start()
    flood = 20 * FAIR_FRAMES
    try:
        gevent.sleep(0)  # the reader runs and sleeps, idle: the caller may take the baton
        peer.send_many([encode_reply(seq, ("x",)) for seq in range(flood)])
        assert hub.wait_reply(slot, 5) == (False, "ours", ())
        caller = gevent.getcurrent()
        assert 1 <= handled_by.count(caller) <= FAIR_FRAMES
        deadline = time.monotonic() + 5
        while len(handled_by) < flood and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert len(handled_by) == flood  # nothing lost: the reader took the rest
    finally:
        hub.shutdown(EOFError("done"))
        peer.close()


class _HookProbe(TestService):
    def __init__(self):
        super().__init__()
        self.greenlets = []

    def exposed_hooked(self):
        me = gevent.getcurrent()
        self.greenlets.append(me)
        return HOOK in me.__dict__

    def exposed_sleep_and_tell(self, seconds):
        gevent.sleep(seconds)
        return HOOK in gevent.getcurrent().__dict__


def test_the_block_hook_is_carried_only_while_a_request_runs_inline(make_pair):
    import greenlet

    service = _HookProbe()
    _server, client = make_pair(server_service=service)
    assert client.root.hooked() is True  # run inline, hook on
    (reader,) = service.greenlets
    assert HOOK not in reader.__dict__  # and off between requests
    assert client.root.sleep_and_tell(0.01) is False  # off once it blocked
    assert greenlet.gettrace() is None  # no greenlet tracing at all


def test_a_reader_with_its_own_switch_out_serves_requests_in_handlers(make_pair):
    switched_out = []

    class OwnSwitchOut(gevent.Greenlet):
        def switch_out(self):
            switched_out.append(self)

    service = _HookProbe()
    server, client = make_pair(server_service=service)
    own = OwnSwitchOut(server._hub.serve_until_closed)
    own.start()
    gevent.sleep(0)  # it reads from now on
    assert client.root.hooked() is False
    assert service.greenlets[0] is not own  # a handler ran it, not the reader
    started = time.monotonic()
    slow = gevent.spawn(client.root.sleep, 0.5)
    gevent.sleep(0.05)
    assert client.root.echo("fast") == "fast"
    assert time.monotonic() - started < 0.4
    assert slow.get(timeout=2) == 0.5
    assert own in switched_out  # its own switch_out still runs
