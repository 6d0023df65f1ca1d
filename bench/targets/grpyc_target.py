"""grpyc: `grpyc.server.Server` and `grpyc.factory.connect` (patched or not: see targets)."""

from bench.targets.rpc_client import RpcClient
from bench.targets.service import BenchMethods


def serve(on_port):
    import gevent

    from grpyc.server import Server
    from grpyc.service import Service

    class BenchService(BenchMethods, Service):
        _yield_once = staticmethod(gevent.sleep)  # what a gevent handler's I/O does

    server = Server(BenchService, hostname="127.0.0.1", port=0)
    server.listen()
    on_port(server.port)
    server.start()


def make_client():
    from grpyc.factory import connect

    return RpcClient(connect)
