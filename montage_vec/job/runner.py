"""run_job: one batch run from lock to watermark.

The run takes the shard's lock, plans its users from the watermark, processes chunks on a
bounded pool of worker threads (each with its own store session), retries chunks that hit
transient errors on a fresh session, and moves the watermark only when every chunk
committed. Anything else leaves the watermark where it was, so the next run redoes the work.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
from loguru import logger

from montage_vec.config import Settings
from montage_vec.config.secrets import redact
from montage_vec.errors import MontageVecError, RunFailed, RunInterrupted, RunLockedError, TransientStoreError
from montage_vec.job.chunks import ChunkContext, ChunkResult, process_chunk
from montage_vec.job.control import RunControl
from montage_vec.job.plan import RunOptions, Shard, candidate_query, chunked, find_candidates, new_job_id, utc_now
from montage_vec.job.summary import RunSummary
from montage_vec.stores.base import RunRecord, Store, StoreSession


@dataclass
class _Sessions:
    """One store session per worker thread, replaced after a transient failure."""

    store: Store
    local: threading.local = field(default_factory=threading.local)
    opened: list[StoreSession] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> StoreSession:
        session: StoreSession | None = getattr(self.local, "session", None)
        if session is None:
            session = self.store.session()
            self.local.session = session
            with self.lock:
                self.opened.append(session)
        return session

    def discard(self) -> None:
        session: StoreSession | None = getattr(self.local, "session", None)
        self.local.session = None
        if session is not None:
            _close_quietly(session)

    def close_all(self) -> None:
        with self.lock:
            for session in self.opened:
                _close_quietly(session)
            self.opened.clear()


def run_job(
    store: Store, settings: Settings, options: RunOptions | None = None, control: RunControl | None = None
) -> RunSummary:
    """Run the job once; raises RunFailed / RunInterrupted / RunLockedError after recording why."""
    options = options or RunOptions()
    control = control or RunControl()
    shard = Shard.parse(settings.montage_shard)
    started_at = utc_now()
    job_id = new_job_id(started_at)
    bound = logger.bind(job_id=job_id)
    # The control session holds the run lock and writes the run log; chunk sessions come on top.
    control_session = store.session()
    try:
        if not control_session.try_lock_run(shard.key):
            raise RunLockedError(f"another run holds the lock for shard {shard.key}; nothing was touched")
        return _run_locked(store, control_session, settings, options, control, shard, job_id, started_at)
    finally:
        _close_quietly(control_session)
        bound.debug("store sessions closed")


def _run_locked(
    store: Store,
    session: StoreSession,
    settings: Settings,
    options: RunOptions,
    control: RunControl,
    shard: Shard,
    job_id: str,
    started_at: datetime,
) -> RunSummary:
    log = logger.bind(job_id=job_id)
    session.ensure_migrated()
    as_of = options.as_of or started_at
    data_time = session.latest_data_time(not_after=started_at)
    watermark = session.read_watermark(shard.key)
    query = candidate_query(options, as_of, watermark, settings.watermark_overlap)
    users = find_candidates(session, query, shard)
    summary = RunSummary(job_id, query.mode, as_of, started_at, dry_run=options.dry_run, candidates=len(users))
    summary.watermark_from = watermark
    record = _record(summary, shard)
    if not options.dry_run:
        session.record_run(record)
    log.info(
        "Batch job started",
        mode=query.mode,
        as_of=as_of.isoformat(),
        candidates=len(users),
        batch_size=settings.montage_batch_size,
        concurrency=settings.chunk_workers(),
        shard=shard.key,
        dry_run=options.dry_run,
        since=query.since.isoformat() if query.since else None,
    )
    context = ChunkContext(
        job_id=job_id,
        as_of=as_of,
        params=settings.montage_params(),
        generated_at=started_at,
        cache_ttl=settings.cache_ttl,
        dry_run=options.dry_run,
    )
    try:
        _process_all(store, users, context, settings, control, summary)
    except Exception as exc:
        summary.status = getattr(exc, "status", "failed")
        _finish(session, summary, shard, options, message=redact(str(exc)))
        raise
    if control.stopping:
        summary.status = control.reason or "interrupted"
        _finish(session, summary, shard, options, message=f"stopped: {summary.status}")
        raise RunInterrupted(
            f"run {job_id} stopped ({summary.status}) after {summary.totals.users} of {len(users)} users; "
            "the watermark did not move",
            status=summary.status,
            exit_code=control.exit_code,
        )
    if query.mode != "users" and not options.dry_run and data_time is not None:
        summary.watermark_to = max(data_time, watermark) if watermark else data_time
        session.save_watermark(shard.key, summary.watermark_to, job_id)
    summary.status = "completed"
    _finish(session, summary, shard, options)
    return summary


def _process_all(
    store: Store, users: pl.Series, context: ChunkContext, settings: Settings, control: RunControl, summary: RunSummary
) -> None:
    sessions = _Sessions(store)
    totals_lock = threading.Lock()
    log = logger.bind(job_id=context.job_id)

    def work(chunk_users: pl.Series, number: int) -> None:
        if control.stopping:
            return
        result = _process_with_retries(sessions, chunk_users, context, settings, control)
        if result.failures and not context.dry_run:
            failures = pl.DataFrame(result.failures, schema={"user_id": pl.String, "error": pl.String}, orient="row")
            sessions.current().record_failures(failures, context.job_id, utc_now())
        with totals_lock:
            summary.totals.add(result)
            summary.chunks += 1
        log.info(
            "chunk committed" if not context.dry_run else "chunk computed (dry run)",
            chunk=number,
            users=result.users,
            checkins=result.checkins,
            errors=len(result.failures),
            montages_written=result.montages_written,
            montages_removed=result.montages_removed,
            stage_seconds={stage: round(spent, 3) for stage, spent in result.seconds.items()},
        )

    try:
        with ThreadPoolExecutor(max_workers=settings.chunk_workers(), thread_name_prefix="chunk") as pool:
            futures: list[Future[None]] = [
                pool.submit(work, chunk_users, number)
                for number, chunk_users in enumerate(chunked(users, settings.montage_batch_size))
            ]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [future for future in done if future.exception() is not None]
            if failed:
                control.request_stop("failed")
                wait(futures)
                raise failed[0].exception()  # type: ignore[misc]
    finally:
        sessions.close_all()


def _process_with_retries(
    sessions: _Sessions, users: pl.Series, context: ChunkContext, settings: Settings, control: RunControl
) -> ChunkResult:
    attempts = settings.chunk_retry_attempts + 1
    for attempt in range(1, attempts + 1):
        try:
            return process_chunk(sessions.current(), users, context)
        except TransientStoreError as exc:
            sessions.discard()
            if attempt == attempts or control.stopping:
                raise RunFailed(f"chunk of {len(users)} users failed {attempt} times: {exc}") from None
            backoff = min(30.0, 0.5 * 2 ** (attempt - 1))
            logger.bind(job_id=context.job_id).warning(
                "transient database error; retrying the chunk", attempt=attempt, backoff_seconds=backoff, error=str(exc)
            )
            control.wait(backoff)
    raise AssertionError("unreachable")


def _record(summary: RunSummary, shard: Shard, message: str | None = None) -> RunRecord:
    totals = summary.totals
    return RunRecord(
        job_id=summary.job_id,
        shard=shard.key,
        mode=summary.mode,
        as_of=summary.as_of,
        started_at=summary.started_at,
        status=summary.status,
        finished_at=summary.finished_at,
        watermark_from=summary.watermark_from,
        watermark_to=summary.watermark_to,
        processed=totals.users,
        successful=totals.successful,
        errors=len(totals.failures),
        general_montages=totals.general_montages,
        interest_montages=totals.interest_montages,
        message=message,
    )


def _finish(
    session: StoreSession, summary: RunSummary, shard: Shard, options: RunOptions, message: str | None = None
) -> None:
    summary.finished_at = utc_now()
    if options.dry_run:
        return
    try:
        session.record_run(_record(summary, shard, message))
    except MontageVecError as exc:
        # The run's own outcome matters more than its log row; say so and move on.
        logger.bind(job_id=summary.job_id).error("could not record the run's outcome", error=redact(str(exc)))


def _close_quietly(session: StoreSession) -> None:
    try:
        session.close()
    except Exception as exc:  # a dead connection may refuse to close; nothing is left to save
        logger.debug("closing a store session failed", error=redact(str(exc)))
