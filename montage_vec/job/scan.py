"""Where a run's chunks read their check-ins; for a full run, one sequential scan spooled by chunk.

Reading a chunk's users with an indexed query touches the heap pages of every one of its
check-ins, and in real data a user's check-ins lie scattered among everyone else's: at a
million users each chunk reads tens of thousands of random pages (DuckDB: the whole table).
A full run reads every check-in anyway, so with MONTAGE_FULL_RUN_READ=scan it reads the
source once, in order, before the chunks start, and spools the rows by chunk under
MONTAGE_SCRATCH_DIR (job/spool.py); each chunk's extraction then reads its own rows from
there. Incremental, named-user and realtime runs read few users: they keep their queries.

The scan runs on a session of its own, in one read-only transaction: it sees one snapshot
from its first row to its last, and takes only the lock any SELECT takes, which blocks no
writer. Its rows are at least as new as the plan (it starts after planning), as each chunk's
own query would be. A transient error starts the scan over on a new connection, within the
run's retry budget; a stop request ends it early, and then no chunk starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress

import polars as pl
import pyarrow as pa
from loguru import logger

from montage_vec.config import Settings
from montage_vec.errors import RunFailed, StoreError
from montage_vec.job.backoff import RetryPolicy
from montage_vec.job.control import RunControl
from montage_vec.job.memory import spool_buffer_budget
from montage_vec.job.plan import chunk_size, chunked
from montage_vec.job.sessions import close_quietly
from montage_vec.job.spool import CheckinSpool, scratch_directory
from montage_vec.job.summary import RunSummary
from montage_vec.stores import Store
from montage_vec.stores.interfaces import CheckinSource, ChunkCheckins

# Rows per frame of the scan: enough that routing costs little per row (a hash lookup and a
# sort per frame), few enough that a frame and its routed copies stay a few MB (job/memory.py).
SCAN_BATCH_ROWS = 16_384


@contextmanager
def chunk_checkins(
    store: Store,
    settings: Settings,
    users: pl.Series,
    source: CheckinSource | None,
    summary: RunSummary,
    control: RunControl,
    policy: RetryPolicy,
) -> Iterator[ChunkCheckins | None]:
    """What the chunks of `users` read from: `source` when given (the check-in service), a spool
    for a full run that reads by scan (deleted when the block ends), else None: each chunk's session.

    The scan's seconds are the summary's stage "scan".
    """
    if source is not None or summary.mode != "full" or settings.montage_full_run_read != "scan":
        yield source
        return
    chunks = list(chunked(users, chunk_size(len(users), settings)))
    buffer_bytes = spool_buffer_budget(settings.montage_memory_budget)
    started = time.perf_counter()
    with scratch_directory(settings.montage_scratch_dir) as directory:
        spool = _scan(lambda: CheckinSpool(directory, chunks, buffer_bytes), store, control, policy)
        _release_freed_memory()
        summary.totals.seconds["scan"] = time.perf_counter() - started
        logger.info(
            "check-ins read in one scan and spooled" if spool.complete else "scan stopped before its end",
            checkins=spool.rows,
            spooled_bytes=spool.bytes_written,
            flushes=spool.flushes,
            scan_seconds=round(summary.totals.seconds["scan"], 3),
            folder=str(directory),
        )
        yield spool


def _scan(
    new_spool: Callable[[], CheckinSpool], store: Store, control: RunControl, policy: RetryPolicy
) -> CheckinSpool:
    """A spool of the whole source, read again from the start after a transient error."""
    waits = policy.waits()
    attempt = 0
    while True:
        attempt += 1
        spool = new_spool()
        try:
            _read_into(spool, store, control)
            return spool
        except StoreError as exc:
            spool.discard()
            if not exc.transient:
                raise
            backoff = next(waits, None)
            if backoff is None or control.stopping:
                raise RunFailed(f"reading the check-ins failed {attempt} time(s): {exc}") from None
            logger.warning(
                "transient error; reading the check-ins again on a new connection",
                attempt=attempt,
                backoff_seconds=backoff,
                error=str(exc),
            )
            control.wait(backoff)


def _read_into(spool: CheckinSpool, store: Store, control: RunControl) -> None:
    """Every check-in of the source into `spool`, on a session of its own; stops early on a stop request."""
    session = store.session()
    try:
        with closing(session.stream_checkins(SCAN_BATCH_ROWS)) as frames:
            for frame in frames:
                if control.stopping:
                    return
                spool.add(frame)
        spool.finish()
    finally:
        close_quietly(session)


def _release_freed_memory() -> None:
    """Hand what the scan freed back to the system before the chunks start.

    The driver's batches come from glibc's malloc in this thread's arena, which the chunks'
    worker threads never allocate from, and Arrow's pool keeps what it freed: without this, a
    100,000-user run peaked 40 MiB higher (537 MiB against 495).
    """
    pa.default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    if libc is not None:
        with suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
            ctypes.CDLL(libc).malloc_trim(0)
