"""The hub's reader pool: idle connections hold no greenlet; readers serve one
connection's turn after another and never carry a kill from one to the next."""

import gc

import gevent
import greenlet
import pytest

from grpyc._readers import (
    MAX_IDLE,
    MAX_LINGERING,
    PROBE_EVERY,
    WASTE_WEIGHT,
    WASTED_LIMIT,
    PoolReader,
    ReaderPool,
)
from tests.test_faults import wait_until


def _pool():
    return ReaderPool.for_hub(gevent.get_hub())


@pytest.fixture(autouse=True)
def _fresh_linger_score(monkeypatch):
    """Each test starts with a pool that has seen no lingering wasted (earlier
    tests of the same process may have taught it otherwise)."""
    pool = _pool()
    monkeypatch.setattr(pool, "_wasted", 0)
    monkeypatch.setattr(pool, "_refused", 0)


def _greenlets():
    gc.collect()
    return sum(isinstance(obj, greenlet.greenlet) for obj in gc.get_objects())


def test_a_busy_connection_keeps_its_reader_lingering_between_requests(pair):
    server, client = pair
    ran_in = []
    server._local_root.exposed_where = lambda: ran_in.append(gevent.getcurrent()) or len(ran_in)
    for n in range(1, 4):
        assert client.root.where() == n
    assert all(isinstance(glet, PoolReader) for glet in ran_in)
    assert len(set(ran_in)) == 1  # the same greenlet each time: it waited on the connection
    assert server._hub._baton.reader is ran_in[0]
    assert client._hub._baton.reader is None  # nothing came that the caller did not read
    assert _pool().lingering >= 1


def test_beyond_max_lingering_idle_connections_hold_no_reader(make_pair):
    extra = 10
    pairs = [make_pair() for _ in range(MAX_LINGERING + extra)]
    before = _greenlets()
    for _server, client in pairs:
        assert client.root.echo(7) == 7
        # The call's method proxy is freed by the collector here, not in one wave
        # after the loop: each DEL would wake its connection's reader again, in the
        # wave's order, and that order would decide which readers are the oldest.
        gc.collect()
    assert _greenlets() - before <= MAX_IDLE + MAX_LINGERING + 5
    assert _pool().lingering == MAX_LINGERING
    # Asked back to the pool: each comes back with RETIRE at a later turn of the
    # loop. Connections of earlier tests share the pool and may ask back some of
    # the newer ones too, so those are counted, not named.
    asked_back = [server._hub._baton for server, _client in pairs[:extra]]
    assert wait_until(lambda: all(baton.reader is None for baton in asked_back), timeout=2)
    holding = [server for server, _client in pairs if server._hub._baton.reader is not None]
    assert len(holding) <= MAX_LINGERING
    assert all(isinstance(server._hub._baton.reader, PoolReader) for server in holding)
    for _server, client in pairs:  # the ones asked back are served again
        assert client.root.echo(8) == 8


def test_readers_asked_back_serve_other_connections(make_pair, monkeypatch):
    import grpyc._readers

    monkeypatch.setattr(grpyc._readers, "MAX_LINGERING", 1)
    ran_in = []

    from grpyc.service import Service

    class WhereService(Service):
        def exposed_where(self):
            ran_in.append(gevent.getcurrent())

    pairs = [make_pair(WhereService()) for _ in range(5)]
    for _round in range(3):
        for _server, client in pairs:
            client.root.where()
    assert len(ran_in) == 15
    assert len(set(ran_in)) <= 3  # one lingering, one back in the pool, one on its way
    assert _pool().lingering <= 1


def _counting_ask_backs(monkeypatch):
    from grpyc._baton import ReadBaton

    asked = []
    ask_back = ReadBaton.ask_back

    def counting(baton):
        asked.append(baton)
        ask_back(baton)

    monkeypatch.setattr(ReadBaton, "ask_back", counting)
    return asked


def _where_service(ran_in):
    from grpyc.service import Service

    class WhereService(Service):
        def exposed_where(self):
            ran_in.append(gevent.getcurrent())

    return WhereService()


