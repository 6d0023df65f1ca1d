"""Stock rpyc 6.0.2: ThreadedServer with a thread client, or GeventServer under patch_all."""

from bench.targets.rpc_client import RpcClient
from bench.targets.service import BenchMethods


def serve(on_port, kind):
    import rpyc
    from rpyc.utils.server import GeventServer, ThreadedServer

    class BenchService(BenchMethods, rpyc.Service):
        pass

    server_class = GeventServer if kind == "gevent" else ThreadedServer
    server = server_class(BenchService, hostname="127.0.0.1", port=0)
    # rpyc binds in __init__ but listens in start(), which blocks: listen
    # first (start() skips it then) so the port we report already accepts.
    server._listen()
    on_port(server.port)
    server.start()


def make_client():
    import rpyc

    return RpcClient(rpyc.connect)
