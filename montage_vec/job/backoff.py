"""How long work that failed on a transient database error waits before it tries again.

Waits double from 0.5 s up to MAX_BACKOFF_SECONDS, and retries go on while either budget
lasts: CHUNK_RETRY_ATTEMPTS retries, or DB_RECONNECT_TIMEOUT since the first failure. The
time budget is what rides out a database restart: one takes seconds (6 s with `pg_ctl -m
fast`, 11 s with `-m immediate` on a small server), longer than a few quick retries.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    timeout: timedelta

    def waits(self) -> Iterator[float]:
        """The wait before each retry, from the first failure on; it ends when both budgets are spent."""
        first_failure = time.monotonic()
        retry = 0
        while True:
            retry += 1
            out_of_time = time.monotonic() - first_failure >= self.timeout.total_seconds()
            if retry > self.attempts and out_of_time:
                return
            yield min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (retry - 1))
