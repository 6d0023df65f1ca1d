"""Serve CalcService as RPyC test fixtures do: ``python server.py REGISTRY_PORT``.

The server runs in a background thread (``_start_in_thread``) and
registers with the registry on REGISTRY_PORT through the default registrar
(a broadcast); it stops when stdin closes.
"""

import sys

from calc_service import CalcService
from rpyc.lib import setup_logger
from rpyc.utils.registry import UDPRegistryClient
from rpyc.utils.server import ThreadedServer


def main():
    setup_logger(quiet=True)
    registrar = UDPRegistryClient(port=int(sys.argv[1]))
    server = ThreadedServer(
        CalcService,
        hostname="127.0.0.1",
        port=0,
        auto_register=True,
        registrar=registrar,
        # The server alone allows pickling: its clients may pickle its objects.
        protocol_config={"allow_pickle": True},
    )
    server._start_in_thread()
    print(f"server: listening on port {server.port}", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.close()
    print(f"server: closed {server._closed}", flush=True)


if __name__ == "__main__":
    main()
