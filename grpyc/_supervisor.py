"""Child processes of a server: forking, reaping, restarting and stopping them.

`Children` forks with `gevent.fork` (gevent is reinitialised in the child),
reaps each child in a greenlet as it exits, and stops them all (SIGTERM,
then SIGKILL). `Supervisor` keeps a fixed number of worker processes alive
on top of it, restarting a worker that dies with a growing delay when it
dies young. What a worker or a forked child does is `server`'s business.

Invariant: every reaper greenlet is owned by its `Children` and every child
is stopped by `Children.stop`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import NoReturn

import gevent
import gevent.os
from gevent import Greenlet
from gevent.event import Event

from grpyc.lib import kill_greenlets

__all__ = [
    "CHILD_STOP_MARGIN",
    "Children",
    "Supervisor",
    "describe_status",
    "exit_child",
    "run_child",
    "watch_parent",
]

# Children get the grace period plus this to close their connections and
# exit before SIGKILL; then this long again to be reaped.
CHILD_STOP_MARGIN = 2.0
# A worker that dies sooner than this after starting is restarted with a
# growing delay (up to the maximum), so a worker that cannot start does
# not turn the supervisor into a fork loop.
_STABLE_WORKER_SECONDS = 5.0
_RESTART_DELAY_MIN = 0.1
_RESTART_DELAY_MAX = 5.0
# How often a worker checks that its supervisor is still alive.
_PARENT_CHECK = 1.0


def describe_status(status: int) -> str:
    """How a child ended, from its `waitpid` status, for the log."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def exit_child(status: int) -> NoReturn:
    """End a forked child without running the parent's cleanup (atexit, pytest...)."""
    logging.shutdown()
    os._exit(status)


def run_child(body: Callable[[], None], logger: logging.Logger, what: str) -> NoReturn:
    """In a forked child: run ``body()``, then exit, with status 1 if it raised.

    The exception goes to the log (the parent only sees the status); `what`
    names the child there.
    """
    status = 0
    try:
        body()
    except BaseException:
        # To the log: nothing above this frame may run in the child.
        logger.exception("%s failed", what)
        status = 1
    exit_child(status)


def watch_parent(parent: int, stopping: Event, on_gone: Callable[[int], None]) -> None:
    """In a worker: call ``on_gone(parent)`` if `parent` dies before `stopping` is set.

    A worker whose supervisor died (SIGKILL, say) would serve on with nobody
    left to stop it.
    """
    while not stopping.wait(_PARENT_CHECK):
        if os.getppid() != parent:
            on_gone(parent)
            return


class Children:
    """The child processes of one server: reaped as they exit, ended by `stop`."""

    def __init__(
        self, logger: logging.Logger, on_exit: Callable[[int, int, float], None] | None = None
    ) -> None:
        """`on_exit(pid, status, seconds_lived)` runs when a child ends (default: a debug line)."""
        self._logger = logger
        self._on_exit = on_exit or self._log_exit
        self.started_at: dict[int, float] = {}
        self._reapers: dict[int, Greenlet] = {}

    def __len__(self) -> int:
        return len(self.started_at)

    def fork(self) -> int:
        """Fork; returns the child's pid in the parent and 0 in the child."""
        pid: int = gevent.fork()
        if pid == 0:
            self._forget()
            return 0
        self.started_at[pid] = time.monotonic()
        self._reapers[pid] = gevent.spawn(self._reap, pid)
        return pid

    def _log_exit(self, pid: int, status: int, lived: float) -> None:
        self._logger.debug("child pid %d %s", pid, describe_status(status))

    def _forget(self) -> None:
        # In a new child: its siblings are not its children.
        reapers = list(self._reapers.values())
        self.started_at.clear()
        self._reapers.clear()
        kill_greenlets(reapers)

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
            gevent.joinall(list(self._reapers.values()), timeout=CHILD_STOP_MARGIN)


class Supervisor:
    """Keeps `workers` forked worker processes running until `stopping` is set.

    Args:
        logger: where starts, deaths and restarts are logged.
        workers: how many worker processes to keep.
        run_worker: what a worker does, called in the child with the
            supervisor's pid; it never returns.
        stopping: set when the server closes; no worker is restarted after.
    """

    def __init__(
        self,
        logger: logging.Logger,
        workers: int,
        run_worker: Callable[[int], NoReturn],
        stopping: Event,
    ) -> None:
        self._logger = logger
        self._workers = workers
        self._run_worker = run_worker
        self._stopping = stopping
        self._restart_delay = 0.0
        self.children = Children(logger, self._on_exit)

    def start(self) -> None:
        """Fork the workers (in the child, this never returns)."""
        for _ in range(self._workers):
            self._start_worker()

    def _start_worker(self) -> None:
        supervisor = os.getpid()
        pid = self.children.fork()
        if pid == 0:
            self._run_worker(supervisor)
        self._logger.info("started worker pid %d", pid)

    def _on_exit(self, pid: int, status: int, lived: float) -> None:
        if self._stopping.is_set():
            self._logger.debug("child pid %d %s", pid, describe_status(status))
            return
        if lived < _STABLE_WORKER_SECONDS:
            self._restart_delay = min(
                max(self._restart_delay * 2, _RESTART_DELAY_MIN), _RESTART_DELAY_MAX
            )
        else:
            self._restart_delay = 0.0
        self._logger.warning(
            "worker pid %d %s after %.1f s; starting a replacement in %.1f s",
            pid,
            describe_status(status),
            lived,
            self._restart_delay,
        )
        if not self._stopping.wait(self._restart_delay):
            self._start_worker()
