"""What the grpyc commands write besides their logs, and how they log.

The lines scripts read are written whatever the log settings: one line on
stderr once a server is bound (``grpyc classic server listening on
HOST:PORT``), and in oneshot mode RPyC's two stdout lines (``rpyc-oneshot``,
then ``HOST<TAB>PORT``), which scripts written for ``rpyc_classic`` read.
"""

from __future__ import annotations

import argparse
import logging
import sys

from grpyc.cli._options import StartError

__all__ = ["announce", "configure_logging", "print_oneshot_address"]

_LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def configure_logging(args: argparse.Namespace) -> None:
    """Log to ``--logfile`` or stderr, INFO and up (WARNING with ``--quiet``)."""
    try:
        handler: logging.Handler = (
            logging.FileHandler(args.logfile) if args.logfile else logging.StreamHandler()
        )
    except OSError as exc:
        raise StartError(f"cannot open log file: {exc}") from exc
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, handlers=[handler], force=True
    )


def announce(text: str) -> None:
    """One line on stderr, whatever the log settings (scripts read the port here)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def print_oneshot_address(host: str, port: int | str) -> None:
    """RPyC's oneshot lines on stdout: ``rpyc-oneshot``, then ``HOST<TAB>PORT``.

    A Unix socket's path is printed as the host, with no port after the tab.
    """
    sys.stdout.write(f"rpyc-oneshot\n{host}\t{port}\n")
    sys.stdout.flush()
