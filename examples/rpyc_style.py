"""RPyC-style code running on grpyc: only ``import grpyc as rpyc`` differs.

``python examples/rpyc_style.py`` starts a server process (this file with the
``serve`` argument: a chat service with callbacks, and a classic server),
then runs a client session against it: plain calls, a callback,
``rpyc.async_``, ``rpyc.timed``, a remote exception and a classic-mode file
upload. It prints each step and exits 0 when every step gave the expected
answer. Replace the import with ``import rpyc`` and it runs on stock RPyC.

The server sleeps with ``time.sleep``, as RPyC code does. Without gevent's
monkey patching that blocks the whole grpyc server process while it sleeps,
so the server is a process of its own, not a greenlet beside the client.
"""

import os
import subprocess
import sys
import tempfile
import time

import grpyc as rpyc


class ChatService(rpyc.Service):
    """A chat room: clients join with a callback that receives every message."""

    def __init__(self):
        self.listeners = []

    def exposed_join(self, name, on_message):
        self.listeners.append(on_message)
        return f"welcome, {name}"

    def exposed_say(self, text):
        for listener in self.listeners:
            listener(text.upper())
        return len(self.listeners)

    def exposed_slow_echo(self, text, delay):
        time.sleep(delay)
        return text


def serve():
    """The server process: print both ports, then serve until terminated."""
    chat_server = rpyc.ThreadedServer(ChatService, hostname="127.0.0.1", port=0)
    classic_server = rpyc.ThreadedServer(rpyc.ClassicService, hostname="127.0.0.1", port=0)
    rpyc.spawn(chat_server.start)
    print(chat_server.port, classic_server.port, flush=True)
    classic_server.start()


def chat_session(port):
    received = []
    conn = rpyc.connect("127.0.0.1", port)
    print("join:", conn.root.join("ada", received.append))
    reached = conn.root.say("hello")
    print(f"say: reached {reached} listener(s); the callback got {received}")

    slow_echo = rpyc.async_(conn.root.slow_echo)
    result = slow_echo("later", 0.1)
    print("async_: ready at once?", result.ready)
    print("async_: value", repr(result.value))

    timed_echo = rpyc.timed(conn.root.slow_echo, 0.05)
    try:
        echoed = timed_echo("too slow", 0.5).value
        timed_out = echoed is None
    except rpyc.AsyncResultTimeout:
        timed_out = True
    print("timed: expired?", timed_out)

    try:
        conn.root.say(None)
        remote_error = None
    except AttributeError as exc:
        remote_error = type(exc).__name__
    print("remote exception:", remote_error)
    conn.close()
    return received == ["HELLO"] and result.value == "later" and timed_out and remote_error


def classic_session(port):
    conn = rpyc.classic.connect("127.0.0.1", port)
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "notes.txt")
        remote = os.path.join(folder, "uploaded.txt")
        with open(local, "w") as file:
            file.write("sent with rpyc.classic.upload\n")
        rpyc.classic.upload(conn, local, remote)
        content = conn.modules.builtins.open(remote).read()
    print("classic upload:", repr(content))
    print("classic eval:", conn.eval("2 ** 10"))
    print("classic server pid differs:", conn.modules.os.getpid() != os.getpid())
    conn.close()
    return content == "sent with rpyc.classic.upload\n"


def main():
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        chat_port, classic_port = (int(port) for port in server.stdout.readline().split())
        ok = chat_session(chat_port) and classic_session(classic_port)
    finally:
        server.terminate()
        server.wait()
        server.stdout.close()
    print("all steps as expected" if ok else "SOMETHING WENT WRONG")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        sys.exit(main())
