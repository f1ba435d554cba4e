"""Asking a running job to stop: signals and the processing timeout set the same flag.

A run's control may have a parent (the scheduler daemon's), so that SIGTERM to the daemon
also stops the run in progress, while a run's own timeout stops only that run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

EXIT_TIMEOUT = 124  # what timeout(1) returns


class RunControl:
    """A stop flag with the reason it was raised; chunks check it before they start."""

    def __init__(self, parent: RunControl | None = None) -> None:
        self._stop = threading.Event()
        self._parent = parent
        self._reason: str | None = None
        self._exit_code = 1

    def request_stop(self, reason: str, exit_code: int = 1) -> None:
        """First reason wins: a timeout followed by SIGTERM still reports the timeout."""
        if not self._stop.is_set():
            self._reason = reason
            self._exit_code = exit_code
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or (self._parent is not None and self._parent.stopping)

    @property
    def reason(self) -> str | None:
        if self._stop.is_set() or self._parent is None:
            return self._reason
        return self._parent.reason

    @property
    def exit_code(self) -> int:
        if self._stop.is_set() or self._parent is None:
            return self._exit_code
        return self._parent.exit_code

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early (True) when a stop is requested here or above."""
        step = 0.2 if self._parent is not None else seconds
        remaining = seconds
        while remaining > 0:
            if self._stop.wait(min(step, remaining)) or self.stopping:
                return True
            remaining -= step
        return self.stopping

    @contextmanager
    def deadline(self, timeout: timedelta) -> Iterator[None]:
        """Request a stop with status `timeout` once `timeout` has passed inside the block."""
        timer = threading.Timer(timeout.total_seconds(), self.request_stop, args=("timeout", EXIT_TIMEOUT))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
