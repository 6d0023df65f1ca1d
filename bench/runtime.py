"""How a client runs concurrent callers: greenlets or OS threads.

The scenarios are written once against this small interface; the greenlet
runtime serves grpyc, the floor and monkey-patched stock rpyc, the thread
runtime serves stock rpyc as its users run it (threads, no gevent).
"""

import threading
import time


class ThreadRuntime:
    """OS threads (stock rpyc without gevent)."""

    name = "threads"

    def __init__(self):
        self.Event = threading.Event

    def spawn(self, func, *args):
        thread = threading.Thread(target=func, args=args, daemon=True)
        thread.start()
        return thread

    def join(self, workers, timeout):
        """Wait for every worker; returns how many are still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return sum(worker.is_alive() for worker in workers)

    def sleep(self, seconds):
        time.sleep(seconds)

    def abandon(self, workers):
        """Threads cannot be killed: they are daemons and die with the process."""


class GeventRuntime:
    """Greenlets (grpyc, the floor, stock rpyc under patch_all)."""

    name = "greenlets"

    def __init__(self):
        import gevent
        import gevent.event

        self._gevent = gevent
        self.Event = gevent.event.Event
        # This thread runs gevent from now on: grpyc picks its cooperative
        # runtime for every connection made here, the first one included
        # (without a hub yet, grpyc would pick the plain-threads runtime).
        gevent.get_hub()

    def spawn(self, func, *args):
        return self._gevent.spawn(func, *args)

    def join(self, workers, timeout):
        self._gevent.joinall(workers, timeout=timeout)
        return sum(not worker.ready() for worker in workers)

    def sleep(self, seconds):
        self._gevent.sleep(seconds)

    def abandon(self, workers):
        self._gevent.killall([w for w in workers if not w.ready()], block=False)
