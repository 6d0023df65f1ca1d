"""A client session: ``python client.py CALC_PORT CLASSIC_HOST CLASSIC_PORT REGISTRY_PORT``."""

import os
import pickle
import re
import sys
import tempfile
import time

import rpyc
import rpyc.core.vinegar
from calc_errors import CalcError
from rpyc.core.stream import NamedPipeStream
from rpyc.lib import safe_import, setup_logger
from rpyc.lib.colls import WeakValueDict
from rpyc.lib.compat import BYTES_LITERAL, is_py_3k, maxint
from rpyc.utils.factory import DiscoveryError
from rpyc.utils.registry import UDPRegistryClient

# A remote CalcError arrives as this class although custom exceptions are
# not instantiated by default: RPyC's registry of exception classes by name.
rpyc.core.vinegar._generic_exceptions_cache["calc_errors.CalcError"] = CalcError

# RPyC's log records start with a timestamp ("%b %d %H:%M:%S").
TIMESTAMP = re.compile(r"^\w{3} \d\d \d\d:\d\d:\d\d ")


def use_calc(port):
    conn = rpyc.connect("127.0.0.1", port)
    print("connection class:", type(conn).__module__ + "." + type(conn).__name__)
    print("add:", conn.root.add(2, 3))
    print("apply with callback:", conn.root.apply(lambda x: x * 10, [1, 2, 3]))

    slow_square = rpyc.async_(conn.root.slow_square)
    result = slow_square(7, 0.2)
    print("async ready at once:", result.ready)
    result.wait()
    print("async value:", result.value)

    timed_square = rpyc.timed(conn.root.slow_square, 0.05)
    try:
        timed_square(3, 0.5).value
    except rpyc.AsyncResultTimeout:
        print("timed: expired")

    try:
        conn.root.divide(1, 0)
    except ZeroDivisionError as exc:
        print("remote error:", type(exc).__name__)

    try:
        conn.root.sqrt(-4)
    except CalcError as exc:
        print("registered remote error:", type(exc).__name__, exc.args)
        print("remote major version:", exc._remote_version.split(".")[0])

    # The server allows pickling; this side keeps the default (off).
    copy = pickle.loads(pickle.dumps(conn.root.primes()))
    print("pickled copy:", type(copy).__name__, copy)
    conn.close()


def use_registry(registry_port, calc_port):
    registrar = UDPRegistryClient(port=registry_port)
    for _ in range(100):  # the server registers when it starts: wait for it
        try:
            found = rpyc.discover("CALC", registrar=registrar)
            break
        except DiscoveryError:
            time.sleep(0.1)
    print("discovered:", [port == calc_port for _, port in found])
    conn = rpyc.connect_by_service("calc", registrar=registrar)
    print("connect_by_service:", conn.root.add(20, 22))
    conn.close()


def use_classic(host, port):
    conn = rpyc.classic.connect(host, port)
    print("classic eval:", conn.eval("6 * 7"))
    print("classic runs elsewhere:", conn.modules.os.getpid() != os.getpid())
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "local.txt")
        remote = os.path.join(folder, "remote.txt")
        with open(local, "w") as file:
            file.write("uploaded by the client")
        rpyc.classic.upload(conn, local, remote)
        print("classic upload:", conn.modules.builtins.open(remote).read())
    conn.close()


def use_lib():
    print("compat:", BYTES_LITERAL("ok"), is_py_3k, maxint == sys.maxsize)
    print("safe_import:", safe_import("zlib").__name__, bool(safe_import("no_such_module")))
    cache = WeakValueDict()
    value = CalcError("kept")
    cache["error"] = value
    print("colls:", len(cache), cache["error"] is value)
    try:
        NamedPipeStream.create_client("calc")
    except ImportError:
        print("named pipes: not on this platform")


def main():
    calc_port, classic_host, classic_port, registry_port = sys.argv[1:5]
    with tempfile.TemporaryDirectory() as folder:
        logfile = os.path.join(folder, "client.log")
        logger = setup_logger(quiet=True, logfile=logfile)
        use_lib()
        use_calc(int(calc_port))
        use_registry(int(registry_port), int(calc_port))
        use_classic(classic_host, int(classic_port))
        logger.info("not logged when quiet")
        logger.error("client finished")
        with open(logfile) as file:
            for line in file:
                print("log:", logger.name, TIMESTAMP.sub("", line.rstrip()))
    print("client: done")


if __name__ == "__main__":
    main()
