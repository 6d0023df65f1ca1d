"""A client session: ``python client.py CALC_PORT CLASSIC_PORT``."""

import os
import sys
import tempfile

import rpyc


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
    conn.close()


def use_classic(port):
    conn = rpyc.classic.connect("127.0.0.1", port)
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


def main():
    calc_port, classic_port = (int(arg) for arg in sys.argv[1:3])
    use_calc(calc_port)
    use_classic(classic_port)
    print("client: done")


if __name__ == "__main__":
    main()
