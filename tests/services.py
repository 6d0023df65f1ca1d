"""Services used by the connection tests (grpyc side)."""

import gevent

from grpyc.service import Service


class Thing:
    """A plain object handed out by reference."""

    def __init__(self, value=0):
        self.value = value
        self._secret = "hidden"

    def exposed_get(self):
        return self.value

    def bump(self, by=1):
        self.value += by
        return self.value

    def __len__(self):
        return self.value

    def __enter__(self):
        self.value += 100
        return self

    def __exit__(self, *exc_info):
        self.value -= 100
        return False


class TestService(Service):
    """Echo, arithmetic, sleeps, callbacks, references, failures."""

    def on_connect(self, conn):
        self.conn = conn

    def exposed_echo(self, value):
        return value

    def exposed_add(self, a, b=0, *, c=0):
        return a + b + c

    def exposed_sleep(self, seconds):
        gevent.sleep(seconds)
        return seconds

    def exposed_call(self, func, *args, **kwargs):
        return func(*args, **kwargs)

    def exposed_bounce(self, callback, depth):
        """Call back the client, which calls bounce again, `depth` times."""
        if depth <= 0:
            return 0
        return callback(depth - 1) + 1

    def exposed_make_list(self, *items):
        return list(items)

    def exposed_make_dict(self, **items):
        return dict(items)

    def exposed_make_thing(self, value=0):
        return Thing(value)

    def exposed_length(self, obj):
        return len(obj)

    def exposed_fail(self, message="boom"):
        raise ValueError(message)

    def exposed_raise_key(self):
        return {}["missing"]

    def exposed_getattr(self, obj, name):
        return getattr(obj, name)


def make_test_service():
    return TestService()


__all__ = ["TestService", "Thing", "make_test_service"]
