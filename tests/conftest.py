"""Shared fixtures: fail on unhandled greenlet errors, connected pairs, servers."""

import gevent
import pytest


@pytest.fixture(autouse=True)
def no_unhandled_greenlet_errors():
    """Fail any test in which a greenlet error reached the hub unhandled."""
    hub = gevent.get_hub()
    seen = []
    original = hub.handle_error

    def record(context, type_, value, tb):
        if type_ is not None and not issubclass(type_, gevent.GreenletExit):
            seen.append((context, type_, value))
        return original(context, type_, value, tb)

    hub.handle_error = record
    try:
        yield seen
    finally:
        hub.handle_error = original
    assert not seen, f"unhandled greenlet errors: {seen!r}"
