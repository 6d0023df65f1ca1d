"""What grpyc does through plumbum's SSH machines (the ``ssh`` extra): routes and processes.

`RemoteProcess` watches a process plumbum started on a remote machine
(its output lines, its exit) without blocking the hub.

A route turns "port P on the remote machine's loopback" into local streams.
Three kinds, chosen by what the plumbum machine offers:

- `SshMachine` (OpenSSH client): one ``ssh -L`` tunnel from a Unix socket in
  a private local directory (mode 0700), so no other local user can connect
  through it and no free-port race exists;
- `ParamikoMachine` (has ``connect_sock``): an SSH channel per stream,
  joined to one end of a socket pair by a `ChannelBridge`;
- any other object with RPyC's ``tunnel(local_port, remote_port)``: a
  tunnel from a free TCP port on localhost, as RPyC does.

This module owns the tunnels, bridges and process handles it makes; it
knows nothing of frames or connections. plumbum and paramiko are imported
only when a route is made, so grpyc imports without them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import gevent.lock
import gevent.select
import gevent.socket

from grpyc.stream import TunneledSocketStream

__all__ = [
    "ChannelBridge",
    "RemoteProcess",
    "SshRoute",
    "open_route",
    "open_stream",
    "require_plumbum",
]

_log = logging.getLogger("grpyc.ssh")

# Bytes moved per read by a bridge; the SSH channel window is far larger.
_BRIDGE_CHUNK = 64 * 1024
# A bridge's threads end as soon as both of its ends are closed; this only
# bounds the wait if paramiko is stuck.
_BRIDGE_JOIN_TIMEOUT = 2.0

# Bytes read per call from a remote process's output.
_READ_CHUNK = 64 * 1024
# After a remote process has exited, its SSH client (the local ssh process,
# or the paramiko channel) ends at once; this only bounds a stuck one.
_CLIENT_EXIT_TIMEOUT = 5.0
# How long the stderr of a process that failed is read, for an error message.
_ERROR_OUTPUT_TIMEOUT = 2.0

# Held from choosing a free port until the tunnel is bound to it, so two
# greenlets in this process cannot pick the same port (TCP routes only).
_tcp_tunnel_lock = gevent.lock.Semaphore()


def require_plumbum(what: str) -> None:
    """Raise an `ImportError` naming the ``ssh`` extra if plumbum is missing.

    Args:
        what: the feature that needs it, e.g. ``"ssh_connect"``.
    """
    try:
        import plumbum  # noqa: F401 - only checks that the optional dependency is there
    except ImportError as exc:
        raise ImportError(
            f"{what} needs plumbum for its SSH tunnel; install it with "
            f"pip install 'grpyc-gevent[ssh]' (or pip install plumbum)"
        ) from exc


class ChannelBridge:
    """Joins a paramiko channel to one end of a socket pair; the other end is `sock`.

    A paramiko channel blocks its caller's thread and has no descriptor that
    signals writability, so the hub cannot wait on it. Two threads of the
    `threading` module (greenlets under monkey patching, as paramiko's own)
    pump bytes each way; grpyc reads and writes `sock`, a plain socket. End
    of either side ends both. `close` closes the channel and both ends.
    """

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self.sock, self._pump_end = socket.socketpair()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._pump_from_channel, name="grpyc-ssh-in", daemon=True),
            threading.Thread(target=self._pump_to_channel, name="grpyc-ssh-out", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump_from_channel(self) -> None:
        try:
            while data := self._channel.recv(_BRIDGE_CHUNK):
                self._pump_end.sendall(data)
        except Exception as exc:  # noqa: BLE001 - to the log; the peer of `sock` sees EOF
            _log.debug("ssh channel to local socket ended: %r", exc)
        finally:
            with contextlib.suppress(OSError):
                self._pump_end.shutdown(socket.SHUT_WR)

    def _pump_to_channel(self) -> None:
        try:
            while data := self._pump_end.recv(_BRIDGE_CHUNK):
                self._channel.sendall(data)
        except Exception as exc:  # noqa: BLE001 - to the log; the remote side sees EOF
            _log.debug("local socket to ssh channel ended: %r", exc)
        finally:
            with contextlib.suppress(Exception):
                self._channel.shutdown_write()

    def close(self) -> None:
        """Close the channel and the pump end, and join the two threads."""
        if self._closed:
            return
        self._closed = True
        # Each close wakes the thread blocked on that side.
        self._channel.close()
        with contextlib.suppress(OSError):
            self._pump_end.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(_BRIDGE_JOIN_TIMEOUT)
        self._pump_end.close()


class SshRoute:
    """Streams to ``remote_host:remote_port`` as seen from the remote machine.

    `connect_stream` may be called any number of times; each stream closes
    what belongs to it alone, and `close` ends the route (its tunnel).
    """

    def connect_stream(self) -> TunneledSocketStream:
        """A new stream to the remote port."""
        raise NotImplementedError

    def close(self) -> None:
        """End the route; streams already made through a tunnel end too."""


class _UnixSocketTunnel(SshRoute):
    """One ``ssh -L <unix socket>:host:port`` tunnel of an OpenSSH `SshMachine`."""

    def __init__(self, remote_machine: Any, remote_port: int, remote_host: str) -> None:
        # mkdtemp makes the directory 0700: only this user reaches the socket.
        directory = tempfile.mkdtemp(prefix="grpyc-ssh-")
        # Also when the route is collected unclosed (plumbum's session then
        # ends the ssh process); removing a local directory never blocks long.
        self._remove_directory = weakref.finalize(self, shutil.rmtree, directory, True)
        self.path = str(Path(directory) / "tunnel.sock")
        try:
            self._tunnel = remote_machine.tunnel(
                self.path, remote_port, lhost=None, dhost=remote_host
            )
        except BaseException:
            self._remove_directory()
            raise

    def connect_stream(self) -> TunneledSocketStream:
        return TunneledSocketStream.unix_connect(self.path)

    def close(self) -> None:
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            tunnel.close()
        self._remove_directory()


class _ChannelRoute(SshRoute):
    """A paramiko channel per stream (``ParamikoMachine.connect_sock``)."""

    def __init__(self, remote_machine: Any, remote_port: int, remote_host: str) -> None:
        self._machine = remote_machine
        self._port = remote_port
        self._host = remote_host
        # Weak: a bridge lives as long as its stream, which closes it.
        self._bridges: weakref.WeakSet[ChannelBridge] = weakref.WeakSet()

    def connect_stream(self) -> TunneledSocketStream:
        channel = self._machine.connect_sock(self._port, dhost=self._host)
        bridge = ChannelBridge(channel)
        self._bridges.add(bridge)
        return TunneledSocketStream(bridge.sock, tun=bridge)

    def close(self) -> None:
        bridges, self._bridges = list(self._bridges), weakref.WeakSet()
        for bridge in bridges:
            bridge.close()


class _TcpPortTunnel(SshRoute):
    """RPyC's tunnel: ``tunnel(local_port, remote_port)`` from a free local TCP port.

    As in RPyC, the port is picked free and then bound by the tunnel:
    another process could take it in between.
    """

    def __init__(self, remote_machine: Any, remote_port: int) -> None:
        with _tcp_tunnel_lock:
            self.local_port = _free_local_port()
            self._tunnel = remote_machine.tunnel(self.local_port, remote_port)

    def connect_stream(self) -> TunneledSocketStream:
        return TunneledSocketStream.connect("localhost", self.local_port)

    def close(self) -> None:
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            tunnel.close()


def _free_local_port() -> int:
    with gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("localhost", 0))
        return int(probe.getsockname()[1])


def _is_openssh_machine(remote_machine: Any) -> bool:
    try:
        from plumbum.machines.ssh_machine import PuttyMachine, SshMachine
    except ImportError:
        return False

    # plink (PuttyMachine) cannot forward from a Unix socket.
    return isinstance(remote_machine, SshMachine) and not isinstance(remote_machine, PuttyMachine)


def open_route(remote_machine: Any, remote_port: int, remote_host: str = "localhost") -> SshRoute:
    """A route to ``remote_host:remote_port`` through ``remote_machine``.

    Args:
        remote_machine: a plumbum ``SshMachine`` or ``ParamikoMachine``, or
            any object with RPyC's ``tunnel(local_port, remote_port)``
            (then ``remote_host`` is the tunnel's default, localhost).
        remote_port: the TCP port on the remote machine.
        remote_host: the address the remote machine connects to.
    """
    if hasattr(remote_machine, "connect_sock"):
        return _ChannelRoute(remote_machine, remote_port, remote_host)
    if _is_openssh_machine(remote_machine):
        return _UnixSocketTunnel(remote_machine, remote_port, remote_host)
    return _TcpPortTunnel(remote_machine, remote_port)


class _CloseAll:
    """Closes several things in order, as one ``tun`` of a `TunneledSocketStream`."""

    def __init__(self, *closables: Any) -> None:
        self._closables = [item for item in closables if item is not None]

    def close(self) -> None:
        closables, self._closables = self._closables, []
        for item in closables:
            item.close()


def open_stream(
    remote_machine: Any, remote_port: int, remote_host: str = "localhost"
) -> TunneledSocketStream:
    """A stream through a route made for it alone: closing the stream ends the route.

    Arguments as for `open_route`.
    """
    route = open_route(remote_machine, remote_port, remote_host)
    try:
        stream = route.connect_stream()
    except BaseException:
        route.close()
        raise
    stream.tun = _CloseAll(stream.tun, route)
    return stream


# ------------------------------------------------------------ processes
def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _wait_readable(target: Any, deadline: float | None) -> bool:
    """Wait in the hub until ``target`` (anything with ``fileno()``) is readable."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    ready, _, _ = gevent.select.select([target], [], [], timeout)
    return bool(ready)


class RemoteProcess:
    """A process plumbum started on a remote machine, watched without blocking the hub.

    ``popen`` is what the machine's ``popen`` returned: a local
    `subprocess.Popen` of ssh (``SshMachine``) or a ``ParamikoPopen`` (its
    channel's descriptor signals stdout data and EOF). EOF on stdout means
    the remote process has exited; stderr is read only to explain a failure.
    """

    def __init__(self, popen: Any) -> None:
        self.popen = popen
        # plumbum's popens name their command line argv, subprocess's args.
        argv: Any = getattr(popen, "argv", None) or getattr(popen, "args", ())
        self.argv: list[str] = list(argv)
        self._channel = getattr(popen, "channel", None)
        self._unread = b""
        self.exited = False

    def _read_stdout(self, deadline: float | None) -> bytes | None:
        """Some stdout bytes, ``b""`` at EOF, None if the deadline came first."""
        if self._channel is not None:
            if not _wait_readable(self._channel, deadline):
                return None
            data: bytes = self._channel.recv(_READ_CHUNK)
        else:
            if not _wait_readable(self.popen.stdout, deadline):
                return None
            data = os.read(self.popen.stdout.fileno(), _READ_CHUNK)
        if not data:
            self.exited = True
        return data

    def read_line(self, deadline: float | None) -> bytes | None:
        """The next stdout line (at EOF: what is left, maybe ``b""``); None past ``deadline``.

        Args:
            deadline: a `time.monotonic` time, or None to wait until a line or EOF.
        """
        while b"\n" not in self._unread and not self.exited:
            data = self._read_stdout(deadline)
            if data is None:
                return None
            self._unread += data
        line, _, self._unread = self._unread.partition(b"\n")
        return line

    def wait_exit(self, timeout: float | None) -> bool:
        """True once the process has exited (its stdout reached EOF) within ``timeout``."""
        deadline = _deadline(timeout)
        while not self.exited:
            if self._read_stdout(deadline) is None:
                return False
        return True

    def close_stdin(self) -> None:
        """Send EOF to the process's stdin."""
        # The SSH side may already be gone; then the process got its EOF.
        with contextlib.suppress(Exception):
            self.popen.stdin.close()

    def returncode(self) -> int | None:
        """The exit status, once the process has exited (None if the SSH side never says)."""
        if self._channel is not None:
            # sshd sends the status around the EOF; paramiko's thread sets the event.
            if self._channel.status_event.wait(_CLIENT_EXIT_TIMEOUT):
                return int(self._channel.exit_status)
            return None
        try:
            return int(self.popen.wait(timeout=_CLIENT_EXIT_TIMEOUT))
        except subprocess.TimeoutExpired:
            return None

    def error_output(self) -> str:
        """What the process wrote to stderr, read once it has exited (for error messages)."""
        chunks = []
        if self._channel is not None:
            # sshd sends a session's EOF only after its stderr is drained.
            while self._channel.recv_stderr_ready():
                chunks.append(self._channel.recv_stderr(_READ_CHUNK))
        else:
            deadline = _deadline(_ERROR_OUTPUT_TIMEOUT)
            while _wait_readable(self.popen.stderr, deadline):
                data = os.read(self.popen.stderr.fileno(), _READ_CHUNK)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def release(self, force: bool = False) -> None:
        """End the SSH side: the paramiko channel, or the local ssh process and its pipes.

        Args:
            force: kill the local ssh process instead of waiting for it (the
                remote process did not exit, so it would not end by itself).
        """
        if self._channel is not None:
            with contextlib.suppress(Exception):
                self.popen.close()
            return
        if force:
            self.popen.kill()
        try:
            self.popen.wait(timeout=_CLIENT_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        for pipe in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
