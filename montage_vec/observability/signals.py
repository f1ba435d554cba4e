"""Turning SIGTERM / SIGINT into a graceful stop of the current run.

Kubernetes sends SIGTERM and waits terminationGracePeriodSeconds (60 s in the manifests) before
SIGKILL: the job stops taking new chunks,
lets the chunks in flight commit or roll back, records the run as interrupted and exits
128 + the signal number. A second signal ends the process at once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from loguru import logger

from montage_vec.job.control import RunControl

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(control: RunControl) -> Iterator[None]:
    """Route SIGTERM/SIGINT to `control` inside the block (main thread only)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        exit_code = 128 + signum
        if control.stopping:
            logger.warning("second stop signal; exiting now", signal=name)
            os._exit(exit_code)
        logger.warning("stop requested; finishing chunks in flight", signal=name)
        control.request_stop("interrupted", exit_code)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
