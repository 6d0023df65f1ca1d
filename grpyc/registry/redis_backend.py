"""The registry kept in Redis, for fleets that broadcasts do not reach.

``RedisRegistryClient`` is a ``RegistryClient``: servers register with it
and clients discover through it as with the UDP and TCP clients, but the
table lives in a Redis server (5+, single instance), updated by Lua scripts
that read Redis's own clock. The ``redis`` package is optional and loaded
on first use.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gevent
import gevent.monkey
from gevent import socket as gsocket

from grpyc.registry.clients import RegistryClient
from grpyc.registry.wire import check_aliases, check_port

__all__ = ["RedisRegistryClient"]

Address = tuple[str, int]

# Data model: one sorted set per name, "{prefix}svc:{NAME}", whose members are
# "host:port" scored by their expiry (ms, Redis server clock), and one sorted
# set "{prefix}names" of names scored by their latest expiry. The scripts read
# Redis's own TIME, so clients need no synchronised clocks, and every command
# is one atomic round trip. Each key also expires with its last member.
_LUA_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: names key, then one svc key per name. ARGV: ttl ms, member, names.
_REGISTER_LUA = (
    _LUA_NOW
    + """
local expiry = now + tonumber(ARGV[1])
local score = string.format('%.0f', expiry)
for i = 2, #KEYS do
    local name = ARGV[i + 1]
    redis.call('ZADD', KEYS[i], score, ARGV[2])
    local top = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', KEYS[i], top[2])
    local known = redis.call('ZSCORE', KEYS[1], name)
    if not known or tonumber(known) < expiry then
        redis.call('ZADD', KEYS[1], score, name)
    end
end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then
    redis.call('PEXPIREAT', KEYS[1], top[2])
end
return #KEYS - 1
"""
)

# KEYS: svc key. Live members, longest-registered first.
_DISCOVER_LUA = (
    _LUA_NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)

# KEYS: names key. ARGV: svc key prefix, host filter ('' for none).
# Reads svc keys it is not given: single-instance Redis, not Cluster.
_LIST_LUA = (
    _LUA_NOW
    + """
