"""What grpyc's per-call layers cost a bound call, on each side: ``python -m bench.collapse``.

    python -m bench.collapse [--rounds 4] [--count 20000] [--modes layered,collapsed]
                             [--client-modes layered,hub,direct]
                             [--valgrind server|client]

An experiment, not a mode of grpyc: the server runs either as it is, or
with `Connection._dispatch` replaced by one function that answers a CALL
request at once (decode, unbox, call, box, encode, write to the channel),
skipping what every request passes through otherwise: the request's
admission and byte budget, the hook that hands reading over when a
handler blocks, the attribute policy's ``__call__`` check, the
``serialize_requests`` turn, the exception answer and the writer (its
queue, corking and send budget). Everything else (reading, the baton,
framing, the codecs, the client) is unchanged. Each round runs the modes
in turn; client and server share CPU 0, as in the suite. Each line gives
the time per call and each side's user CPU per call. Two modes in between
tell the layers apart: ``serve`` keeps the request's own code
(`_serve_request`: the handler table, the policy check, the exception
answer, the writer) and skips only `_on_request`, `submit`, the admission
and the inline hook; ``writer`` also skips `_serve_request` but answers
through the writer. ``--valgrind server|client`` counts that side's
instructions and L1 misses per call instead (`bench.footprint`'s caches,
two runs). ``--client-modes`` picks the clients: ``layered`` (as it is,
the caller's lane included: `_callers`); ``hub`` (the hub's send-and-wait
replaced by the direct loop's, the proxy call and request encoding above
it kept); ``direct`` (a loop that encodes, writes to the channel, waits on
an io watcher and decodes, with no baton, reply slot, writer, timeout,
nested requests or other callers: what the caller's path could win at
most).

What it shows: how much of a round trip those layers are on each side,
i.e. what a fused per-request path or a leaner caller's path could win at most
(docs/benchmarks.md).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import footprint

ROOT = Path(__file__).resolve().parent.parent

_SERVER = """
import os, sys
import grpyc as rpyc
from grpyc import consts
from grpyc.messages import decode_payload, encode_reply
from grpyc.protocol import Connection
from grpyc.server import OneShotServer

MODE = sys.argv[2]
MSG_REQUEST, MSG_REPLY, HANDLE_CALL = consts.MSG_REQUEST, consts.MSG_REPLY, consts.HANDLE_CALL


def answer_call(self, seq, boxed_args):
    # A CALL's answer, by as few layers as MODE keeps.
    if MODE == "serve":  # the request's own code, without its admission and inline hook
        self._serve_request(seq, HANDLE_CALL, boxed_args, 0)
        return
    obj, args, _kwargs = self._boxer.unbox(boxed_args)
    answer = encode_reply(seq, self._boxer.box(obj(*args)))
    if MODE == "writer":  # ... and without the handler's policy check and exception answer
        self._hub.send(answer)
    else:  # collapsed: ... and without the writer
        self._channel.send(answer)


def collapsed(self, data):
    limits = (self._max_depth, self._max_decoded_size, self._pause)
    msg, seq, body, size = decode_payload(data, *limits)
    if msg == MSG_REQUEST and body[0] == HANDLE_CALL:
        answer_call(self, seq, body[1])
    elif msg == MSG_REQUEST:
        self._on_request(seq, body, size, 0)
    elif msg == MSG_REPLY:
        self._on_reply(seq, body)
    else:
        self._on_exception(seq, body)


if MODE != "layered":
    Connection._dispatch = collapsed


class S(rpyc.Service):
    def exposed_echo(self, value):
        return value

    def exposed_user_cpu(self):
        return os.times().user

    def exposed_mode(self):
        return MODE if Connection._dispatch.__name__ == "collapsed" else "layered"


server = OneShotServer(S, hostname="127.0.0.1", port=0)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.port))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.start()
"""

_CLIENT = """
import itertools, json, os, sys, time
import gevent
import grpyc as rpyc
from grpyc import consts
from grpyc.messages import decode_payload, encode_request

hub = gevent.get_hub()
port_file, count, client_mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for _ in range(3000):
    try:
        conn = rpyc.connect("127.0.0.1", int(open(port_file).read()))
        break
    except (OSError, ValueError):
        time.sleep(0.02)
echo = conn.root.echo
assert echo(42) == 42
for _ in range(2000):
    echo(42)


channel, boxer = conn._channel, conn._boxer
watcher = hub.loop.io(channel.fileno(), 1)  # started only by the loops below


def send_and_read(seq, payload):
    # The caller's path cut to the bone: write to the channel, wait on an io
    # watcher, read, decode, unbox. No baton, reply slot, writer, timeout,
    # nested requests or other callers: frames other than our reply are dropped.
    channel.send(payload)
    while True:
        frame = channel.next_buffered()
        if frame is None:
            hub.wait(watcher)
            channel.fill()
            continue
        _msg, got, body, _size = decode_payload(frame, 64, None, None)
        if got == seq:
            return boxer.unbox(body)


def direct_loop():
    # Bound calls that also skip the proxy: the request is boxed and encoded here.
    seqs = itertools.count(1_000_000)

    def call():
        seq = next(seqs)
        boxed = boxer.box((echo, (42,), ()))
        return send_and_read(seq, encode_request(seq, consts.HANDLE_CALL, boxed))

    return call


