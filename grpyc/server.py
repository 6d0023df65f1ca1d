"""Servers: listening sockets, accepting, limits, shutdown, worker processes.

This module owns everything between a listening socket and a built
`Connection`: binding (TCP, IPv6, Unix sockets), accepting on
`gevent.server.StreamServer` (one greenlet per connection), the server's
limits, authenticators (TLS), graceful shutdown, pre-forked worker processes,
RPyC's `OneShotServer` and `ForkingServer`, and announcing the service to a
registry. What the frames mean is `protocol`'s business; the registry
protocol is `registry`'s.

Invariants:

- A connection holds one of ``max_connections`` slots from accept to close.
  Beyond the limit a new connection is accepted and closed at once, with a
  log line naming the limit: the client sees the connection end (`EOFError`)
  instead of hanging in the listen backlog.
- Everything before a connection is in use must finish within
  ``handshake_timeout`` of the accept: the authenticator, the service's
  ``on_connect`` and the client's first complete frame. A client that
  connects and says nothing is closed then and gives its slot back.
- ``close()`` stops accepting at once, closes each connection as soon as it
  has no call in flight, and after ``grace_period`` closes the rest. Child
  processes (workers, forked connections) get SIGTERM, do the same, and get
  SIGKILL if they outlive the grace period.
- Every greenlet and child process a server starts is owned by it and ended
  by ``close()``. Nothing is printed: each server logs to its own logger.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import gevent
import gevent.os
import gevent.socket
from gevent import Greenlet
from gevent.event import Event
from gevent.pool import Group, Pool
from gevent.server import StreamServer

from grpyc.authenticators import AuthenticationError
from grpyc.channel import Channel
from grpyc.registry import UDPRegistryClient
from grpyc.stream import SocketStream, set_keepalive

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "ForkingServer",
    "GeventServer",
    "OneShotServer",
    "Server",
    "ThreadPoolServer",
    "ThreadedServer",
]

# A connection costs about 27 KiB of server memory (measured with 2,000
# connections, tests/test_cli.py), so the default caps a flood near 270 MiB;
# it is also far above the 1024 descriptors most processes get by default
# (the `grpyc` command raises its descriptor limit to fit).
DEFAULT_MAX_CONNECTIONS = 10_000
# A client finishes TLS and sends its first frame within a few round trips;
# ten seconds is generous on slow links and short enough that silent
# clients cannot hold many slots.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
# Long enough for ordinary calls to finish, shorter than the stop timeouts of
# common process managers (Kubernetes 30 s, systemd 90 s).
DEFAULT_GRACE_PERIOD = 10.0

# How often close() looks for connections whose calls have finished: the
# hub offers no notification, and this only runs while shutting down.
_DRAIN_POLL = 0.05
# conn.close() waits up to the connection's close_timeout (2 s by default)
# for the peer's answer; this bounds that wait for all connections at once.
_CLOSE_WAIT = 5.0
# Children get the grace period plus this to close their connections and
# exit before SIGKILL; then this long again to be reaped.
_CHILD_STOP_MARGIN = 2.0
# A registration the registry did not acknowledge is retried this soon (as
# in RPyC), instead of after the full re-registration interval.
_REGISTER_RETRY = 1.0
# Out of descriptors (or memory) while accepting: pause accepting this long
# instead of spinning on a listener that stays readable.
_ACCEPT_PAUSE = 0.1
_ACCEPT_RESOURCE_ERRORS = frozenset([errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
# A worker that dies sooner than this after starting is restarted with a
# growing delay (up to the maximum), so a worker that cannot start does
# not turn the supervisor into a fork loop.
_STABLE_WORKER_SECONDS = 5.0
_RESTART_DELAY_MIN = 0.1
_RESTART_DELAY_MAX = 5.0
# How often a worker checks that its supervisor is still alive.
_SUPERVISOR_CHECK = 1.0


class _HandshakeTimeoutError(TimeoutError):
    """Raised into a connection's setup when handshake_timeout passes."""


