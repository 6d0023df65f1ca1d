"""grpyc._signals: the handlers a server installs for SIGTERM and SIGINT.

Each probe runs in a subprocess of its own: signal masks, handlers and the
wakeup fd are process-wide state."""

import subprocess
import sys
import textwrap

from tests.test_cli import ROOT

# The kernel gives a signal to any thread that does not block it. Here only
# gevent's threadpool thread (started before the main thread blocks SIGTERM)
# can take it; Python still runs the handler in the main thread.
_SIGNAL_TO_ANOTHER_THREAD = textwrap.dedent(
    """
    import os, signal, threading, time
    import gevent
    from gevent.event import Event
    from grpyc._signals import handling_signals

    gevent.get_hub().threadpool.spawn(lambda: None).get()  # a worker thread that stays
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    ran, done = [], Event()

    def handler(signum, frame):
        ran.append(time.monotonic() - began)
        done.set()

    with handling_signals(handler):
        began = time.monotonic()
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
        done.wait(5)
    print(round(ran[0], 2) if ran else None)
    print(signal.set_wakeup_fd(-1), signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    """
)


def _probe(code):
    """The lines `code` prints, run in a Python process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_signal_another_thread_takes_runs_the_handler_at_once():
    """Without a wake-up the hub slept on until its own timer (5 s here)."""
    ran_at, restored = _probe(_SIGNAL_TO_ANOTHER_THREAD)
    assert ran_at != "None" and float(ran_at) < 2.0
    assert restored == "-1 True"  # no wakeup fd left behind; the default handler is back


_NO_HUB = textwrap.dedent(
    """
    import signal
    from gevent._hub_local import get_hub_if_exists
    from grpyc._signals import handling_signals

    with handling_signals(lambda signum, frame: None):
        pass
    print(get_hub_if_exists() is None, signal.set_wakeup_fd(-1))
    """
)


def test_a_thread_without_a_hub_gets_none_from_the_handlers():
    """A plain-threads program stays one (`_streambase.in_gevent` asks for a hub)."""
    assert _probe(_NO_HUB) == ["True -1"]
