"""RPyC's serving calls (`serve`, `poll`, `poll_all`, `serve_all`, ...), a `Connection` mixin.

They keep RPyC's meaning and return values on both runtimes: on plain
threads the caller reads and handles messages itself, as in RPyC; under
gevent the connection's reader handles them and these wait for it (a
message handled while nobody served is reported to the next call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpyc._threadhub import ThreadHub
from grpyc.lib import Timeout

__all__ = ["Serving"]


class Serving:
    """RPyC's serving API over the connection's runtime (``self._hub``)."""

    _hub: Any

    def close(self) -> None:
        raise NotImplementedError

    def serve(
        self,
        timeout: float | None = 1,
        wait_for_lock: bool = True,
        waiting: Callable[[], bool] = lambda: True,
    ) -> bool:
        """Serve one message arriving within `timeout`. RPyC-compatible.

        Returns:
            True if a request or reply was handled (under gevent: by the
            reader, since the last ``serve``), False otherwise.

        Raises:
            EOFError: the connection is closed.
        """
        if not waiting():
            return False
        if isinstance(self._hub, ThreadHub):
            if not wait_for_lock and self._hub.baton_taken():
                return False
            return self._hub.wait_frame(timeout, waiting)
        return bool(self._hub.wait_frame(timeout))

    def poll(self, timeout: float | None = 0) -> bool:
        """Serve one message if one arrives within `timeout`. RPyC-compatible."""
        return self.serve(timeout, False)

    def serve_all(self) -> None:
        """Serve until the connection closes, then close it. RPyC-compatible."""
        try:
            self._hub.serve_until_closed()
        finally:
            self.close()

    def serve_threaded(self, thread_count: int = 10) -> None:
        """Serve from `thread_count` threads until the connection closes. RPyC-compatible.

        Under gevent requests already run concurrently: this is `serve_all`.
        """
        if isinstance(self._hub, ThreadHub):
            self._hub.serve_in_threads(thread_count)
        self.serve_all()

    def poll_all(self, timeout: float | None = 0) -> bool:
        """Serve every message arriving within `timeout`; True if any. RPyC-compatible."""
        deadline = Timeout(timeout)
        served = False
        try:
            while True:
                if self.poll(deadline.timeleft()):
                    served = True
                if deadline.expired():
                    break
        except EOFError:
            pass
        return served
