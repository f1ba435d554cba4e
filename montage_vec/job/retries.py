"""A worker's whole job for one chunk: process it, retrying transient errors on a fresh session.

A transient error (lost connection, serialization failure) discards the thread's session
and retries the whole chunk after an exponential backoff, up to CHUNK_RETRY_ATTEMPTS times;
the backoff wait ends early when the run is asked to stop. Users the chunk could not
process go on the retry list, from the same worker.
"""

from __future__ import annotations

import polars as pl
from loguru import logger

from montage_vec.engine.schema import REJECTED_SCHEMA
from montage_vec.errors import MontageVecError, RunFailed
from montage_vec.job.chunks import ChunkContext, ChunkResult, process_chunk
from montage_vec.job.control import RunControl
from montage_vec.job.plan import utc_now
from montage_vec.job.sessions import ThreadSessions
from montage_vec.stores.interfaces import CheckinSource

MAX_BACKOFF_SECONDS = 30.0


def process_with_retries(
    sessions: ThreadSessions,
    source: CheckinSource | None,
    users: pl.Series,
    context: ChunkContext,
    retries: int,
    control: RunControl,
) -> ChunkResult:
    """The chunk's result, its failed users recorded; RunFailed once the retries are used up."""
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            session = sessions.current()
            result = process_chunk(session, source or session, users, context)
        except MontageVecError as exc:
            if not exc.transient:
                raise
            sessions.discard()
            if attempt == attempts or control.stopping:
                raise RunFailed(f"a chunk of {len(users)} users failed {attempt} time(s): {exc}") from None
            backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (attempt - 1))
            logger.bind(job_id=context.job_id).warning(
                "transient error; retrying the chunk on a new connection",
                attempt=attempt,
                backoff_seconds=backoff,
                error=str(exc),
            )
            control.wait(backoff)
            continue
        if result.failures and not context.dry_run:
            failures = pl.DataFrame(result.failures, schema=REJECTED_SCHEMA, orient="row")
            session.record_failures(failures, context.job_id, utc_now())
        return result
    raise AssertionError("unreachable: the last attempt returns or raises")
