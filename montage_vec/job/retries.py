"""A worker's whole job for one chunk: process it, retrying transient errors on a fresh session.

A transient error (lost connection, serialization failure, a database restarting) discards
the thread's session and retries the whole chunk after a backoff (see `backoff`); the wait
ends early when the run is asked to stop. Users the chunk could not process go on the retry
list from the same worker, in the same retried unit, so a restart cannot drop them.
"""

from __future__ import annotations

import polars as pl
from loguru import logger

from montage_vec.engine.schema import REJECTED_SCHEMA
from montage_vec.errors import MontageVecError, RunFailed, StoreError
from montage_vec.job.backoff import RetryPolicy
from montage_vec.job.chunks import ChunkContext, ChunkResult, process_chunk
from montage_vec.job.control import RunControl
from montage_vec.job.plan import utc_now
from montage_vec.job.sessions import ThreadSessions
from montage_vec.stores.interfaces import ChunkCheckins


def process_with_retries(
    sessions: ThreadSessions,
    source: ChunkCheckins | None,
    users: pl.Series,
    context: ChunkContext,
    policy: RetryPolicy,
    control: RunControl,
) -> ChunkResult:
    """The chunk's result, its failed users recorded; RunFailed once the retry budget is spent."""
    waits = policy.waits()
    attempt = 0
    while True:
        attempt += 1
        try:
            session = sessions.current()
            result = process_chunk(session, source or session, users, context)
            if result.failures and not context.dry_run:
                failures = pl.DataFrame(result.failures, schema=REJECTED_SCHEMA, orient="row")
                session.record_failures(failures, context.job_id, utc_now(), context.lease)
            return result
        except MontageVecError as exc:
            if not exc.transient:
                raise
            sessions.discard()
            backoff = next(waits, None)
            if not isinstance(exc, StoreError) and attempt > policy.attempts:
                backoff = None  # DB_RECONNECT_TIMEOUT is the database's budget; a service gets the attempts
            if backoff is None or control.stopping:
                raise RunFailed(f"a chunk of {len(users)} users failed {attempt} time(s): {exc}") from None
            logger.bind(job_id=context.job_id).warning(
                "transient error; retrying the chunk on a new connection",
                attempt=attempt,
                backoff_seconds=backoff,
                error=str(exc),
            )
            control.wait(backoff)