# ---------------------------------------------------------------- helpers
def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _check_timeout(name: str, value: float | None) -> None:
    if value is not None and not (_is_number(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_limits(
    max_connections: int,
    workers: int,
    handshake_timeout: float | None,
    idle_timeout: float | None,
    keepalive: bool | int,
    grace_period: float,
) -> None:
    """Raise ValueError naming the first server limit that is out of range."""
    _check_count("max_connections", max_connections)
    _check_count("workers", workers)
    _check_timeout("handshake_timeout", handshake_timeout)
    _check_timeout("idle_timeout", idle_timeout)
    if not (_is_number(grace_period) and grace_period >= 0):
        raise ValueError(f"grace_period must be seconds >= 0, got {grace_period!r}")
    if not isinstance(keepalive, bool) and (not isinstance(keepalive, int) or keepalive < 1):
        raise ValueError(f"keepalive must be a bool or seconds >= 1, got {keepalive!r}")


def _describe_peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return "a Unix socket client"


def _describe_status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _is_tcp(sock: Any) -> bool:
    return sock.family in (socket.AF_INET, socket.AF_INET6)


def _in_flight(conn: Any) -> int:
    """Requests the connection is running or has queued.

    Queued requests exist only while handlers run, so the running count is
    enough to tell a busy connection from an idle one.
    """
    return 0 if conn.wait_idle(0) else 1


def _exit_child(status: int) -> NoReturn:
    """End a forked child without running the parent's cleanup (atexit, pytest...)."""
    logging.shutdown()
    os._exit(status)


class _WatchedChannel(Channel):
    """A channel that tells the server when its first frame arrives or it closes."""

    def __init__(self, stream: SocketStream) -> None:
        super().__init__(stream)
        self.saw_frame = False
        self._on_settled: list[Any] = []

    def on_settled(self, callback: Any) -> None:
        """Call ``callback()`` at the first complete frame or when the channel closes."""
        self._on_settled.append(callback)

    def _settle(self) -> None:
        callbacks, self._on_settled = self._on_settled, []
        for callback in callbacks:
            callback()

    def recv(self) -> bytes:
        payload = super().recv()
        self._saw(payload)
        return payload

    def next_buffered(self) -> bytes | None:
        payload = super().next_buffered()
        self._saw(payload)
        return payload

    def _saw(self, payload: bytes | None) -> None:
        if payload is not None and not self.saw_frame:
            self.saw_frame = True
            self._settle()

    def close(self) -> None:
        super().close()
        self._settle()


class _Acceptor(StreamServer):
    """StreamServer whose accept errors go to the server's log.

    Running out of descriptors pauses accepting for a moment (clients wait
    in the backlog) instead of spinning, and nothing is printed.
    """

    def __init__(
        self,
        listener: socket.socket,
        handle: Callable[[Any, Any], None],
        pool: Pool,
        logger: logging.Logger,
    ) -> None:
        super().__init__(listener, handle, spawn=pool)
        self._logger = logger
        self._pause: Any = None

    def do_read(self) -> tuple[Any, Any] | None:
        try:
            return super().do_read()
        except OSError as exc:
            if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                self._logger.error(
                    "cannot accept a connection: %s; pausing accept for %.1f s", exc, _ACCEPT_PAUSE
                )
                self._pause_accepting()
                return None
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                # The client left before we accepted: nothing to serve.
                return None
            raise

    def _pause_accepting(self) -> None:
        self.stop_accepting()
        self._pause = self.loop.timer(_ACCEPT_PAUSE)
        self._pause.start(self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self._pause is not None:
            self._pause.close()
            self._pause = None
        if self.started and not self.closed:
            self.start_accepting()

    def close(self) -> None:
        if self._pause is not None:
            self._pause.stop()
            self._pause.close()
            self._pause = None
        super().close()


class _Children:
    """The child processes of one server: reaped as they exit, ended by `stop`."""

    def __init__(self, logger: logging.Logger, on_exit: Callable[[int, int, float], None]) -> None:
        self._logger = logger
        self._on_exit = on_exit
        self.started_at: dict[int, float] = {}
        self._reapers: dict[int, Greenlet] = {}

    def __len__(self) -> int:
        return len(self.started_at)

    def fork(self) -> int:
        """Fork; returns the child's pid in the parent and 0 in the child."""
        pid = gevent.fork()
        if pid == 0:
            self._forget()
            return 0
        self.started_at[pid] = time.monotonic()
        self._reapers[pid] = gevent.spawn(self._reap, pid)
        return pid

    def _forget(self) -> None:
        # In a new child: its siblings are not its children.
        current = gevent.getcurrent()
        doomed = [g for g in self._reapers.values() if g is not current]
        self.started_at.clear()
        self._reapers.clear()
        gevent.killall(doomed, block=False)

    def _reap(self, pid: int) -> None:
        _, status = gevent.os.waitpid(pid, 0)
        started = self.started_at.pop(pid)
        del self._reapers[pid]
        self._on_exit(pid, status, time.monotonic() - started)

    def _signal_all(self, signum: int) -> None:
        for pid in list(self.started_at):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self, timeout: float) -> None:
        """SIGTERM every child, wait up to `timeout`, then SIGKILL the rest."""
        if not self.started_at:
            return
        self._signal_all(signal.SIGTERM)
        gevent.joinall(list(self._reapers.values()), timeout=timeout)
        if self.started_at:
            self._logger.warning(
                "killing %d child processes still running after %.1f s: %s",
                len(self.started_at),
                timeout,
                sorted(self.started_at),
            )
            self._signal_all(signal.SIGKILL)
            gevent.joinall(list(self._reapers.values()), timeout=_CHILD_STOP_MARGIN)


# ----------------------------------------------------------------- server
class Server:
    """Serves `service` to every client that connects. RPyC-compatible arguments.

    One greenlet per connection (so RPyC's thread-per-connection servers are
    all this class); ``workers=N`` forks N processes sharing the listening
    socket, to use every core.

    Args:
        service: the service class (a new instance per connection) or instance.
        hostname: address to bind. None binds 127.0.0.1 (``::1`` with
            ``ipv6``): unlike RPyC, which binds every interface, grpyc
            serves only this machine unless told otherwise; "" or
            "0.0.0.0" binds every interface.
        ipv6: bind an IPv6 socket.
        port: TCP port; 0 picks a free one, readable as `port` at once.
        backlog: listen backlog.
        reuse_addr: set SO_REUSEADDR.
        authenticator: ``callable(sock) -> (sock, credentials)``, e.g.
            `grpyc.authenticators.SSLAuthenticator`; `AuthenticationError`
            refuses the client. The credentials land in the connection's
            config under ``"credentials"``.
        registrar: the `grpyc.registry.RegistryClient` to register with
            (default: a broadcasting `UDPRegistryClient`).
        auto_register: register the service's aliases on start, again every
            ``registrar.REREGISTER_INTERVAL`` seconds, and unregister on
            close. None (RPyC's default) means "if a registrar was given".
        protocol_config: overrides of `protocol.DEFAULT_CONFIG` for every
            connection; its ``"logger"`` defaults to the server's logger.
        logger: the server's logger (default ``grpyc.server.<SERVICE>/<port>``).
        listener_timeout: accepted for RPyC compatibility and unused: a
            gevent accept never needs to poll.
        socket_path: serve on this Unix socket instead of TCP (then `port`
            is the path, as in RPyC); the file is removed on close.
        max_connections: connections served at once. Beyond it, a new
            connection is accepted and closed at once, and a warning names
            the limit; serving resumes as soon as one closes.
        handshake_timeout: seconds from accept within which the
            authenticator, the service's ``on_connect`` and the client's
            first complete frame must be done, or the connection is closed.
            None waits forever. A client that connects and then stays
            silent longer than this (RPyC allows it) must send something
            first, e.g. ``conn.ping()``.
        idle_timeout: close a connection that receives nothing for this
            many seconds (the protocol's ``idle_timeout``); None: never.
        keepalive: turn TCP keepalive on for accepted sockets: True for
            the defaults of `grpyc.stream.set_keepalive`, or seconds of
            idle time between probes.
        grace_period: seconds `close` lets calls in flight finish.
        workers: processes serving the socket; ``max_connections`` applies
            to each. With more than one, `listen` and `start` fork them and
            this process supervises: it restarts a worker that dies and, on
            `close`, stops them all. A forked child inherits every socket
            and greenlet of its parent, so a forking server must be the only
            thing its process does (as in the ``grpyc`` command).

    Raises:
        ValueError: a limit or timeout is out of range, or ``socket_path``
            is combined with a host, port or ``ipv6``.
        OSError: the address cannot be bound (e.g. the port is in use).
    """

    def __init__(
        self,
        service: Any,
        hostname: str | None = None,
        ipv6: bool = False,
        port: int = 0,
        backlog: int = socket.SOMAXCONN,
        reuse_addr: bool = True,
        authenticator: Callable[[Any], tuple[Any, Any]] | None = None,
        registrar: Any = None,
        auto_register: bool | None = None,
        protocol_config: dict[str, Any] | None = None,
        logger: logging.Logger | None = None,
        listener_timeout: float | None = 0.5,
        socket_path: str | None = None,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float | None = None,
        keepalive: bool | int = False,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        workers: int = 1,
    ) -> None:
        _check_limits(
            max_connections, workers, handshake_timeout, idle_timeout, keepalive, grace_period
        )
        if socket_path is not None and (hostname is not None or port != 0 or ipv6):
            raise ValueError("socket_path cannot be combined with hostname, port or ipv6")
        self.service = service
        self.authenticator = authenticator
        self.backlog = backlog
        self.listener_timeout = listener_timeout
        self.socket_path = socket_path
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.keepalive = keepalive
        self.grace_period = float(grace_period)
        self.workers = workers
        self.auto_register = bool(registrar) if auto_register is None else auto_register
        if self.auto_register and socket_path is not None:
            raise ValueError("auto_register needs a TCP server; socket_path was given")
        self.active = False
        self.clients: set[Any] = set()
        self._listener = self._bind(hostname, ipv6, port, backlog, reuse_addr)
        self.host: str
        self.port: Any
        self.host, self.port = self._bound_address()
        self.logger = logger or logging.getLogger(self._default_logger_name())
        self.protocol_config = dict(protocol_config or {})
        self.protocol_config.setdefault("logger", self.logger)
        if idle_timeout is not None:
            self.protocol_config["idle_timeout"] = idle_timeout
        self.registrar = (
            registrar if registrar is not None else UDPRegistryClient(logger=self.logger)
        )
        self._owner_pid = os.getpid()
        self._role = "main"
        self._pool = Pool()
        self._slots = 0
        self._acceptor: _Acceptor | None = None
        self._children = _Children(self.logger, self._on_child_exit)
        self._owned: set[Greenlet] = set()
        self._restart_delay = 0.0
        self._closing = False
        self._close_signalled = False
        self._closing_event = Event()
        self._hurry = Event()
        self._stopped = Event()

    # ------------------------------------------------------------ binding
    def _bind(
        self, hostname: str | None, ipv6: bool, port: int, backlog: int, reuse_addr: bool
    ) -> gevent.socket.socket:
        if self.socket_path is not None:
            listener = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = self.socket_path
        else:
            family = socket.AF_INET6 if ipv6 else socket.AF_INET
            if hostname is None:
                hostname = "::1" if ipv6 else "127.0.0.1"
            address = gevent.socket.getaddrinfo(
                hostname or None, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
            )[0][-1]
            listener = gevent.socket.socket(family, socket.SOCK_STREAM)
        try:
            if reuse_addr and self.socket_path is None:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(backlog)
        except BaseException:
            listener.close()
            raise
        listener.setblocking(False)
        return listener

    def _bound_address(self) -> tuple[str, Any]:
        if self.socket_path is not None:
            return "", self.socket_path
        address = self._listener.getsockname()
        return address[0], address[1]

    def _default_logger_name(self) -> str:
        get_name = getattr(self.service, "get_service_name", None)
        name = get_name() if get_name is not None else type(self.service).__name__
        where = "unix" if self.socket_path is not None else self.port
        return f"grpyc.server.{name}/{where}"

    def _where(self) -> str:
        if self.socket_path is not None:
            return self.socket_path
        return _describe_peer((self.host, self.port))

    def fileno(self) -> int:
        """The listening socket's descriptor. RPyC-compatible."""
        return self._listener.fileno()

    # ------------------------------------------------------------ running
    def listen(self) -> None:
        """Start serving in the background and return (forks the workers, if any).

        Raises:
            ValueError: the server is closed.
        """
        if self._closing:
            raise ValueError(f"server on {self._where()} is closed")
        if self.active:
            return
        self.active = True
        if self.workers > 1:
            for _ in range(self.workers):
                self._start_worker()
        else:
            self._start_accepting()
        self._start_registration()
        self.logger.info(
            "listening on %s%s",
            self._where(),
            f" with {self.workers} worker processes" if self.workers > 1 else "",
        )

    def start(self) -> None:
        """Serve until `close` (blocks). RPyC-compatible.

        Ctrl-C (KeyboardInterrupt) closes the server gracefully. With
        workers, SIGTERM and SIGINT do too (see `close_on_signals`), so that
        the workers never outlive their supervisor.
        """
        handling = self.close_on_signals() if self.workers > 1 else contextlib.nullcontext()
        with handling:
            try:
                self.listen()
                self._stopped.wait()
            except KeyboardInterrupt:
                self.logger.warning("interrupted: closing")
                self.close()

    def _start_accepting(self) -> None:
        self._acceptor = _Acceptor(self._listener, self._handle, self._pool, self.logger)
        self._acceptor.start()

    def _stop_accepting(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
        else:
            self._listener.close()

    def _spawn_owned(self, func: Callable[..., Any], *args: Any) -> Greenlet:
        greenlet = Greenlet(func, *args)
        self._owned.add(greenlet)
        greenlet.link(self._owned.discard)
        greenlet.start()
        return greenlet

    # ------------------------------------------------------------ signals
    @contextlib.contextmanager
    def close_on_signals(self) -> Iterator[None]:
        """Within this block, SIGTERM and SIGINT close the server gracefully.

        A second signal skips the rest of the grace period. The previous
        handlers come back when the block ends. Does nothing outside the
        main thread, where Python cannot handle signals.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Runs between two bytecodes of whatever greenlet was running: only
        # schedule work here.
        if self._closing or self._close_signalled:
            gevent.get_hub().loop.run_callback(self._hurry.set)
        else:
            self._close_signalled = True
            self._spawn_owned(self._close_on_signal, signum)

    def _close_on_signal(self, signum: int) -> None:
        self.logger.info(
            "received %s: closing (grace_period=%s s)",
            signal.Signals(signum).name,
            self.grace_period,
        )
        self.close()

    # --------------------------------------------------------- connections
    def _handle(self, sock: Any, address: Any) -> None:
        """StreamServer's handler: one call per accepted socket, in its own greenlet."""
        peer = _describe_peer(address)
        if self._closing:
            return
        if self._slots >= self.max_connections:
            self.logger.warning(
                "refused connection from %s: max_connections=%d reached",
                peer,
                self.max_connections,
            )
            return
        self._slots += 1
        opened = False
        try:
            opened = self._serve_socket(sock, peer)
        finally:
            # The slot is free before the "closed" line: whoever reads that
            # line may connect again at once.
            self._slots -= 1
            if opened:
                self.logger.info("connection from %s closed", peer)

    def _serve_socket(self, sock: Any, peer: str) -> bool:
        """Set the connection up within handshake_timeout, then serve it until it closes.

        This greenlet becomes the connection's reader (one greenlet per
        connection). Returns whether the connection was set up (and served).
        """
        state: dict[str, Any] = {"stage": "preparing the socket", "sock": sock, "channel": None}
        conn = None
        try:
            conn = self._handshake(state, peer)
            if conn is not None:
                self.clients.add(conn)
                self.logger.info("connection from %s open", peer)
                conn.serve_all()
        finally:
            self.clients.discard(conn)
            # Closing the stream ends the connection's reader; a client that
            # never completed the handshake has nothing in flight.
            if state["channel"] is not None:
                state["channel"].close()
            state["sock"].close()
        return conn is not None

    def _handshake(self, state: dict[str, Any], peer: str) -> Any:
        """The connection once set up, its first frame awaited by a timer; else None (logged)."""
        # A TimeoutError (an OSError) lets socket code on the way, such as a
        # half-made TLS socket, close what it opened before re-raising.
        started = time.monotonic()
        expired = _HandshakeTimeoutError(f"handshake_timeout={self.handshake_timeout} s passed")
        timer = gevent.Timeout(self.handshake_timeout, expired)
        timer.start()
        try:
            conn = self._set_up(state)
        except Exception as exc:  # noqa: BLE001 - to the log: one client must not stop the server
            timed_out = self.handshake_timeout is not None and not timer.pending
            self._log_failed_setup(peer, state["stage"], exc, timed_out)
            return None
        finally:
            timer.close()
        self._expect_first_frame(conn, state["channel"], peer, started)
        return conn

    def _expect_first_frame(self, conn: Any, channel: Any, peer: str, started: float) -> None:
        """Close `conn` unless its first frame arrives within what is left of the timeout.

        A timer, not a waiting greenlet: the greenlet goes on to read.
        """
        if self.handshake_timeout is None or channel.saw_frame:
            return
        left = max(0.0, self.handshake_timeout - (time.monotonic() - started))

        def check() -> None:
            if not channel.saw_frame and not conn.closed:
                self._log_failed_setup(
                    peer, "waiting for the first frame", TimeoutError("no frame"), True
                )
                self._spawn_owned(conn.abort, "no frame within handshake_timeout")

        watch = gevent.get_hub().loop.timer(left)
        watch.start(check)
        channel.on_settled(watch.close)

    def _log_failed_setup(self, peer: str, stage: str, exc: Exception, timed_out: bool) -> None:
        if timed_out:
            self.logger.info(
                "closed connection from %s: %s took longer than handshake_timeout=%s s",
                peer,
                stage,
                self.handshake_timeout,
            )
        elif isinstance(exc, AuthenticationError):
            self.logger.info("closed connection from %s: authentication failed: %s", peer, exc)
        else:
            self.logger.error(
                "closed connection from %s: error while %s", peer, stage, exc_info=exc
            )

    def _set_up(self, state: dict[str, Any]) -> Any:
        sock = state["sock"]
        if _is_tcp(sock) and self.keepalive:
            if self.keepalive is True:
                set_keepalive(sock)
            else:
                set_keepalive(sock, idle=self.keepalive, interval=self.keepalive)
        credentials = None
        if self.authenticator is not None:
            state["stage"] = "authenticating"
            sock, credentials = self.authenticator(sock)
            state["sock"] = sock
        state["stage"] = "connecting the service"
        config = {
            **self.protocol_config,
            "credentials": credentials,
            "endpoints": (sock.getsockname(), sock.getpeername()),
        }
        state["channel"] = _WatchedChannel(SocketStream(sock))
        return self.service._connect(state["channel"], config)

    # --------------------------------------------------------- registration
    def _start_registration(self) -> None:
        if self.auto_register:
            self._spawn_owned(self._register_periodically)

    def _register_periodically(self) -> None:
        aliases = self.service.get_service_aliases()
        interval = self.registrar.REREGISTER_INTERVAL
        while True:
            try:
                registered = self.registrar.register(aliases, self.port, interface=self.host)
            except Exception:
                # To the log, then retried: the registry may come back.
                self.logger.exception("registering %s failed", ", ".join(aliases))
                registered = False
            if self._closing_event.wait(interval if registered else _REGISTER_RETRY):
                return

    def _stop_registration(self, was_active: bool) -> None:
        if not (self.auto_register and was_active and self._role == "main"):
            return
        try:
            self.registrar.unregister(self.port)
        except Exception:
            # To the log: closing goes on whatever the registry does.
            self.logger.exception("unregistering port %s failed", self.port)

    # ------------------------------------------------------------ closing
    def close(self) -> None:
        """Stop accepting, let calls in flight finish, close everything. RPyC-compatible.

        Idle connections close at once; busy ones as soon as their calls are
        done, or when ``grace_period`` runs out. Worker and forked processes
        get SIGTERM and the same grace period, then SIGKILL. Unregisters
        from the registry. Safe to call more than once: later calls return
        at once. Called from a request handler it waits out the grace
        period for that very call: use ``gevent.spawn(server.close)`` there.
        """
        if self._closing:
            return
        self._closing = True
        self._closing_event.set()
        was_active, self.active = self.active, False
        self.logger.info("closing")
        self._kill_owned()
        self._stop_registration(was_active)
        self._stop_accepting()
        self._drain()
        self._children.stop(self.grace_period + _CHILD_STOP_MARGIN)
        self._remove_socket_file()
        self._stopped.set()
        self.logger.info("closed")

    def _kill_owned(self) -> None:
        current = gevent.getcurrent()
        gevent.killall([g for g in self._owned if g is not current], block=False)

    def _drain(self) -> None:
        """Close each connection once idle; after grace_period close the rest."""
        deadline = time.monotonic() + self.grace_period
        closers = Group()
        closing: set[int] = set()
        while True:
            busy = 0
            for conn in list(self.clients):
                if id(conn) in closing:
                    continue
                if _in_flight(conn):
                    busy += 1
                else:
                    closing.add(id(conn))
                    closers.spawn(self._close_connection, conn)
            if not busy or time.monotonic() >= deadline or self._hurry.wait(_DRAIN_POLL):
                break
        leftovers = [conn for conn in self.clients if id(conn) not in closing]
        if leftovers:
            self.logger.warning(
                "grace_period=%s s is over: closing %d connections with calls in flight",
                self.grace_period,
                len(leftovers),
            )
            for conn in leftovers:
                closers.spawn(self._close_connection, conn)
        closers.join(timeout=_CLOSE_WAIT)
        closers.kill(block=False)
        # Greenlets of closed connections finish at once; the ones left are
        # still in their handshake, with nothing in flight.
        current = gevent.getcurrent()
        others = [g for g in self._pool if g is not current]
        gevent.joinall(others, timeout=_DRAIN_POLL)
        gevent.killall(others, timeout=_CLOSE_WAIT)

    def _close_connection(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:
            # To the log: the service's before_closed hook failed; the
            # connection is closed anyway.
            self.logger.exception("error while closing %r", conn)

    def _remove_socket_file(self) -> None:
        if self.socket_path is not None and os.getpid() == self._owner_pid:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    # ------------------------------------------------------------ children
    def _enter_child(self, role: str) -> None:
        """Start afresh in a forked child: none of the parent's duties carry over."""
        self._role = role
        self._kill_owned()
        self._owned = set()
        self._closing = False
        self._close_signalled = False
        self._closing_event = Event()
        self._hurry = Event()
        # The parent's waiters keep the old event; nothing sets it here.
        self._stopped = Event()
        # Sibling handlers of the parent have not run yet: they are its work.
        current = gevent.getcurrent()
        gevent.killall([g for g in self._pool if g is not current], block=False)
        if threading.current_thread() is threading.main_thread():
            # The parent stops its children with SIGTERM; SIGINT from a
            # terminal reaches the whole process group, and the parent acts.
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _on_child_exit(self, pid: int, status: int, lived: float) -> None:
        if self._closing or self.workers == 1:
            self.logger.debug("child pid %d %s", pid, _describe_status(status))
            return
        if lived < _STABLE_WORKER_SECONDS:
            self._restart_delay = min(
                max(self._restart_delay * 2, _RESTART_DELAY_MIN), _RESTART_DELAY_MAX
            )
        else:
            self._restart_delay = 0.0
        self.logger.warning(
            "worker pid %d %s after %.1f s; starting a replacement in %.1f s",
            pid,
            _describe_status(status),
            lived,
            self._restart_delay,
        )
        if not self._closing_event.wait(self._restart_delay):
            self._start_worker()

    def _start_worker(self) -> None:
        supervisor = os.getpid()
        pid = self._children.fork()
        if pid == 0:
            self._run_worker(supervisor)
        self.logger.info("started worker pid %d", pid)

    def _run_worker(self, supervisor: int) -> NoReturn:
        status = 0
        try:
            self._enter_child("worker")
            self._start_accepting()
            self._spawn_owned(self._watch_supervisor, supervisor)
            self._stopped.wait()
        except BaseException:
            # To the log: the supervisor sees the status and starts another.
            self.logger.exception("worker pid %d failed", os.getpid())
            status = 1
        _exit_child(status)

    def _watch_supervisor(self, supervisor: int) -> None:
        # A worker whose supervisor died (SIGKILL, say) would serve on with
        # nobody left to stop it.
        while not self._closing_event.wait(_SUPERVISOR_CHECK):
            if os.getppid() != supervisor:
                self.logger.warning(
                    "supervisor pid %d is gone: closing worker pid %d", supervisor, os.getpid()
                )
                self.close()
                return


class ThreadPoolServer(Server):
    """The greenlet server; RPyC's pool arguments are accepted and unused. RPyC-compatible.

    ``nbThreads`` and ``requestBatchSize`` sized RPyC's thread pool; here
    every request already runs in its own greenlet.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.nbthreads = kwargs.pop("nbThreads", 20)
        self.request_batch_size = kwargs.pop("requestBatchSize", 10)
        super().__init__(*args, **kwargs)


class OneShotServer(Server):
    """Serves one connection, then closes. RPyC-compatible.

    The listening socket closes when the first client is accepted, so later
    clients are refused; `start` returns once that connection has ended.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        workers = kwargs.get("workers", 1)
        if workers != 1:
            raise ValueError(f"OneShotServer serves one connection; workers={workers}")
        super().__init__(*args, **kwargs)
        self._served = False

    def _handle(self, sock: Any, address: Any) -> None:
        if self._served or self._closing:
            return
        self._served = True
        self._stop_accepting()
        try:
            super()._handle(sock, address)
        finally:
            self._spawn_owned(self.close)


class ForkingServer(Server):
    """A child process per connection. RPyC-compatible.

    The child reinitialises gevent (`gevent.fork`), closes its copy of the
    listening socket and serves its one connection; the parent closes its
    copy of the client socket and reaps children as they exit.
    ``max_connections`` bounds the live children. On `close` the children
    get SIGTERM and finish their calls in flight within the grace period.

    A child inherits every socket and greenlet of its parent, so this
    server must be the only thing its process does (as in the ``grpyc``
    command): other connections of the parent would be read by the
    children too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        workers = kwargs.get("workers", 1)
        if workers != 1:
            raise ValueError(f"ForkingServer forks per connection; workers={workers}")
        super().__init__(*args, **kwargs)
        # One accepted socket at a time: a child must not inherit another
        # client's socket that a sibling greenlet was about to hand over.
        self._pool = Pool(1)

    def _handle(self, sock: Any, address: Any) -> None:
        peer = _describe_peer(address)
        if self._closing:
            return
        if len(self._children) >= self.max_connections:
            self.logger.warning(
                "refused connection from %s: max_connections=%d reached",
                peer,
                self.max_connections,
            )
            return
        pid = self._children.fork()
        if pid == 0:
            self._serve_forked(sock, peer)
        self.logger.debug("connection from %s served by child pid %d", peer, pid)
        # Returning closes this process's copy of `sock` (StreamServer does).

    def _serve_forked(self, sock: Any, peer: str) -> NoReturn:
        status = 0
        try:
            self._enter_child("forked")
            self._stop_accepting()
            self._serve_socket(sock, peer)
        except BaseException:
            # To the log; the parent only reaps.
            self.logger.exception("child pid %d serving %s failed", os.getpid(), peer)
            status = 1
        _exit_child(status)


GeventServer = Server
ThreadedServer = Server
