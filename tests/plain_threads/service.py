"""The service the plain-thread scenarios call, served by a stock or grpyc server process.

Run as ``python -m tests.plain_threads.service``: a stock rpyc ThreadedServer
(the reference peer) on 127.0.0.1, an ephemeral port, printed on stdout.
"""

import threading
import time


def make_service(rpyc):
    class ScenarioService(rpyc.Service):
        def exposed_add(self, a, b):
            return a + b

        def exposed_sleep(self, seconds):
            time.sleep(seconds)
            return seconds

        def exposed_fail(self, message):
            raise ValueError(message)

        def exposed_call(self, func, *args):
            return func(*args)

        def exposed_call_later(self, func, delay, *args):
            # A callback the server makes on its own, outside any client call.
            def later():
                time.sleep(delay)
                func(*args)

            threading.Thread(target=later, daemon=True).start()
            return True

    return ScenarioService


def main():
    import rpyc
    from rpyc.utils.server import ThreadedServer

    server = ThreadedServer(
        make_service(rpyc),
        hostname="127.0.0.1",
        port=0,
        protocol_config={"allow_public_attrs": True, "sync_request_timeout": 10},
    )
    server._listen()  # listening before the port is told
    print(server.port, flush=True)
    server.start()


if __name__ == "__main__":
    main()