def hub_call_direct():
    # The hub's send-and-wait replaced by the direct loop's; the proxy call, the
    # request's boxing and encoding above it stay as they are.
    def call(self, seq, payload, timeout):
        return (False, send_and_read(seq, payload), ())

    return call


server_before = conn.root.user_cpu()
baton = conn._hub._baton
hub_class = type(conn._hub)
saved = hub_class.call
if client_mode == "direct":
    baton.holder = gevent.getcurrent()  # the connection's own reading stays off meanwhile
    call = direct_loop()
elif client_mode == "hub":
    baton.holder = gevent.getcurrent()
    hub_class.call = hub_call_direct()
    call = lambda: echo(42)
else:
    call = lambda: echo(42)
assert call() == 42
client_before, began = os.times().user, time.perf_counter()
for _ in range(count):
    call()
elapsed, client_after = time.perf_counter() - began, os.times().user
hub_class.call = saved
if client_mode in ("direct", "hub"):
    baton.holder = None
server_after = conn.root.user_cpu()
mode = conn.root.mode()
conn.close()
print(json.dumps({
    "server": mode,
    "client": client_mode,
    "µs per call": round(elapsed / count * 1e6, 1),
    "client user µs": round((client_after - client_before) / count * 1e6, 1),
    "server user µs": round((server_after - server_before) / count * 1e6, 1),
}))
"""


MODES = ("layered", "serve", "writer", "collapsed")
CLIENT_MODES = ("layered", "hub", "direct")


def run_pair(mode, count, cpu=0, valgrind=None, client_mode="layered"):
    """One server in `mode` (of `MODES`) and one client in `client_mode` (of
    `CLIENT_MODES`) on `cpu`: their figures, with the valgrind report of the side
    `valgrind` names ("server" or "client", if any) under ``"valgrind"``."""
    with tempfile.TemporaryDirectory() as scratch:
        port_file = str(Path(scratch, "port"))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        pin = ["taskset", "-c", str(cpu)]
        tool = footprint.cachegrind("/dev/null")
        server_tool = tool if valgrind == "server" else []
        client_tool = tool if valgrind == "client" else []
        run = {"env": env, "text": True, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        with subprocess.Popen(
            [*pin, *server_tool, sys.executable, "-c", _SERVER, port_file, mode], **run
        ) as server:
            try:
                client = subprocess.run(
                    [*pin, *client_tool, sys.executable, "-c", _CLIENT, port_file, str(count),
                     client_mode],
                    timeout=600, check=False, **run,
                )  # fmt: skip
                if client.returncode != 0:
                    raise RuntimeError(f"client failed:\n{client.stderr[-2000:]}")
                report = server.communicate(timeout=120)[1]
            finally:
                if server.poll() is None:
                    server.kill()
    figures = json.loads(client.stdout.strip().splitlines()[-1])
    if valgrind:
        figures["valgrind"] = footprint._parse(report if valgrind == "server" else client.stderr)
    return figures


def valgrind_per_call(mode, side="server", client_mode="layered", few=200, more=1200):
    """One side's instructions and L1 misses per bound call: the difference
    between a run of `more` timed calls and one of `few`."""
    low = run_pair(mode, few, valgrind=side, client_mode=client_mode)["valgrind"]
    high = run_pair(mode, more, valgrind=side, client_mode=client_mode)["valgrind"]
    return {name: (high[name] - low[name]) // (more - few) for name in low}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--modes", default="layered,collapsed", help=f"of {','.join(MODES)}")
    parser.add_argument("--client-modes", default="layered", help=f"of {','.join(CLIENT_MODES)}")
    parser.add_argument(
        "--valgrind",
        choices=["server", "client"],
        default=None,
        help="count this side, do not time",
    )
    args = parser.parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    client_modes = [mode.strip() for mode in args.client_modes.split(",") if mode.strip()]
    unknown = [m for m in modes if m not in MODES] + [
        m for m in client_modes if m not in CLIENT_MODES
    ]
    if unknown:
        parser.error(f"unknown modes {unknown}")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    if args.valgrind:
        if shutil.which("valgrind") is None:
            parser.exit(2, "bench.collapse: valgrind is not installed\n")
        print(f"bench.collapse --valgrind {args.valgrind}, {started}: per bound call")
        for mode in modes:
            for client_mode in client_modes:
                counts = valgrind_per_call(mode, args.valgrind, client_mode)
                figures = "  ".join(f"{value:,} {name}" for name, value in counts.items())
                print(f"{mode:9}  {client_mode:7}  {figures}", flush=True)
        return
    print(f"bench.collapse, {started}: {args.rounds} rounds of {args.count:,} bound calls")
    for round_number in range(1, args.rounds + 1):
        for mode in modes:
            for client_mode in client_modes:
                figures = run_pair(mode, args.count, client_mode=client_mode)
                line = json.dumps(figures, ensure_ascii=False)
                print(f"round {round_number}  {mode:9}  {client_mode:7}  {line}", flush=True)


if __name__ == "__main__":
    main()