def test_readers_stop_lingering_where_each_is_asked_back_in_vain(make_pair, monkeypatch):
    """More busy connections than lingering readers, calling in turn (S3): each
    lingering reader was asked back before its connection's next request, an
    ask-back, two switches and a loop callback per request for nothing. The
    pool learns it: then a reader leaves at once, but for one probe in
    `PROBE_EVERY`; and when one connection is busy alone again, its reader
    lingers again within a few probes."""
    import grpyc._readers

    monkeypatch.setattr(grpyc._readers, "MAX_LINGERING", 2)
    ran_in = []
    pairs = [make_pair(_where_service(ran_in)) for _ in range(8)]
    wheres = [client.root.where for _server, client in pairs]  # a request per call (S3)
    asked = _counting_ask_backs(monkeypatch)
    for _round in range(6):
        for where in wheres:
            where()
    assert len(asked) >= WASTED_LIMIT // WASTE_WEIGHT  # it learned it from these
    asked.clear()
    rounds = 10
    for _round in range(rounds):
        for where in wheres:
            where()
    requests = rounds * len(pairs)
    assert len(asked) <= requests // PROBE_EVERY + 1
    assert all(isinstance(glet, PoolReader) for glet in ran_in)  # still run inline

    # One connection busy alone: the readers lingering on the others are old,
    # a probe asks one back, and this connection's reader stays from then on.
    ran_in.clear()
    for _ in range(3 * PROBE_EVERY):
        wheres[0]()
    tail = ran_in[-PROBE_EVERY:]
    assert len(set(tail)) == 1  # one greenlet: it lingered between requests
    for _server, client in pairs:  # and the others are served as before
        client.root.where()


def test_a_reader_killed_while_lingering_counts_as_asked_back(pair):
    server, client = pair
    assert client.root.echo(1) == 1
    reader = server._hub._baton.reader
    assert isinstance(reader, PoolReader)
    assert wait_until(lambda: server._hub._baton.reader_idle, timeout=2)
    pool = _pool()
    wasted = pool._wasted
    lingering = pool.lingering
    reader.kill(timeout=5)
    assert pool.lingering == lingering - 1
    assert pool._wasted == min(wasted + WASTE_WEIGHT, 2 * WASTED_LIMIT)  # the connection closed too
    assert server.closed


def test_a_busy_burst_starts_extra_readers_and_keeps_at_most_max_idle(make_pair):
    """Many connections readable at once each get a reader; the pool keeps MAX_IDLE."""
    count = MAX_IDLE + 20
    pairs = [make_pair() for _ in range(count)]
    release = gevent.event.Event()
    started = []

    def block():
        started.append(gevent.getcurrent())
        release.wait(10)
        return 1

    calls = [gevent.spawn(client.root.call, block) for _server, client in pairs]
    deadline = 200
    while len(started) < count and deadline:
        gevent.sleep(0.01)
        deadline -= 1
    assert len(started) == count
    release.set()
    assert [call.get(timeout=10) for call in calls] == [1] * count
    gevent.sleep(0)
    assert _pool().idle <= MAX_IDLE


def test_a_pool_reader_killed_with_its_connection_never_reads_another(make_pair):
    """A request running inline that blocks hands reading over; when its
    connection is then closed, its greenlet is killed and must not return to
    the pool (the kill lands a loop turn later, wherever it then is)."""
    doomed_server, doomed_client = make_pair()
    other_server, other_client = make_pair()
    entered = gevent.event.Event()
    blocked_in = []

    def stuck():
        blocked_in.append(gevent.getcurrent())
        entered.set()
        gevent.sleep(30)

    doomed_server._local_root.exposed_stuck = stuck

    def call_stuck():
        try:
            doomed_client.root.stuck()
        except EOFError:
            return "closed"

    caller = gevent.spawn(call_stuck)
    assert entered.wait(5)
    assert isinstance(blocked_in[0], PoolReader)
    doomed_server._hub.shutdown(EOFError("closed by the test"))
    assert caller.get(timeout=5) == "closed"
    blocked_in[0].join(timeout=5)
    assert blocked_in[0].dead
    assert blocked_in[0] not in _pool()._idle and blocked_in[0] not in _pool()._retired
    for n in range(20):
        assert other_client.root.echo(n) == n
    assert not other_server.closed and not other_client.closed


def test_a_reader_that_blocked_in_a_request_goes_back_to_the_pool(pair):
    """A request running inline that blocks hands reading over to a parked
    reader; once its request is answered, the old reader is parked in turn.
    Blocking requests one after another then need no new greenlet each."""
    server, client = pair
    ran_in = []

    def blocks(n):
        ran_in.append(gevent.getcurrent())
        gevent.sleep(0.001)
        return n

    server._local_root.exposed_blocks = blocks
    for n in range(30):
        assert client.root.blocks(n) == n
    assert all(isinstance(glet, PoolReader) for glet in ran_in)
    assert len(set(ran_in)) <= 3  # taken turns, not a new reader per request
    assert wait_until(lambda: any(glet in _pool()._idle for glet in ran_in), timeout=5)


