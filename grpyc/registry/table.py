"""The registry's table and what each request does to it: bytes in, reply bytes out.

``RegistryTable`` keeps ``name -> {(host, port): last seen}``, applies the
four commands of PROTOCOL.md section 8 and the limits of ``RegistryLimits``,
and prunes entries that were not refreshed in time. It never touches a
socket: ``handle_request(data, host, max_reply_size)`` is the whole
decision, and the servers in ``grpyc.registry.servers`` only move bytes.

Invariants: what a peer can make the table hold is bounded per source host
(``max_entries_per_host``) and in total (``max_entries``), each entry's size
by ``max_name_length``; a reply never exceeds the budget its transport
gives; a request that is refused gets no reply and is logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Final, TypedDict

from grpyc.registry.wire import (
    MAX_DGRAM_SIZE,
    InvalidRequestError,
    fit_reply,
    parse_request,
)

__all__ = ["DEFAULT_PRUNING_TIMEOUT", "RegistryLimits", "RegistryTable", "TableOptions"]

# RPyC's value: servers re-register every 60 s, so an entry survives three
# lost datagrams before it is dropped.
DEFAULT_PRUNING_TIMEOUT: Final = 4 * 60
# A full table prunes before it refuses a registration, at most this often,
# so a flood of refused REGISTERs costs one table scan a second, not one each.
_FULL_PRUNE_INTERVAL: Final = 1.0

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RegistryLimits:
    """What a registry server accepts, holds and sends; pass as ``limits=``.

    An *entry* is one server under one name: ``(name, host, port)``. At the
    defaults the full table takes at most about 2.5 MiB (measured with
    4,096 entries of 255-character names), whatever peers send.
    """

    # RPyC reads requests with recvfrom(1500): larger ones never worked with it.
    max_request_size: int = MAX_DGRAM_SIZE
    # Service names are class names; 255 is far beyond any real one.
    max_name_length: int = 255
    # One machine rarely runs more than a few dozen servers with a few aliases.
    max_entries_per_host: int = 256
    # A LAN of 1,000 servers with 4 aliases each.
    max_entries: int = 4096
    # UDP replies at most 10x their request, since a datagram's source can be
    # forged: a QUERY of a 3-letter name (21 bytes) gets 210 bytes, 10
    # loopback or 8 to 10 LAN servers; more needs TCP.
    max_amplification: int = 10
    # TCP replies: our clients read up to 64 KiB (the TCP handshake proves
    # the source, so there is no amplification to fear).
    max_reply_size: int = 64 * 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{field.name} must be an int >= 1, got {value!r}")


class TableOptions(TypedDict, total=False):
    """The keyword-only arguments of `RegistryTable`, which the servers pass on."""

    clock: Callable[[], float]
    limits: RegistryLimits | None


class RegistrationRefusedError(Exception):
    """A REGISTER that would break one of the ``RegistryLimits``."""


def _check_pruning_timeout(pruning_timeout: float | None) -> float:
    if pruning_timeout is None:
        return DEFAULT_PRUNING_TIMEOUT
    if not pruning_timeout > 0:
        raise ValueError(f"pruning_timeout must be > 0 seconds, got {pruning_timeout!r}")
    return float(pruning_timeout)


class RegistryTable:
    """The registry's state and commands, without I/O. RPyC-compatible names.

    ``RegistryServer`` adds sockets and a life cycle; this class alone is
    what the tests feed requests to.

    Differences from RPyC: ``on_service_removed`` runs only for entries that
    existed (RPyC also calls it for every name on any UNREGISTER); LIST
    never shows stale entries; REGISTER is refused (logged, no reply) past
    the limits; replies are cut to the transport's budget.
    """

    def __init__(
        self,
        pruning_timeout: float | None = None,
        logger: logging.Logger | None = None,
        allow_listing: bool = False,
        *,
        clock: Callable[[], float] = time.monotonic,
        limits: RegistryLimits | None = None,
    ) -> None:
        """An empty table.

        Args:
            pruning_timeout: seconds without REGISTER after which an entry is
                dropped; None is ``DEFAULT_PRUNING_TIMEOUT``.
            allow_listing: answer LIST (otherwise its reply is None, as in RPyC).
            clock: monotonic seconds; tests pass a fake one to drive pruning.
            limits: sizes and counts; None is ``RegistryLimits()``.

        Raises:
            ValueError: ``pruning_timeout`` is not positive.
        """
        self.pruning_timeout = _check_pruning_timeout(pruning_timeout)
        self.allow_listing = allow_listing
        self.limits = limits if limits is not None else RegistryLimits()
        self.logger = logger if logger is not None else self._get_logger()
        self.services: dict[str, dict[Address, float]] = {}
        self._entries_per_host: dict[str, int] = {}
        self._entry_count = 0
        self._clock = clock
        self._last_full_prune = -math.inf

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger("grpyc.registry")

    # hooks -----------------------------------------------------------------

    def on_service_added(self, name: str, addrinfo: Address) -> None:
        """Called when a server joins under ``name`` (not on re-registration)."""

    def on_service_removed(self, name: str, addrinfo: Address) -> None:
        """Called when a server leaves ``name``: unregistered or pruned."""

    def _call_hook(self, hook: Callable[[str, Address], None], name: str, addr: Address) -> None:
        try:
            hook(name, addr)
        except Exception:
            # To the log: a failing user hook must not stop the registry.
            self.logger.exception("registry hook %s(%r, %r) failed", hook.__name__, name, addr)

    # the table -------------------------------------------------------------

    def _add_service(self, name: str, addrinfo: Address) -> None:
        servers = self.services.setdefault(name, {})
        is_new = addrinfo not in servers
        servers[addrinfo] = self._clock()
        if is_new:
            self._entry_count += 1
            host = addrinfo[0]
            self._entries_per_host[host] = self._entries_per_host.get(host, 0) + 1
            self._call_hook(self.on_service_added, name, addrinfo)

    def _remove_service(self, name: str, addrinfo: Address) -> None:
        servers = self.services.get(name)
        if servers is None or servers.pop(addrinfo, None) is None:
            return
        if not servers:
            del self.services[name]
        self._entry_count -= 1
        host = addrinfo[0]
        left = self._entries_per_host[host] - 1
        if left:
            self._entries_per_host[host] = left
        else:
            del self._entries_per_host[host]
        self._call_hook(self.on_service_removed, name, addrinfo)

    def _prune_name(self, name: str) -> None:
        oldest = self._clock() - self.pruning_timeout
        stale = [addr for addr, seen in self.services.get(name, {}).items() if seen < oldest]
        for addrinfo in stale:
            self.logger.debug("pruning stale %s at %s:%s", name, *addrinfo)
            self._remove_service(name, addrinfo)

    def prune(self) -> None:
        """Drop every entry not refreshed within ``pruning_timeout``."""
        self._last_full_prune = self._clock()
        for name in list(self.services):
            self._prune_name(name)

    def entries_of(self, host: str) -> int:
        """How many entries ``host`` holds (one per name and port)."""
        return self._entries_per_host.get(host, 0)

    def _has_room(self, host: str, new: int) -> bool:
        limits = self.limits
        return (
            self.entries_of(host) + new <= limits.max_entries_per_host
            and self._entry_count + new <= limits.max_entries
        )

    def _make_room(self, host: str, new: int) -> None:
        """Return once ``new`` more entries of ``host`` fit, pruning if that helps.

        Raises:
            RegistrationRefusedError: they do not fit.
        """
        if self._has_room(host, new):
            return
        if self._clock() - self._last_full_prune >= _FULL_PRUNE_INTERVAL:
            self.prune()
            if self._has_room(host, new):
                return
        held = self.entries_of(host)
        limit = self.limits.max_entries_per_host
        if held + new > limit:
            raise RegistrationRefusedError(
                f"{host} would hold {held + new} entries, over max_entries_per_host={limit}"
            )
        raise RegistrationRefusedError(
            f"the registry would hold {self._entry_count + new} entries, "
            f"over max_entries={self.limits.max_entries}"
        )

    # commands (RPyC-compatible names and signatures) -------------------------

    def cmd_query(self, host: str, name: str) -> tuple[Address, ...]:
        """Servers of ``name``, least recently refreshed first (as in RPyC)."""
        name = name.upper()
        self._prune_name(name)
        servers = sorted(self.services.get(name, {}).items(), key=lambda item: item[1])
        return tuple(addr for addr, _ in servers)

    def cmd_list(self, host: str, filter_host: tuple[str | None]) -> tuple[str, ...] | None:
        """Registered names (only those on ``filter_host[0]`` when it is set),
        or None when listing is off."""
        if not self.allow_listing:
            return None
        self.prune()
        wanted = filter_host[0]
        return tuple(
            name
            for name, servers in self.services.items()
            if not wanted or any(addr[0] == wanted for addr in servers)
        )

    def cmd_register(self, host: str, names: tuple[str, ...], port: int) -> str:
        """Record ``host:port`` under each of ``names``; the host is the sender's.

        Raises:
            RegistrationRefusedError: a name is too long, or the new entries
                would pass ``max_entries_per_host`` or ``max_entries``.
        """
        wanted = tuple(dict.fromkeys(name.upper() for name in names))
        limit = self.limits.max_name_length
        for name in wanted:
            if len(name) > limit:
                raise RegistrationRefusedError(
                    f"name of {len(name)} characters exceeds max_name_length={limit}"
                )
        addrinfo = (host, port)
        new = sum(1 for name in wanted if addrinfo not in self.services.get(name, ()))
        if new:
            self._make_room(host, new)
        self.logger.debug("registering %s:%s as %s", host, port, ", ".join(wanted))
        for name in wanted:
            self._add_service(name, addrinfo)
        return "OK"

    def cmd_unregister(self, host: str, port: int) -> str:
        """Remove ``host:port`` from every name."""
        self.logger.debug("unregistering %s:%s", host, port)
        for name in list(self.services):
            self._remove_service(name, (host, port))
        return "OK"

    def handle_request(
        self, data: bytes, host: str, max_reply_size: int | None = None
    ) -> bytes | None:
        """The reply to one request from ``host``, or None when none is due.

        Args:
            data: the request's bytes, as received.
            host: the sender's address (REGISTER records it).
            max_reply_size: the transport's reply budget; None is
                ``limits.max_reply_size``. Longer results keep the entries
                that fit.
        """
        try:
            cmd, args = parse_request(data, self.limits.max_request_size)
        except InvalidRequestError as exc:
            self.logger.warning("ignored request from %s: %s", host, exc)
            return None
        budget = self.limits.max_reply_size if max_reply_size is None else max_reply_size
        try:
            result = getattr(self, f"cmd_{cmd.lower()}")(host, *args)
            reply, left_out = fit_reply(result, budget)
        except RegistrationRefusedError as exc:
            self.logger.warning("refused REGISTER from %s: %s", host, exc)
            return None
        except Exception:
            # To the log: a failing (overridden) command must not stop the registry.
            self.logger.exception("registry command %s from %s failed", cmd, host)
            return None
        if left_out:
            self.logger.info(
                "%s reply to %s left out %d entries to fit %d bytes", cmd, host, left_out, budget
            )
        return reply
