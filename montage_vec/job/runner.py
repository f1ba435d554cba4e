"""run_job: one batch run from lock to watermark.

The run takes the shard's lock on its control session, plans its users from the
watermark, processes chunks on a bounded pool of worker threads (each with its own store
session), retries chunks that hit transient errors on a fresh session, and moves the
watermark only when every chunk committed. Anything else leaves the watermark where it
was, so the next run redoes the work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import polars as pl
from loguru import logger

from montage_vec.config import Settings
from montage_vec.config.secrets import redact
from montage_vec.engine import warm_up
from montage_vec.errors import MontageVecError, RunFailed, RunInterrupted, RunLockedError, SchemaNotMigratedError
from montage_vec.job.chunks import ChunkContext, ChunkResult, process_chunk
from montage_vec.job.control import RunControl
from montage_vec.job.observer import Observers, RunObserver
from montage_vec.job.plan import RunOptions, Shard, chunked, find_candidates, new_job_id, plan_candidates, utc_now
from montage_vec.job.sessions import ThreadSessions, close_quietly
from montage_vec.job.summary import RunSummary, run_record
from montage_vec.stores.base import CheckinSource, Store, StoreSession

FAILURE_SCHEMA = {"user_id": pl.String, "error": pl.String}


def run_job(
    store: Store,
    settings: Settings,
    options: RunOptions | None = None,
    control: RunControl | None = None,
    observers: Sequence[RunObserver] = (),
    checkin_source: CheckinSource | None = None,
) -> RunSummary:
    """Run the job once. Raises RunLockedError, RunFailed or RunInterrupted after recording why.

    `checkin_source` replaces the database's own `checkins` table (e.g. the check-in service);
    it must be safe to share between threads.
    """
    run = _Run(store, settings, options or RunOptions(), control or RunControl(), Observers(observers))
    control_session = store.session()
    try:
        if not control_session.try_lock_run(run.shard.key):
            raise RunLockedError(f"another run holds the lock for shard {run.shard.key}; nothing was touched")
        return run.execute(control_session, checkin_source)
    finally:
        close_quietly(control_session)


class _Run:
    def __init__(
        self, store: Store, settings: Settings, options: RunOptions, control: RunControl, observers: Observers
    ) -> None:
        self.store = store
        self.settings = settings
        self.options = options
        self.control = control
        self.observers = observers
        self.shard = Shard.parse(settings.montage_shard)
        started_at = utc_now()
        self.summary = RunSummary(
            job_id=new_job_id(started_at),
            mode="pending",
            as_of=options.as_of or started_at,
            started_at=started_at,
            dry_run=options.dry_run,
            shard=self.shard.key,
        )
        self.log = logger.bind(job_id=self.summary.job_id)
        self.control_session: StoreSession | None = None
        # Worker threads check the lock on the control session; one connection, one caller at a time.
        self._control_lock = threading.Lock()

    def execute(self, session: StoreSession, checkin_source: CheckinSource | None) -> RunSummary:
        """Plan, process and finish the run; every failure is recorded and reported to observers."""
        summary = self.summary
        self.control_session = session
        try:
            session.ensure_migrated()
            self._plan_and_process(session, checkin_source)
        except BaseException as exc:
            summary.status = getattr(exc, "status", "failed")
            summary.finished_at = utc_now()
            if not isinstance(exc, SchemaNotMigratedError):  # nowhere to record it
                self._record(session, message=redact(f"{type(exc).__name__}: {exc}"))
            self.observers.run_finished(summary)
            if isinstance(exc, MontageVecError):
                exc.run_summary = summary.fields()
            raise
        summary.status = "completed"
        summary.finished_at = utc_now()
        self._record(session)
        self.observers.run_finished(summary)
        return summary

    def _plan_and_process(self, session: StoreSession, checkin_source: CheckinSource | None) -> None:
        summary = self.summary
        summary.watermark_from = session.read_watermark(self.shard.key)
        plan = plan_candidates(self.options, summary.as_of, summary.watermark_from, self.settings.watermark_overlap)
        summary.mode = plan.mode
        self._record(session)  # the run exists (and its started event) before anything can fail
        self.observers.run_started(summary)
        planning_source = checkin_source or session
        planning_started = time.perf_counter()
        data_time = planning_source.latest_data_time(not_after=summary.started_at)
        users = find_candidates(plan, planning_source, session, self.shard)
        summary.candidates = len(users)
        summary.totals.seconds["candidates"] = time.perf_counter() - planning_started
        self.log.info(
            "Batch job started",
            mode=plan.mode,
            as_of=summary.as_of.isoformat(),
            since=plan.since.isoformat() if plan.since else None,
            candidates=len(users),
            batch_size=self.settings.montage_batch_size,
            concurrency=self.settings.chunk_workers(),
            shard=self.shard.key,
            dry_run=self.options.dry_run,
        )
        total_chunks = self._process_all(users, checkin_source)
        if summary.chunks < total_chunks:
            self._raise_stopped(len(users))
        if plan.mode != "users" and not self.options.dry_run and data_time is not None:
            previous = summary.watermark_from
            summary.watermark_to = max(data_time, previous) if previous else data_time
            session.save_watermark(self.shard.key, summary.watermark_to, summary.job_id)

    def _raise_stopped(self, candidates: int) -> None:
        """Some chunks never ran because a stop was requested."""
        status = self.control.reason or "interrupted"
        raise RunInterrupted(
            f"run {self.summary.job_id} stopped ({status}) after {self.summary.totals.users} of {candidates} "
            "users; committed chunks stay, the watermark did not move",
            status=status,
            exit_code=self.control.exit_code,
        )

    def _ensure_lock_held(self) -> None:
        """Stop the run when its lock is gone (e.g. the control connection died): another run may own it."""
        if self.control_session is None:
            return
        with self._control_lock:
            held = self.control_session.holds_run_lock(self.shard.key)
        if not held:
            self.control.request_stop("failed")
            raise RunFailed(f"run {self.summary.job_id} lost its lock for shard {self.shard.key}; stopping")

    def _record(self, session: StoreSession, message: str | None = None) -> None:
        """Write the run log row and its batch_job event, on a new connection if the control one died.

        A failure here is logged, never raised: it must not hide the run's own outcome.
        """
        if self.options.dry_run:
            return
        record = run_record(self.summary, message)
        try:
            with self._control_lock:
                session.record_run(record)
            return
        except Exception as exc:
            self.log.warning("recording the run failed; retrying on a new connection", error=redact(str(exc)))
        try:
            fresh = self.store.session()
            try:
                fresh.record_run(record)
            finally:
                close_quietly(fresh)
        except Exception as exc:
            self.log.error("could not record the run in the run log", error=redact(str(exc)))

    def _process_all(self, users: pl.Series, checkin_source: CheckinSource | None) -> int:
        """Process every chunk (skipping those not started before a stop); return the chunk count."""
        sessions = ThreadSessions(self.store)
        context = ChunkContext(
            job_id=self.summary.job_id,
            as_of=self.summary.as_of,
            params=self.settings.montage_params(),
            generated_at=self.summary.started_at,
            cache_ttl=self.settings.cache_ttl,
            dry_run=self.options.dry_run,
            analytics=self.settings.enable_analytics,
        )
        totals_lock = threading.Lock()
        warm_up()

        def work(chunk_users: pl.Series, number: int) -> None:
            if self.control.stopping:
                return
            self._ensure_lock_held()
            result = self._process_with_retries(sessions, checkin_source, chunk_users, context)
            if result.failures and not context.dry_run:
                failures = pl.DataFrame(result.failures, schema=FAILURE_SCHEMA, orient="row")
                sessions.current().record_failures(failures, context.job_id, utc_now())
            with totals_lock:
                self.summary.totals.add(result.counts_only())
                self.summary.chunks += 1
            self._log_chunk(number, result)
            self.observers.chunk_finished(self.summary, result)

        try:
            with ThreadPoolExecutor(self.settings.chunk_workers(), thread_name_prefix="chunk") as pool:
                chunks = chunked(users, self.settings.montage_batch_size)
                futures = [pool.submit(work, chunk_users, number) for number, chunk_users in enumerate(chunks)]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failure = next((f.exception() for f in done if f.exception() is not None), None)
                if failure is not None:
                    self.control.request_stop("failed")
                    wait(futures)
                    raise failure
        finally:
            sessions.close_all()
        return len(futures)

    def _process_with_retries(
        self, sessions: ThreadSessions, checkin_source: CheckinSource | None, users: pl.Series, context: ChunkContext
    ) -> ChunkResult:
        attempts = self.settings.chunk_retry_attempts + 1
        for attempt in range(1, attempts + 1):
            try:
                session = sessions.current()
                return process_chunk(session, checkin_source or session, users, context)
            except MontageVecError as exc:
                if not exc.transient:
                    raise
                sessions.discard()
                if attempt == attempts or self.control.stopping:
                    raise RunFailed(f"a chunk of {len(users)} users failed {attempt} time(s): {exc}") from None
                backoff = min(30.0, 0.5 * 2 ** (attempt - 1))
                self.log.warning(
                    "transient error; retrying the chunk on a new connection",
                    attempt=attempt,
                    backoff_seconds=backoff,
                    error=str(exc),
                )
                self.control.wait(backoff)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _log_chunk(self, number: int, result: ChunkResult) -> None:
        self.log.info(
            "chunk computed (dry run)" if self.options.dry_run else "chunk committed",
            chunk=number,
            users=result.users,
            checkins=result.checkins,
            errors=len(result.failures),
            montages_written=result.montages_written,
            montages_removed=result.montages_removed,
            stage_seconds={stage: round(spent, 3) for stage, spent in result.seconds.items()},
        )