@pytest.mark.parametrize("kind", ["gevent.local", "contextvars"])
def test_a_reader_that_blocked_parks_only_without_state_its_request_left(make_pair, kind):
    """The old reader checks for greenlet-local state before it parks: with
    some, it ends with its request instead of serving another connection."""
    state = _state_service(kind)
    first_server, first = make_pair(state())
    _second_server, second = make_pair(state())
    first.root.set_and_block("first")
    setter = first_server._local_root.ran_in
    assert isinstance(setter, PoolReader)
    setter.join(timeout=5)
    assert setter.dead and setter not in _pool()._idle
    for _ in range(5):
        assert second.root.get() is None


def test_a_peer_closing_an_idle_connection_is_noticed(make_pair):
    """With no greenlet of its own, a connection still sees its peer leave."""
    server, client = make_pair()
    assert client.root.echo(1) == 1
    closed = gevent.event.Event()
    server.when_closed(closed.set)
    client._channel.close()
    assert closed.wait(5)
    assert server.closed


def test_when_closed_runs_after_on_disconnect_and_at_once_when_closed(make_pair):
    order = []
    from grpyc.service import Service

    class Watching(Service):
        def on_disconnect(self, conn):
            order.append("on_disconnect")

    server, client = make_pair(Watching())
    server.when_closed(lambda: order.append("callback"))
    done = gevent.event.Event()
    server.when_closed(done.set)
    client.close()
    assert done.wait(5)
    assert server.closed
    assert order == ["on_disconnect", "callback"]
    server.when_closed(lambda: order.append("late"))
    assert order[-1] == "late"


def _state_service(kind):
    """A service whose requests store and read greenlet-local state of `kind`."""
    import contextvars

    import gevent.local

    from grpyc.service import Service

    local = gevent.local.local()
    var = contextvars.ContextVar("value")

    class State(Service):
        def exposed_set(self, value):
            if kind == "gevent.local":
                local.value = value
            else:
                var.set(value)

        def exposed_set_and_block(self, value):
            self.ran_in = gevent.getcurrent()
            self.exposed_set(value)
            gevent.sleep(0.001)  # reading is handed over meanwhile

        def exposed_get(self):
            if kind == "gevent.local":
                return getattr(local, "value", None)
            return var.get(None)

    return State


@pytest.mark.parametrize("kind", ["gevent.local", "contextvars"])
def test_greenlet_local_state_stays_with_its_connection(make_pair, kind):
    """A reader that a request left state on serves only that connection from
    then on: its later requests see the state, other connections never do
    (a thread per connection in RPyC)."""
    state = _state_service(kind)
    first_server, first = make_pair(state())
    _second_server, second = make_pair(state())
    first.root.set("first")
    assert second.root.get() is None
    for _ in range(3):
        assert first.root.get() == "first"
        assert second.root.get() is None
    pinned = first_server._hub._baton.reader
    assert isinstance(pinned, PoolReader)
    assert pinned not in _pool()._idle
    first.close()
    pinned.join(timeout=5)
    assert pinned.dead  # it ends with its connection, never parked for another
    assert second.root.get() is None


def test_an_ask_back_counts_as_waste_when_asked():
    """When many connections become readable at once (a server's clients all
    connecting, S3), the readers asked back get back only after the hub has
    started a reader for each of the others: counted only then, the waste
    let every reader of the burst linger (up to 1,054 alive at once, ~8 KiB
    each, at 2,000 connections). Counted as the ask is made, the pool stops
    asking back before any of them got back."""

    class LingeringBaton:  # what `_may_linger` uses of a lingering reader's baton
        def ask_back(self):
            asked.append(self)

    asked = []
    pool = ReaderPool(gevent.get_hub())
    for _ in range(MAX_LINGERING):
        pool._lingering[LingeringBaton()] = None
    assert pool._may_linger()
    assert len(asked) == 1 and pool._wasted == WASTE_WEIGHT
    while pool._may_linger():  # nobody got back meanwhile
        pool._lingering[LingeringBaton()] = None
    assert len(asked) == -(-WASTED_LIMIT // WASTE_WEIGHT)  # ask-backs until the limit