local floor = string.format('%.0f', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', floor)
local out = {}
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', ARGV[1] .. name, '(' .. floor, '+inf')) do
        if ARGV[2] == '' or string.match(member, '^(.*):%d+$') == ARGV[2] then
            table.insert(out, name)
            break
        end
    end
end
return out
"""
)

# KEYS: names key. ARGV: svc key prefix, member.
_UNREGISTER_LUA = """
local removed = 0
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    removed = removed + redis.call('ZREM', ARGV[1] .. name, ARGV[2])
end
return removed
"""


def _import_redis() -> Any:
    try:
        import redis  # optional dependency: loaded on first use
    except ImportError as exc:
        raise ImportError(
            "RedisRegistryClient needs the redis package: pip install grpyc-gevent[redis]"
        ) from exc
    return redis


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _outcome(call: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, call()
    except Exception as exc:  # noqa: BLE001 - handed back to the calling greenlet, which raises it
        return False, exc


def _local_address_towards(host: str, port: int) -> str:
    """The local address the system routes to ``host`` from (sends nothing)."""
    family, _, _, _, sockaddr = gsocket.getaddrinfo(host, port, 0, gsocket.SOCK_DGRAM)[0]
    with gsocket.socket(family, gsocket.SOCK_DGRAM) as probe:
        probe.connect(sockaddr)
        return str(probe.getsockname()[0])


class RedisRegistryClient(RegistryClient):
    """The registry kept in Redis, for fleets that broadcasts do not reach.

    ``register`` stores each alias with an expiry ``ttl`` seconds ahead (Redis
    server clock), so a server that dies disappears within ``ttl``; live
    servers refresh every ``REREGISTER_INTERVAL`` (a third of ``ttl``).
    Listing is always allowed. Needs Redis 5+ (single instance, not Cluster)
    and the ``redis`` package (``pip install grpyc-gevent[redis]``).

    The redis client blocks, so each call runs in the gevent hub's
    threadpool, unless ``socket`` is monkey-patched and it cooperates itself.
    """

    def __init__(
        self,
        url: Any = "redis://127.0.0.1:6379/0",
        ttl: float = 30.0,
        prefix: str = "grpyc:",
        logger: logging.Logger | None = None,
        *,
        timeout: float | None = 2.0,
        host: str | None = None,
    ) -> None:
        """Connect lazily to Redis at ``url``; nothing is sent until the first call.

        Args:
            url: a ``redis://`` URL, or a ready redis client (then not closed by ``close()``).
            ttl: seconds an entry lives without re-registration.
            prefix: start of every key this client touches.
            timeout: socket timeout of a client built from ``url``.
            host: address to register this machine's servers under; default: the
                local address of the route to the Redis server.

        Raises:
            ImportError: the redis package is not installed.
            ValueError: ``ttl`` is not positive.
        """
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
        redis = _import_redis()
        self._owns_client = isinstance(url, str)
        if self._owns_client:
            url = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._redis = url
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.ttl = float(ttl)
        self.REREGISTER_INTERVAL = self.ttl / 3
        self.prefix = prefix
        self.host = host
        self.logger = logger if logger is not None else logging.getLogger("grpyc.registry.redis")
        self._names_key = f"{prefix}names"
        self._svc_prefix = f"{prefix}svc:"
        self._registered_hosts: dict[int, str] = {}
        self._scripts = {
            "register": self._redis.register_script(_REGISTER_LUA),
            "discover": self._redis.register_script(_DISCOVER_LUA),
            "list": self._redis.register_script(_LIST_LUA),
            "unregister": self._redis.register_script(_UNREGISTER_LUA),
        }

    def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        call = functools.partial(self._scripts[script], keys=keys, args=args)
        if gevent.monkey.is_module_patched("socket"):
            return call()
        # The blocking client waits in a worker thread; only this greenlet waits for it.
        ok, value = gevent.get_hub().threadpool.apply(_outcome, (call,))
        if not ok:
            raise value
        return value

    def _attempt(
        self, what: str, script: str, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[bool, Any]:
        try:
            return True, self._run(script, keys, args)
        except self._errors as exc:
            self.logger.warning("redis registry %s failed: %s", what, exc)
            return False, None

    def _advertised_host(self, interface: str) -> str:
        if interface:
            return interface
        if self.host is None:
            kwargs = getattr(getattr(self._redis, "connection_pool", None), "connection_kwargs", {})
            redis_host = kwargs.get("host")
            # No host: a Unix socket, so the servers are on Redis's machine.
            self.host = (
                _local_address_towards(redis_host, kwargs.get("port", 6379))
                if redis_host
                else "127.0.0.1"
            )
        return self.host

    def discover(self, name: str) -> tuple[Address, ...]:
        if not isinstance(name, str):
            raise TypeError(f"service name must be str, got {name!r}")
        key = f"{self._svc_prefix}{name.upper()}"
        ok, members = self._attempt(f"discover {name!r}", "discover", [key], [])
        servers = []
        for member in members if ok else ():
            host, _, port = _text(member).rpartition(":")
            if host and port.isdigit():
                servers.append((host, int(port)))
        return tuple(servers)

    def list(self, filter_host: str | None = None) -> tuple[str, ...] | None:
        args = [self._svc_prefix, filter_host or ""]
        ok, names = self._attempt("list", "list", [self._names_key], args)
        return tuple(_text(name) for name in names) if ok else ()

    def register(self, aliases: Iterable[str], port: int, interface: str = "") -> bool:
        names = tuple(dict.fromkeys(name.upper() for name in check_aliases(aliases)))
        check_port(port)
        try:
            host = self._advertised_host(interface)
        except OSError as exc:
            self.logger.warning("cannot tell this machine's address towards redis: %s", exc)
            return False
        self._registered_hosts[port] = host
        if not names:
            return True
        keys = [self._names_key, *(f"{self._svc_prefix}{name}" for name in names)]
        ttl_ms = max(1, round(self.ttl * 1000))
        ok, _ = self._attempt("register", "register", keys, [ttl_ms, f"{host}:{port}", *names])
        return ok

    def unregister(self, port: int) -> None:
        check_port(port)
        host = self._registered_hosts.pop(port, None)
        if host is None:
            try:
                host = self._advertised_host("")
            except OSError as exc:
                self.logger.warning("cannot tell this machine's address towards redis: %s", exc)
                return
        args = [self._svc_prefix, f"{host}:{port}"]
        self._attempt("unregister", "unregister", [self._names_key], args)

    def close(self) -> None:
        """Close the redis client if this object built it from a URL."""
        if self._owns_client:
            self._redis.close()
