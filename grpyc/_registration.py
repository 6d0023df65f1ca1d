"""Announcing a server's service to a registry while the server runs.

The registry protocol itself is `registry`'s; when to announce is `server`'s.
"""

from __future__ import annotations

import logging
from typing import Any

from gevent.event import Event

from grpyc.registry import register_periodically

__all__ = ["register_until", "unregister"]


def register_until(registrar: Any, service: Any, address: tuple[str, int], stopping: Event) -> None:
    """Register the service's aliases at `address` now and every ``REREGISTER_INTERVAL``.

    Stops when `stopping` is set; failures go to the log and are retried
    (`grpyc.registry.register_periodically`). A server bound to an IPv6
    address registers from whatever address the registrar's own family
    allows: an IPv4 registrar cannot send from ``::1``.
    """
    host, port = address
    interface = "" if ":" in host else host
    aliases = service.get_service_aliases()
    register_periodically(registrar, aliases, port, stopping, interface=interface)


def unregister(registrar: Any, port: int, logger: logging.Logger) -> None:
    """Unregister `port`; a failure goes to the log (closing goes on regardless)."""
    try:
        registrar.unregister(port)
    except Exception:
        # To the log: the server closes whatever the registry does.
        logger.exception("unregistering port %s failed", port)
