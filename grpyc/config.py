"""`DEFAULT_CONFIG`, the connection settings, and the typed limits the runtime takes.

Pure data: nothing here does I/O. RPyC's keys keep RPyC's names, defaults and
meaning (the seed document's table); grpyc's own keys follow, each with the
reason for its default. `Limits` is the frozen record of the bounds a
connection's runtime enforces, checked once when a connection is made, so
that the runtime never reads the (mutable, user-visible) config dict.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from grpyc import brine
from grpyc.policy import SAFE_ATTRS

__all__ = ["DEFAULT_CONFIG", "Limits"]

DEFAULT_CONFIG: dict[str, Any] = {
    # --- RPyC's keys and defaults (the seed document's dict) ---
    "allow_safe_attrs": True,
    "allow_exposed_attrs": True,
    "allow_public_attrs": False,
    "allow_all_attrs": False,
    "safe_attrs": set(SAFE_ATTRS),
    "exposed_prefix": "exposed_",
    "allow_getattr": True,
    "allow_setattr": False,
    "allow_delattr": False,
    "allow_pickle": False,
    "include_local_traceback": True,
    "include_local_version": True,
    "instantiate_custom_exceptions": False,
    "import_custom_exceptions": False,
    "instantiate_oldstyle_exceptions": False,
    "propagate_SystemExit_locally": False,
    "propagate_KeyboardInterrupt_locally": True,
    "log_exceptions": True,
    "logger": None,
    "connid": None,
    "credentials": None,
    "endpoints": None,
    "sync_request_timeout": 30,
    "before_closed": None,
    "close_catchall": False,
    # RPyC's thread-bound framing (a 16-byte thread-id prefix on every frame);
    # both sides must agree. Like RPyC, the default comes from RPYC_BIND_THREADS
    # (exactly "true"), read once at import.
    "bind_threads": os.environ.get("RPYC_BIND_THREADS") == "true",
    # --- grpyc's keys ---
    # None keeps the channel's own setting (compression "auto", 64 MiB frames).
    "compression": None,
    "max_frame_size": None,
    "max_decompressed_size": None,
    # Brine nesting the reader accepts; real messages nest < 20 deep.
    "max_brine_depth": brine.DEFAULT_MAX_DEPTH,
    # Memory one message may decode to (an estimate of its Python objects).
    # A frame is at most 64 MiB decompressed, but brine can decode to ~110
    # bytes of objects per byte; this bounds what one frame costs whatever
    # it holds, while a 64 MiB bytes or str value still fits.
    "max_decoded_size": 128 * 1024 * 1024,
    # Handler greenlets per connection; beyond, requests queue, then get errors.
    # 256 keeps a flood from one peer at a few MiB of greenlet stacks.
    "max_concurrent_requests": 256,
    "max_queued_requests": 4096,
    # Memory the peer's requests may hold here at once: their decoded values
    # (running or queued) plus ~16 KiB per handler greenlet. Past it, requests
    # get an error reply (one is always admitted). Bounds what one peer can
    # park: 32 MiB still holds ~2,000 waiting handlers (callback chains
    # thousands deep).
    "max_request_bytes": 32 * 1024 * 1024,
    # Local objects the peer may hold references to at once (each costs ~340 B
    # here); past it, boxing one more fails with an error naming this key.
    "max_exported_objects": 262144,
    # Proxy classes cached per connection (least recently used go first): a
    # peer naming endless new classes cannot grow memory without bound.
    "max_netref_classes": 256,
    # Bytes queued for a peer that does not read before the connection drops
    # (frames and deferred DELs): above the largest frame (64 MiB) so one big
    # reply never trips it.
    "max_send_buffer": 128 * 1024 * 1024,
    # Upper bound for one BUFFITER batch, so a peer cannot make us drain an
    # endless iterator into memory.
    "max_buffiter_count": 65536,
    # True runs one request at a time per connection (RPyC's model); a handler
    # waiting on the peer yields its turn, so nested requests still get in.
    "serialize_requests": False,
    # True answers `proxy.method` from the class's INSPECT answer and calls
    # it with one CALLATTR (no GETATTR round trip). Off by default: RPyC's
    # answers (hasattr, a descriptor raising AttributeError, inspect.ismethod)
    # need the GETATTR; docs/semantics.md says what differs when it is on.
    "local_method_lookup": False,
    # True iterates proxies of built-in lists, dicts and sets in batches
    # (BUFFITER: 16, 64, 256, then 1024 items a request); False is RPyC's one
    # request per item. Off by default: under the soak workload a server that
    # prefetches grows RSS in memory outside Python's allocator.
    "prefetch_iteration": False,
    # Seconds between keepalive pings when nothing arrives (None: off), and how
    # long a ping may take before the peer is declared dead.
    "keepalive_interval": None,
    "keepalive_timeout": 10.0,
    # Seconds without any incoming frame before the connection closes (None: off).
    "idle_timeout": None,
    # Seconds `close()` waits for the peer to answer CLOSE.
    "close_timeout": 2.0,
}


# Limits that may be 0 (none queued); the others must be at least 1.
_MAY_BE_ZERO = frozenset(["max_queued_requests"])


def _limit(config: Mapping[str, Any], key: str) -> int:
    value = config[key]
    least = 0 if key in _MAY_BE_ZERO else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{key} must be an int >= {least}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """The bounds one connection's runtime enforces (see `DEFAULT_CONFIG` for each reason)."""

    max_concurrent_requests: int
    max_queued_requests: int
    max_request_bytes: int
    max_send_buffer: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Limits:
        """The limits of `config`, checked.

        Raises:
            ValueError: a limit is not an int in its range (the message names its key).
        """
        names = (field.name for field in dataclasses.fields(cls))
        limits = cls(**{name: _limit(config, name) for name in names})
        # One object for the connections of one configuration, not one each:
        # a full collection walks every tracked object a server holds.
        if len(_SHARED_LIMITS) < _MAX_SHARED_LIMITS:
            return _SHARED_LIMITS.setdefault(limits, limits)
        return _SHARED_LIMITS.get(limits, limits)


_SHARED_LIMITS: dict[Limits, Limits] = {}
_MAX_SHARED_LIMITS = 64
