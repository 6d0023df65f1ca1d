"""Announcing a server's service to a registry while the server runs.

The registry protocol itself is `registry`'s; when to announce is `server`'s.
"""

from __future__ import annotations

import logging
from typing import Any

from gevent.event import Event

__all__ = ["register_until", "unregister"]

# A registration the registry did not acknowledge is retried this soon (as
# in RPyC), instead of after the full re-registration interval.
_REGISTER_RETRY = 1.0


def register_until(
    registrar: Any,
    service: Any,
    address: tuple[str, int],
    stopping: Event,
    logger: logging.Logger,
) -> None:
    """Register the service's aliases at `address` now and every ``REREGISTER_INTERVAL``.

    Stops when `stopping` is set.
    Failures go to the log and are retried after a second: the registry may
    come back.
    """
    host, port = address
    aliases = service.get_service_aliases()
    interval = registrar.REREGISTER_INTERVAL
    while True:
        try:
            registered = registrar.register(aliases, port, interface=host)
        except Exception:
            # To the log, then retried.
            logger.exception("registering %s failed", ", ".join(aliases))
            registered = False
        if stopping.wait(interval if registered else _REGISTER_RETRY):
            return


def unregister(registrar: Any, port: int, logger: logging.Logger) -> None:
    """Unregister `port`; a failure goes to the log (closing goes on regardless)."""
    try:
        registrar.unregister(port)
    except Exception:
        # To the log: the server closes whatever the registry does.
        logger.exception("unregistering port %s failed", port)
