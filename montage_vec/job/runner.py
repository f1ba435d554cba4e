"""run_job: one batch run from lock to watermark.

The run takes the shard's lock on its control session, plans its users from the
watermark (a full run then reads the check-ins in one scan, job/scan.py), processes chunks
on a bounded pool of worker threads (each with its own store session), retries chunks that
hit transient errors on a fresh session, and moves the watermark only when every chunk
committed. Anything else leaves the watermark where it was, so the next run redoes the work.

Workers only compute and write chunks and hand back ChunkResults; this thread submits
chunks, checks the run lock, adds up results and records the run, so nothing is shared.

Every line logged during the run carries its `job_id`: the run sets it with
`logger.contextualize`, and each chunk runs in a copy of this thread's context (worker
threads do not inherit context variables on their own).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace

import polars as pl
from loguru import logger

from montage_vec.config import Settings
from montage_vec.config.secrets import redact
from montage_vec.errors import (
    ConfigError,
    MontageVecError,
    RunInterrupted,
    RunLockedError,
    SchemaNotMigratedError,
)
from montage_vec.job.backoff import RetryPolicy
from montage_vec.job.chunks import ChunkContext, ChunkResult
from montage_vec.job.control import RunControl
from montage_vec.job.memory import chunk_checkin_budget
from montage_vec.job.observer import Observers, RunObserver
from montage_vec.job.plan import (
    CandidatePlan,
    RunOptions,
    check_as_of,
    chunk_size,
    chunked,
    consumed_changes,
    find_candidates,
    next_watermark,
    plan_run,
    plan_warnings,
    utc_now,
)
from montage_vec.job.retries import process_with_retries
from montage_vec.job.scan import chunk_checkins
from montage_vec.job.sessions import ThreadSessions
from montage_vec.job.shard_lock import ShardLock
from montage_vec.job.summary import (
    RunSummary,
    finish_summary,
    log_chunk,
    log_started,
    new_summary,
    run_record,
    too_many_failed,
)
from montage_vec.stores import SqlSession, Store
from montage_vec.stores.interfaces import CheckinSource, ChunkCheckins


def run_job(
    store: Store,
    settings: Settings,
    options: RunOptions | None = None,
    control: RunControl | None = None,
    observers: Sequence[RunObserver] = (),
    checkin_source: CheckinSource | None = None,
    chunk_lines: bool = True,
) -> RunSummary:
    """Run the job once; the summary's `status` and `error` say how it ended.

    Statuses: `completed`, `failed`, `locked` (another run holds the shard), `interrupted`
    (a signal) and `timeout`. `checkin_source` replaces the database's own check-ins (e.g.
    the check-in service); it must be safe to share between threads. `chunk_lines=False`
    leaves out the line per chunk, for when a progress bar shows the same.
    """
    run = _Run(store, settings, options or RunOptions(), control or RunControl(), Observers(observers), chunk_lines)
    with logger.contextualize(job_id=run.summary.job_id):
        return run.execute(checkin_source)


class _Run:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        options: RunOptions,
        control: RunControl,
        observers: Observers,
        chunk_lines: bool,
    ) -> None:
        self.store = store
        self.settings = settings
        self.options = options
        self.control = control
        self.observers = observers
        self.chunk_lines = chunk_lines
        self.shard = settings.shard()
        # One budget for every retry of the run: chunks, and the control session's reconnects.
        self.retry_policy = RetryPolicy(settings.chunk_retry_attempts, settings.db_reconnect_timeout)
        self.summary = new_summary(settings, options)
        self.planned = False  # the plan chose the mode (see _record)
        self.log = logger.bind(job_id=self.summary.job_id)

    def execute(self, checkin_source: CheckinSource | None) -> RunSummary:
        try:
            skew = self.settings.montage_max_clock_skew
            check_as_of(self.summary.as_of, utc_now(), skew, self.options.allow_future)
        except ConfigError as exc:
            return self._finish(exc, None)
        with ShardLock(self.store, self.shard.key, self.summary.job_id, self.retry_policy, self.control) as hold:
            try:
                locked = hold.acquire()
            except MontageVecError as exc:
                return self._finish(exc, None)
            if not locked:
                message = f"another run holds the lock for shard {self.shard.key}; nothing was touched"
                return self._finish(RunLockedError(message), None)
            try:
                hold.session.ensure_migrated()
                if not self.options.dry_run:
                    hold.take_lease(self.summary.started_at)
                self._plan_and_process(hold, checkin_source)
            except BaseException as exc:
                self._finish(exc, hold)
                if not isinstance(exc, Exception):
                    raise  # KeyboardInterrupt and the like: recorded, and still the caller's
                return self.summary
            return self._finish(None, hold)

    def _finish(self, error: BaseException | None, hold: ShardLock | None) -> RunSummary:
        """Set the final status, record the run (when it got as far as its lock) and tell observers."""
        summary = finish_summary(self.summary, error)
        if hold is not None and not isinstance(error, SchemaNotMigratedError):  # nowhere to record that
            self._record(hold)
        self.observers.run_finished(summary)
        return summary

    def _plan_and_process(self, hold: ShardLock, checkin_source: CheckinSource | None) -> None:
        """Plan on the control session; chunks read from `checkin_source`, else their own sessions."""
        summary = self.summary
        session = hold.session
        source = checkin_source or session
        summary.watermark_from = session.read_watermark(self.shard.key)
        plan = self._plan(session, checkin_source is None)
        summary.mode = plan.mode
        self.planned = True
        self._record(hold)  # the run exists (and its started event) before anything can fail
        self.observers.run_started(summary)
        planning_started = time.perf_counter()
        # The oldest open transaction first: one that commits after this read began after the
        # run started, so its rows are newer than any watermark this run saves.
        open_since = session.oldest_open_transaction() if checkin_source is None else None
        data_time = source.latest_data_time(not_after=summary.started_at)
        consumed = consumed_changes(plan, session, self.shard)
        users = find_candidates(plan, source, session, self.shard, consumed)
        summary.candidates = len(users)
        summary.totals.seconds["candidates"] = time.perf_counter() - planning_started
        log_started(self.log, summary, plan, self.settings)
        scan_args = (self.store, self.settings, users, checkin_source, summary, self.control, self.retry_policy)
        with chunk_checkins(*scan_args) as chunk_source:
            self._process_all(hold, users, chunk_source)
        if plan.mode != "users" and not self.options.dry_run:
            watermark = next_watermark(summary.watermark_from, data_time, open_since)
            if open_since is not None and data_time is not None and open_since < data_time:
                self.log.info("watermark held back by an open transaction", open_since=open_since.isoformat())
            hold.call(
                lambda control_session: control_session.save_progress(
                    self.shard.key, watermark, summary.job_id, plan.capture.snapshot, consumed, hold.lease
                )
            )
            summary.watermark_to = watermark

    def _plan(self, session: SqlSession, database_source: bool) -> CandidatePlan:
        plan = plan_run(session, self.settings, self.options, self.summary, self.shard, database_source)
        self.summary.reconciled = plan.mode == "incremental" and plan.reconcile
        for warning in plan_warnings(plan, self.settings):
            self.log.warning(warning, as_of=self.summary.as_of.isoformat())
        return plan

    def _process_all(self, hold: ShardLock, users: pl.Series, source: ChunkCheckins | None) -> None:
        """Process every chunk, adding up results as they complete; raise if any did not commit."""
        context = ChunkContext(
            job_id=self.summary.job_id,
            as_of=self.summary.as_of,
            params=self.settings.montage_params(),
            generated_at=self.summary.started_at,
            cache_ttl=self.settings.cache_ttl,
            dry_run=self.options.dry_run,
            analytics=self.settings.enable_analytics,
            lease=hold.lease,
            checkin_budget=chunk_checkin_budget(self.settings.montage_memory_budget, self.settings.chunk_workers()),
        )
        first_error: BaseException | None = None
        self.summary.chunks_total = -(-len(users) // chunk_size(len(users), self.settings))
        started = time.perf_counter()
        with (
            ThreadSessions(self.store) as sessions,
            ThreadPoolExecutor(self.settings.chunk_workers(), thread_name_prefix="chunk") as pool,
        ):
            for number, finished in self._completed_chunks(hold, users, sessions, pool, context, source):
                try:
                    result = finished.result()
                except BaseException as exc:
                    if first_error is None:
                        first_error = exc
                        self.control.request_stop("failed")
                    continue
                self.summary.add_chunk(result)
                if self.chunk_lines:
                    log_chunk(self.log, number, self.summary, result, time.perf_counter() - started)
                self.observers.chunk_finished(self.summary, result)
                fraction = self.settings.montage_max_failed_fraction
                if first_error is None and (tripped := too_many_failed(self.summary, fraction)) is not None:
                    failed, candidates = len(self.summary.totals.failures), self.summary.candidates
                    self.log.error("too many users failed; stopping the run", failed=failed, candidates=candidates)
                    first_error = tripped
                    self.control.request_stop("failed")
        if first_error is not None:
            raise first_error
        if self.summary.chunks < self.summary.chunks_total:
            raise self._stopped(len(users))

    def _completed_chunks(
        self,
        hold: ShardLock,
        users: pl.Series,
        sessions: ThreadSessions,
        pool: ThreadPoolExecutor,
        context: ChunkContext,
        source: ChunkCheckins | None,
    ) -> Iterator[tuple[int, Future[ChunkResult]]]:
        """(chunk number, its future) as chunks finish; a new chunk starts only while no stop is asked.

        The run lock is checked before each chunk starts: when its connection died, it is
        taken again (see ShardLock.ensure), or a failed future says that another run has it.
        """
        chunks = enumerate(chunked(users, chunk_size(len(users), self.settings)), start=1)
        in_flight: dict[Future[ChunkResult], int] = {}
        while True:
            while len(in_flight) < self.settings.chunk_workers() and not self.control.stopping:
                upcoming = next(chunks, None)
                if upcoming is None:
                    break
                number, chunk_users = upcoming
                try:
                    hold.ensure()
                except MontageVecError as exc:
                    in_flight[_failed(exc)] = number
                    break
                work = pool.submit(
                    contextvars.copy_context().run,  # the worker's lines carry the run's job_id too
                    process_with_retries,
                    sessions,
                    source,
                    chunk_users,
                    context,
                    self.retry_policy,
                    self.control,
                )
                in_flight[work] = number
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for finished in done:
                yield in_flight.pop(finished), finished

    def _stopped(self, candidates: int) -> RunInterrupted:
        """Some chunks never ran because a stop was requested."""
        status = self.control.reason or "interrupted"
        return RunInterrupted(
            f"run {self.summary.job_id} stopped ({status}) after {self.summary.totals.users} of {candidates} "
            "users; committed chunks stay, the watermark did not move",
            status=status,
            exit_code=self.control.exit_code,
        )

    def _record(self, hold: ShardLock) -> None:
        """Write the run log row and its batch_job event, on a new connection if the control one died.

        A failure here is logged, never raised: it must not hide the run's own outcome.
        """
        if self.options.dry_run:
            return
        record = run_record(self.summary)
        if not self.planned:
            record = replace(record, mode=UNPLANNED_MODE)
        try:
            hold.session.record_run(record)
            return
        except Exception as exc:
            self.log.warning("recording the run failed; retrying on a new connection", error=redact(str(exc)))
        try:
            with self.store.session() as fresh:
                fresh.record_run(record)
        except Exception as exc:
            self.log.error("could not record the run in the run log", error=redact(str(exc)))


# The run log's mode for a run that never planned, so never wrote anything: the plan's search
# for runs under another shard count looks at full and incremental runs, and must not count it.
UNPLANNED_MODE = "pending"


def _failed(error: BaseException) -> Future[ChunkResult]:
    future: Future[ChunkResult] = Future()
    future.set_exception(error)
    return future
