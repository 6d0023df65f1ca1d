"""``grpyc registry`` (and ``rpyc_registry``): run a UDP or TCP registry server."""

from __future__ import annotations

import argparse
from typing import Any

from grpyc._signals import close_on_signals
from grpyc.cli._options import StartError
from grpyc.cli._output import announce, configure_logging

__all__ = ["run_registry"]


def run_registry(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    configure_logging(args)
    host = args.host or ("::1" if args.ipv6 else "127.0.0.1")
    server = _make_registry(args, host)
    shown = f"[{host}]" if ":" in host else host
    announce(f"grpyc registry server ({args.mode}) listening on {shown}:{server.port}")
    with close_on_signals(server.close):
        server.start()
    return 0


def _make_registry(args: argparse.Namespace, host: str) -> Any:
    from grpyc import registry

    server_class = registry.UDPRegistryServer if args.mode == "UDP" else registry.TCPRegistryServer
    try:
        return server_class(
            host=host,
            port=args.port,
            pruning_timeout=args.pruning_timeout,
            allow_listing=args.allow_listing,
        )
    except OSError as exc:
        raise StartError(f"cannot listen on {host}:{args.port}: {exc.strerror or exc}") from exc
