"""Keepalive pings and the idle timeout of one connection (grpyc's own keys).

Every ``min(keepalive_interval, idle_timeout) / 2`` seconds the runtime calls
`Watchdog.check`: a connection quiet for ``idle_timeout`` with nothing in
flight is closed; one quiet for ``keepalive_interval`` is pinged, and closed
if the ping takes longer than ``keepalive_timeout``. Uses only the
connection's public methods.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from grpyc.messages import PingError

__all__ = ["Watchdog"]


class Watchdog:
    """The periodic check of one connection."""

    __slots__ = (
        "_conn",
        "_idle_timeout",
        "_interval",
        "_logger",
        "_pinging",
        "_runtime",
        "_timeout",
    )

    def __init__(
        self, conn: Any, runtime: Any, config: dict[str, Any], logger: logging.Logger
    ) -> None:
        self._conn = conn
        self._runtime = runtime
        self._idle_timeout = config["idle_timeout"]
        self._interval = config["keepalive_interval"]
        self._timeout = config["keepalive_timeout"]
        self._logger = logger
        self._pinging = False

    @classmethod
    def start(cls, conn: Any, runtime: Any, config: dict[str, Any], logger: logging.Logger) -> None:
        """Start checking `conn` if its config asks for keepalive or an idle timeout."""
        periods = [t for t in (config["keepalive_interval"], config["idle_timeout"]) if t]
        if periods:
            runtime.start_watchdog(min(periods) / 2, cls(conn, runtime, config, logger).check)

    def check(self) -> None:
        quiet = time.monotonic() - self._runtime.last_received
        idle = self._idle_timeout
        if idle and quiet >= idle and not self._runtime.is_busy():
            self._logger.info(
                "%s: closing after %.1f s idle (idle_timeout=%s)", self._runtime.name, quiet, idle
            )
            self._conn.abort(f"idle for {quiet:.1f} s (idle_timeout={idle})")
            return
        if self._interval and quiet >= self._interval and not self._pinging:
            self._pinging = True
            try:
                self._ping_or_close()
            finally:
                self._pinging = False

    def _ping_or_close(self) -> None:
        try:
            self._conn.ping(timeout=self._timeout)
        except (TimeoutError, PingError):
            self._logger.warning(
                "%s: peer did not answer keepalive ping; closing", self._runtime.name
            )
            self._conn.abort("peer did not answer keepalive ping")
        except EOFError:
            pass
