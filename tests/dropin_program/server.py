"""Serve CalcService (``python server.py``) or classic mode (``python server.py classic``)."""

import sys

import rpyc
from calc_service import CalcService
from rpyc.lib import setup_logger
from rpyc.utils.server import ThreadedServer


def main():
    setup_logger(quiet=True)
    classic = sys.argv[1:] == ["classic"]
    service = rpyc.ClassicService if classic else CalcService
    server = ThreadedServer(service, hostname="127.0.0.1", port=0)
    print(f"server: listening on port {server.port}", flush=True)
    server.start()


if __name__ == "__main__":
    main()
