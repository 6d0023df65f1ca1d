"""grpyc.registry.redis_backend: RedisRegistryClient against a real redis-server on loopback."""

import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

import gevent
import gevent.monkey
import pytest

from grpyc.registry import RedisRegistryClient

LOCAL = "127.0.0.1"


# ---------------------------------------------------------------------------


def _free_port():
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        return probe.getsockname()[1]


def _wait_for_redis(redis_module, port, proc, deadline):
    probe = redis_module.Redis(host=LOCAL, port=port, socket_timeout=1)
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                return probe.ping()
            except redis_module.ConnectionError:
                gevent.sleep(0.02)
        return False
    finally:
        probe.close()


@pytest.fixture(scope="module")
def redis_url():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; CI installs it)")
    import redis

    for _attempt in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--bind", LOCAL, "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _wait_for_redis(redis, port, proc, time.monotonic() + 10):
            break
        proc.kill()
        proc.wait(5)
    else:
        pytest.fail("redis-server did not start on 127.0.0.1 in 3 attempts")
    try:
        yield f"redis://{LOCAL}:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def make_redis_client(redis_url):
    made = []
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    def make(**kwargs):
        kwargs.setdefault("prefix", prefix)
        client = RedisRegistryClient(redis_url, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_redis_register_discover_list_unregister(make_redis_client):
    client = make_redis_client(ttl=30)

    assert client.register(("web", "Front"), 8080) is True
    assert client.register(("web",), 8081, interface="127.0.0.2") is True
    assert client.discover("WEB") == ((LOCAL, 8080), ("127.0.0.2", 8081))
    assert client.discover("front") == ((LOCAL, 8080),)
    assert client.discover("none") == ()
    assert client.list() == ("FRONT", "WEB")
    assert client.list(filter_host="127.0.0.2") == ("WEB",)

    client.unregister(8081)
    assert client.discover("web") == ((LOCAL, 8080),)
    client.unregister(8080)
    assert client.discover("web") == ()
    assert client.list() == ()


def test_redis_entries_are_shared_between_clients(make_redis_client):
    server_side = make_redis_client()
    other = make_redis_client()
    assert server_side.register(("shared",), 7000) is True
    assert other.discover("shared") == ((LOCAL, 7000),)


def test_redis_entry_of_a_dead_server_expires_within_its_ttl(make_redis_client):
    client = make_redis_client(ttl=0.5)
    assert client.REREGISTER_INTERVAL == 0.5 / 3
    assert client.register(("mortal",), 7100) is True
    registered = time.monotonic()
    assert client.discover("mortal") == ((LOCAL, 7100),)

    deadline = registered + 5
    while client.discover("mortal") and time.monotonic() < deadline:
        gevent.sleep(0.05)
    gone_after = time.monotonic() - registered

    assert client.discover("mortal") == ()
    assert client.list() == ()
    assert 0.3 < gone_after < 1.5


def test_redis_calls_leave_the_hub_responsive(make_redis_client, redis_url):
    import redis

    client = make_redis_client()
    assert client.register(("busy",), 7200) is True
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    admin = redis.Redis.from_url(redis_url)
    try:
        admin.client_pause(300)  # every client's next command waits 300 ms
        started = time.monotonic()
        assert client.discover("busy") == ((LOCAL, 7200),)
        elapsed = time.monotonic() - started
        during = [t for t in ticks if started <= t <= started + elapsed]
    finally:
        ticker.kill()
        admin.close()
    assert elapsed >= 0.2
    assert len(during) >= 10


def test_redis_unreachable_answers_empty_and_logs(caplog):
    client = RedisRegistryClient(f"redis://{LOCAL}:{_free_port()}/0", timeout=1)
    try:
        with caplog.at_level(logging.WARNING, logger=client.logger.name):
            assert client.discover("x") == ()
            assert client.list() == ()
            assert client.register(("x",), 5) is False
            client.unregister(5)
    finally:
        client.close()
    assert [r.message.split(":")[0] for r in caplog.records] == [
        "redis registry discover 'x' failed",
        "redis registry list failed",
        "redis registry register failed",
        "redis registry unregister failed",
    ]


def test_redis_ttl_must_be_positive():
    with pytest.raises(ValueError, match=r"ttl must be > 0 seconds, got 0"):
        RedisRegistryClient(ttl=0)


def test_redis_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"pip install grpyc-gevent\[redis\]"):
        RedisRegistryClient()


class FakeRedis:
    """Stands in for a redis client: records which thread runs each script."""

    def __init__(self):
        self.threads = []

    def register_script(self, source):
        def run(keys, args):
            self.threads.append(threading.get_ident())
            return []

        return run


@pytest.mark.parametrize(("patched", "inline"), [(False, False), (True, True)])
def test_redis_calls_run_in_a_thread_unless_socket_is_patched(monkeypatch, patched, inline):
    monkeypatch.setattr(gevent.monkey, "is_module_patched", lambda name: patched)
    fake = FakeRedis()
    client = RedisRegistryClient(fake, host=LOCAL)

    assert client.discover("x") == ()
    assert client.list() == ()
    assert client.register(("x",), 5) is True

    main = threading.get_ident()
    assert len(fake.threads) == 3
    assert all((thread == main) is inline for thread in fake.threads)
