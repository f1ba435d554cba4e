"""Asking a running job to stop: signals and the processing timeout set the same flag."""

from __future__ import annotations

import threading


class RunControl:
    """A stop flag with the reason it was raised; chunks check it before they start."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.reason: str | None = None
        self.exit_code: int = 1

    def request_stop(self, reason: str, exit_code: int = 1) -> None:
        """First reason wins: a timeout followed by SIGTERM still reports the timeout."""
        if not self._stop.is_set():
            self.reason = reason
            self.exit_code = exit_code
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early (True) when a stop is requested."""
        return self._stop.wait(seconds)
