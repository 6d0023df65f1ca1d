"""Servers: RPyC's server classes, their limits, shutdown and registration.

This module owns what a server does: serving a service to every client
that connects, its limits, graceful shutdown, registration, and RPyC's
`OneShotServer` and `ForkingServer`. It leaves binding and accepting to
`_listen`, a connection's setup to `_handshake`, draining to `_drain`, child
processes and signals to `_supervisor`, the server's state across OS
threads to `_lifecycle`, and the registry protocol to `registry`.

Invariants:

- A server's greenlets all run in the hub of the OS thread that started
  serving; `close()` from another thread hands the close over to it.
- A connection holds one of ``max_connections`` slots from accept to close.
  Beyond the limit a new connection is accepted and closed at once, with a
  log line naming the limit: the client sees `EOFError` instead of hanging
  in the listen backlog.
- ``close()`` stops accepting at once, closes each connection as soon as it
  has no call in flight, and after ``grace_period`` closes the rest. Child
  processes get SIGTERM, do the same, and SIGKILL if they outlive that.
- Every greenlet and child process a server starts is owned by it and ended
  by ``close()``. Nothing is printed: each server logs to its own logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, ClassVar, NoReturn

from gevent.pool import Pool

from grpyc import _checks
from grpyc._connections import HeldConnections
from grpyc._drain import CLOSE_WAIT, Drain
from grpyc._handshake import SetupRules
from grpyc._lifecycle import Lifecycle, start_thread
from grpyc._listen import DEFAULT_SOCKET_MODE, Acceptor, bind_listener, describe_address
from grpyc._registration import register_until, unregister
from grpyc._signals import handling_signals
from grpyc._supervisor import (
    CHILD_STOP_MARGIN,
    Children,
    Supervisor,
    run_child,
    watch_parent,
)
from grpyc.lib import LeanGreenlet, kill_greenlets
from grpyc.registry import UDPRegistryClient

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

# An idle connection costs about 17.5 KiB of server memory (docs/benchmarks.md,
# S3: 17.2-17.7 KiB at 2,000 and 10,000 connections), so the default caps a
# flood near 175 MiB; it is also far above the 1024 descriptors most
# processes get by default (the `grpyc` command raises its descriptor limit).
DEFAULT_MAX_CONNECTIONS = 10_000
# A client finishes TLS and sends its first frame within a few round trips;
# ten seconds is generous on slow links and short enough that silent
# clients cannot hold many slots.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
# Long enough for ordinary calls to finish, shorter than the stop timeouts of
# common process managers (Kubernetes 30 s, systemd 90 s).
DEFAULT_GRACE_PERIOD = 10.0

# The greenlet of a closed connection ends within a loop turn or two; it
# gets this long to log its end before the greenlets left are killed.
_FINISH_WAIT = 0.05
# close() from another thread waits for the server's own close (grace
# period, connections' CLOSE, children) plus this much for the hand-over.
_HANDOVER_MARGIN = 5.0


class Server:
    """Serves `service` to every client that connects. RPyC-compatible arguments.

    One greenlet per connection (so RPyC's thread-per-connection servers are
    all this class); ``workers=N`` forks N processes sharing the listening
    socket, to use every core.

    Args:
        service: the service class (a new instance per connection) or instance.
        hostname: address to bind. None binds 127.0.0.1 (``::1`` with
            ``ipv6``), unlike RPyC (every interface); "" or "0.0.0.0"
            binds every interface.
        ipv6: bind an IPv6 socket.
        port: TCP port in 1..65535; 0 picks a free one, readable as `port` at once.
        backlog: listen backlog.
        reuse_addr: set SO_REUSEADDR.
        authenticator: ``callable(sock) -> (sock, credentials)``, e.g.
            `grpyc.authenticators.SSLAuthenticator`; `AuthenticationError`
            refuses the client. Credentials go to the config's ``"credentials"``.
        registrar: the `grpyc.registry.RegistryClient` to register with
            (default: a broadcasting `UDPRegistryClient`).
        auto_register: register the service's aliases on start, again every
            ``registrar.REREGISTER_INTERVAL`` seconds, and unregister on
            close. None (RPyC's default) means "if a registrar was given".
        protocol_config: overrides of `protocol.DEFAULT_CONFIG` for every
            connection (copied). As in RPyC, its ``"logger"`` defaults to the
            server's logger, and every connection logs to the server's
            logger whatever it says (`ThreadPoolServer`: to its ``"logger"``).
        logger: the server's logger (default ``grpyc.server.<SERVICE>/<port>``).
        listener_timeout: accepted for RPyC compatibility and unused: a
            gevent accept never needs to poll.
        socket_path: serve on this Unix socket instead of TCP (then `port`
            is the path, as in RPyC). As in RPyC, an existing file there
            makes binding fail and the file stays after close: removing it
            is the caller's business.
        socket_mode: permission bits of the Unix socket file (default 0o600:
            the server's user only); the file never exists with looser ones.
        max_connections: connections served at once. Beyond it, a new
            connection is accepted and closed at once, and a warning names
            the limit; serving resumes as soon as one closes.
        handshake_timeout: seconds from accept within which the
            authenticator, the service's ``on_connect`` and the client's
            first complete frame must be done, or the connection is closed
            (RPyC waits forever, as None does here).
        idle_timeout: close a connection that receives nothing for this
            many seconds (the protocol's ``idle_timeout``); None: never.
        keepalive: turn TCP keepalive on for accepted sockets: True for
            the defaults of `grpyc.stream.set_keepalive`, or seconds of
            idle time between probes.
        grace_period: seconds `close` lets calls in flight finish.
        workers: processes serving the socket (``max_connections`` each).
            With more than one, `listen` forks them and this process
            supervises: it restarts a worker that dies and stops them all on
            `close`. A forked child inherits every socket and greenlet of its
            parent: a forking server must be the only thing its process does.

    Raises:
        ValueError: a port, limit or timeout is out of range, or
            ``socket_path`` is combined with a host, port or ``ipv6``.
        OSError: the address cannot be bound (e.g. the port is in use).
    """

    # RPyC hands every connection the server's logger, whatever
    # protocol_config says; its ThreadPoolServer keeps protocol_config's.
    _connections_log_to_server: ClassVar[bool] = True

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
        socket_mode: int = DEFAULT_SOCKET_MODE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float | None = None,
        keepalive: bool | int = False,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        workers: int = 1,
    ) -> None:
        self.max_connections = _checks.check_count("max_connections", max_connections)
        self.workers = _checks.check_count("workers", workers)
        self.handshake_timeout = _checks.check_timeout("handshake_timeout", handshake_timeout)
        self.idle_timeout = _checks.check_timeout("idle_timeout", idle_timeout)
        self.grace_period = _checks.check_seconds("grace_period", grace_period)
        self.keepalive = _checks.check_keepalive(keepalive)
        if socket_path is not None and (hostname is not None or port != 0 or ipv6):
            raise ValueError("socket_path cannot be combined with hostname, port or ipv6")
        if isinstance(port, str) and port.isdecimal():
            # RPyC hands the port to getaddrinfo, which takes "18861" too.
            port = int(port)
        _checks.check_port(port, any_port=True)
        self.service = service
        self.authenticator = authenticator
        self.backlog = backlog
        self.listener_timeout = listener_timeout
        self.socket_path = socket_path
        self.socket_mode = _checks.check_file_mode("socket_mode", socket_mode)
        self.auto_register = bool(registrar) if auto_register is None else auto_register
        if self.auto_register and socket_path is not None:
            raise ValueError("auto_register needs a TCP server; socket_path was given")
        self.active = False
        self._closed = False
        self.clients: set[Any] = set()
        self._listener = bind_listener(
            hostname, ipv6, port, backlog, reuse_addr, socket_path, socket_mode
        )
        # RPyC's host and port of a Unix socket server: "" and the path.
        where = ("", socket_path) if socket_path is not None else self._listener.getsockname()
        self.host: str = where[0]
        self.port: Any = where[1]
        self._where = socket_path or describe_address((self.host, self.port))
        self.logger = logger or logging.getLogger(self._default_logger_name())
        self.protocol_config = dict(protocol_config or {})
        self.protocol_config.setdefault("logger", self.logger)
        if idle_timeout is not None:
            self.protocol_config["idle_timeout"] = idle_timeout
        self.registrar = (
            registrar if registrar is not None else UDPRegistryClient(logger=self.logger)
        )
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._life = Lifecycle()
        self._role = "main"
        self._pool = Pool(greenlet_class=LeanGreenlet)
        self._acceptor: Acceptor | None = None
        self._held = HeldConnections(self.clients, self.logger, self._life.spawn)
        self._registering = False
        self._supervisor: Supervisor | None = None
        if self.workers > 1:
            self._supervisor = Supervisor(
                self.logger, self.workers, self._run_worker, self._life.closing_event
            )
            self._children = self._supervisor.children
        else:
            self._children = Children(self.logger)

    # ------------------------------------------------------------ binding
    def _default_logger_name(self) -> str:
        get_name = getattr(self.service, "get_service_name", None)
        name = get_name() if get_name is not None else type(self.service).__name__
        return f"grpyc.server.{name}/{'unix' if self.socket_path is not None else self.port}"

    def fileno(self) -> int:
        """The listening socket's descriptor. RPyC-compatible."""
        return self._listener.fileno()

    # ------------------------------------------------------------ running
    def listen(self) -> None:
        """Start serving in the background and return (forks the workers, if any).

        The calling thread's hub runs the server: if that thread then blocks
        outside gevent, serving stops meanwhile (`_start_in_thread` serves
        from a thread of its own).

        Raises:
            ValueError: the server is closed.
        """
        if not self._life.claim(self._where):
            return
        self.active = True
        if self._supervisor is not None:
            self._supervisor.start()
        else:
            self._start_accepting()
        self._start_registration()
        self.logger.info(
            "listening on %s%s",
            self._where,
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
                self._life.stopped.wait()
            except KeyboardInterrupt:
                self.logger.warning("interrupted: closing")
                self.close()

    def _listen(self) -> None:
        """Mark the server listening, without accepting yet. RPyC-compatible test helper.

        The socket listens from construction on: clients that connect now
        wait in the backlog until `start` (or `listen`) accepts them.

        Raises:
            ValueError: the server is closed.
        """
        self._life.check_open(self._where)
        self.active = True

    def _start_in_thread(self) -> threading.Thread:
        """Serve from a new daemon thread; return it once accepting. RPyC-compatible test helper.

        Without monkey patching the thread is an OS thread running its own
        gevent hub, so the calling thread may block any way it likes (plain
        ``time.sleep``, locks) while the server serves. `close` from any
        thread stops it; the thread then ends.

        Raises:
            ValueError: the server is closed.
        """
        return start_thread(self._prepare_thread, self.start, f"grpyc server {self._where}")

    def _prepare_thread(self) -> None:
        self._life.thread = threading.current_thread()  # close() waits for it to end
        self._listen()
        self.listen()

    def _start_accepting(self) -> None:
        self._acceptor = Acceptor(self._listener, self._handle, self._pool, self.logger)
        self._acceptor.start()

    def _stop_accepting(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
        else:
            self._listener.close()

    # ------------------------------------------------------------ signals
    @contextlib.contextmanager
    def close_on_signals(self) -> Iterator[None]:
        """Within this block, SIGTERM and SIGINT close the server gracefully.

        A second signal skips the rest of the grace period. The previous
        handlers come back when the block ends. Does nothing outside the
        main thread, where Python cannot handle signals.
        """
        with handling_signals(self._life.on_signal(self._close_on_signal)):
            yield

    def _close_on_signal(self, signum: int) -> None:
        self.logger.info(
            "received %s: closing (grace_period=%s s)",
            signal.Signals(signum).name,
            self.grace_period,
        )
        self.close()

    # --------------------------------------------------------- connections
    # Whether `_handle` returns once its connection is set up (the connection
    # then holds no greenlet while idle: its reads come from the hub's reader
    # pool) rather than when it ends.
    _returns_when_open: ClassVar[bool] = True

    def _handle(self, sock: Any, address: Any) -> None:
        """StreamServer's handler: one call per accepted socket, in its own greenlet."""
        peer = describe_address(address)
        if self._life.closing:
            return
        if not self._has_room(self._held.in_use, peer):
            return
        held = self._held
        held.in_use += 1
        if self._returns_when_open:
            if held.open_in_background(sock, peer, self._setup_rules()) and self._acceptor:
                self._acceptor.keep(sock)  # StreamServer closes it as we return otherwise
            return
        opened = False
        try:
            opened = held.serve(sock, peer, self._setup_rules())
        finally:
            held.release(opened, peer)

    def _has_room(self, in_use: int, peer: str) -> bool:
        """Whether one more connection fits in max_connections; else logs the refusal."""
        if in_use < self.max_connections:
            return True
        self.logger.warning(
            "refused connection from %s: max_connections=%d reached", peer, self.max_connections
        )
        return False

    def _setup_rules(self) -> SetupRules:
        """What a new connection gets, from the server's attributes as they are now."""
        config = dict(self.protocol_config)
        if self._connections_log_to_server:
            config["logger"] = self.logger
        return SetupRules(
            service=self.service,
            config=config,
            authenticator=self.authenticator,
            keepalive=self.keepalive,
            handshake_timeout=self.handshake_timeout,
            logger=self.logger,
        )

    # --------------------------------------------------------- registration
    def _start_registration(self) -> None:
        if self.auto_register:
            self._registering = True
            address, stopping = (self.host, self.port), self._life.closing_event
            self._life.spawn(register_until, self.registrar, self.service, address, stopping)

    # ------------------------------------------------------------ closing
    def close(self) -> None:
        """Stop accepting, let calls in flight finish, close everything. RPyC-compatible.

        Idle connections close at once; busy ones as soon as their calls are
        done, or when ``grace_period`` runs out. Worker and forked processes
        get SIGTERM and the same grace period, then SIGKILL. Unregisters
        from the registry. Then ``_closed`` is True (RPyC's flag).

        Safe to call more than once: in the server's thread later calls
        return at once. From another OS thread it hands the close to the
        server's thread and returns once the server is closed. Called from
        a request handler it waits out the grace period for that very call:
        use ``gevent.spawn(server.close)`` there.

        Raises:
            TimeoutError: called from another thread, the server's thread
                did not finish closing in time (it is blocked outside gevent).
        """
        bound = self.grace_period + CLOSE_WAIT + 2 * CHILD_STOP_MARGIN + _HANDOVER_MARGIN
        self._life.close(self._close_here, bound, self._where)

    def _close_here(self) -> None:
        self.active = False
        self.logger.info("closing")
        self._life.kill_owned()
        if self._registering and self._role == "main":
            unregister(self.registrar, self.port, self.logger)
        self._stop_accepting()
        self._drain_connections()
        self._children.stop(self.grace_period + CHILD_STOP_MARGIN)
        self._closed = True
        self.logger.info("closed")

    def _drain_connections(self) -> None:
        """Close each connection once idle; after grace_period close the rest."""
        if not self.clients and not self._pool:
            return
        drain = self._held.drain = Drain(
            self.grace_period, self._life.hurry, self._close_connection, self.logger
        )
        drain.run(self._held.ends.items())
        # Greenlets of closed connections end at once; the ones left are
        # still in their handshake, with nothing in flight.
        kill_greenlets(self._pool, finish_within=_FINISH_WAIT, timeout=CLOSE_WAIT)

    def _close_connection(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:
            # To the log: the service's before_closed hook failed; the
            # connection is closed anyway.
            self.logger.exception("error while closing %r", conn)

    # ------------------------------------------------------------ children
    def _enter_child(self, role: str) -> None:
        """Start afresh in a forked child: none of the parent's duties carry over."""
        self._role = role
        self._life.in_child()
        # Sibling handlers of the parent have not run yet: they are its work.
        kill_greenlets(self._pool)
        if threading.current_thread() is threading.main_thread():
            # The parent stops its children with SIGTERM; SIGINT from a
            # terminal reaches the whole process group, and the parent acts.
            signal.signal(signal.SIGTERM, self._life.on_signal(self._close_on_signal))
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _run_worker(self, supervisor: int) -> NoReturn:
        # A worker that fails exits with status 1; the supervisor starts another.
        run_child(partial(self._work, supervisor), self.logger, f"worker pid {os.getpid()}")

    def _work(self, supervisor: int) -> None:
        self._enter_child("worker")
        self._start_accepting()
        self._life.spawn(
            watch_parent, supervisor, self._life.closing_event, self._on_supervisor_gone
        )
        self._life.stopped.wait()

    def _on_supervisor_gone(self, supervisor: int) -> None:
        self.logger.warning(
            "supervisor pid %d is gone: closing worker pid %d", supervisor, os.getpid()
        )
        self.close()


class ThreadPoolServer(Server):
    """The greenlet server; RPyC's pool arguments are accepted and unused. RPyC-compatible.

    ``nbThreads`` and ``requestBatchSize`` sized RPyC's thread pool; here
    every request already runs in its own greenlet. As in RPyC, connections
    log to ``protocol_config["logger"]`` (the server's logger unless given).
    """

    _connections_log_to_server = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.nbthreads = kwargs.pop("nbThreads", 20)
        self.request_batch_size = kwargs.pop("requestBatchSize", 10)
        super().__init__(*args, **kwargs)


class OneShotServer(Server):
    """Serves one connection, then closes. RPyC-compatible.

    The listening socket closes when the first client is accepted, so later
    clients are refused; `start` returns once that connection has ended.
    """

    # `start` returns once the connection has ended: its handler waits for that.
    _returns_when_open = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        workers = kwargs.get("workers", 1)
        if workers != 1:
            raise ValueError(f"OneShotServer serves one connection; workers={workers}")
        super().__init__(*args, **kwargs)
        self._served = False

    def _handle(self, sock: Any, address: Any) -> None:
        if self._served or self._life.closing:
            return
        self._served = True
        self._stop_accepting()
        try:
            super()._handle(sock, address)
        finally:
            self._life.spawn(self.close)


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
        self._pool = Pool(1, greenlet_class=LeanGreenlet)

    def _handle(self, sock: Any, address: Any) -> None:
        peer = describe_address(address)
        if self._life.closing:
            return
        if not self._has_room(len(self._children), peer):
            return
        pid = self._children.fork()
        if pid == 0:
            what = f"child pid {os.getpid()} serving {peer}"
            run_child(partial(self._serve_forked, sock, peer), self.logger, what)
        self.logger.debug("connection from %s served by child pid %d", peer, pid)
        # Returning closes this process's copy of `sock` (StreamServer does).

    def _serve_forked(self, sock: Any, peer: str) -> None:
        self._enter_child("forked")
        self._stop_accepting()
        self._held.serve(sock, peer, self._setup_rules())


GeventServer = Server
ThreadedServer = Server
