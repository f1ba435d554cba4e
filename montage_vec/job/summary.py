"""The outcome of a run, as logged on its last line and stored in the run log.

Only the thread that runs the job changes a RunSummary: workers hand back ChunkResults,
and the run adds them up here as they complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger

from montage_vec.config.durations import format_duration
from montage_vec.config.secrets import redact
from montage_vec.errors import MontageVecError, RunInterrupted, RunLockedError, TooManyFailedUsers
from montage_vec.job.chunks import ChunkResult
from montage_vec.job.plan import new_job_id, utc_now
from montage_vec.observability.logging import always_shown
from montage_vec.stores.records import RunRecord

if TYPE_CHECKING:
    from loguru import Logger

    from montage_vec.config.settings import Settings
    from montage_vec.job.plan import CandidatePlan, RunOptions


@dataclass
class RunSummary:
    job_id: str
    mode: str
    as_of: datetime
    started_at: datetime
    status: str = "running"
    finished_at: datetime | None = None
    dry_run: bool = False
    shard: str = "0/1"
    candidates: int = 0
    reconciled: bool = False  # the run ran the reconciliation query
    chunks: int = 0
    chunks_total: int = 0  # the chunks the candidates make, once the run has found them
    totals: ChunkResult = field(default_factory=ChunkResult)
    watermark_from: datetime | None = None
    watermark_to: datetime | None = None
    # Why the run did not complete; its exit_code, when it has one, is the process's (see the CLI).
    error: BaseException | None = None

    def add_chunk(self, result: ChunkResult) -> None:
        """Count a finished chunk (its counts only: a run's totals must not grow with every user)."""
        self.totals.add(result.counts_only())
        self.chunks += 1

    @property
    def error_text(self) -> str | None:
        return redact(str(self.error)) if self.error is not None else None

    @property
    def duration(self) -> timedelta:
        end = self.finished_at or self.started_at
        return end - self.started_at

    def fields(self) -> dict[str, Any]:
        """The old job's summary fields plus what an operator tuning the job needs.

        What the run changed: `montages_written`, `montages_removed`, `items_written` and
        `users_changed`. A dry run keeps the written counts, at 0, so that whatever reads the
        old job's fields from every summary still finds them, and true (nothing was written);
        it adds what a real run would change now: `montages_would_write`,
        `montages_would_remove`, `items_would_write`, and `users_changed` counts the users
        whose montages would change.
        """
        totals = self.totals
        failure = {"error": self.error_text, "error_type": type(self.error).__name__} if self.error else {}
        return {
            "job_id": self.job_id,
            "status": self.status,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "as_of": self.as_of.isoformat(),
            "duration": format_duration(self.duration),
            "duration_seconds": round(self.duration.total_seconds(), 3),
            "processed": totals.users,
            "successful": totals.successful,
            "errors": len(totals.failures),
            "general_montages": totals.general_montages,
            "interest_montages": totals.interest_montages,
            "montages_written": totals.montages_written,
            "montages_removed": totals.montages_removed,
            "items_written": totals.items_written,
            "users_changed": totals.users_changed,
            **self._would_write(),
            "checkins": totals.checkins,
            "chunks": self.chunks,
            "stage_seconds": {stage: round(spent, 3) for stage, spent in totals.seconds.items()},
            **failure,
        }

    def _would_write(self) -> dict[str, int]:
        """A dry run's counts of what a real run would change (none for a real run)."""
        if not self.dry_run:
            return {}
        totals = self.totals
        return {
            "montages_would_write": totals.montages_would_write,
            "montages_would_remove": totals.montages_would_remove,
            "items_would_write": totals.items_would_write,
        }


# Fewer failed users never trip the breaker (README, "The breaker"): one bad user is more
# than 1 % of a quiet night's 50 changed users, and failing that run would hold the watermark
# back for everyone, night after night, until the candidates outnumber it.
MIN_FAILED_USERS_TO_TRIP = 10


def too_many_failed(summary: RunSummary, max_fraction: float) -> TooManyFailedUsers | None:
    """The breaker's error once more of the run's candidates failed than `max_fraction` allows."""
    failed = len(summary.totals.failures)
    if failed < MIN_FAILED_USERS_TO_TRIP or failed <= max_fraction * summary.candidates:
        return None
    first_user, first_error = summary.totals.failures[0]
    return TooManyFailedUsers(
        f"{failed} of {summary.candidates} users failed, more than MONTAGE_MAX_FAILED_FRACTION={max_fraction} "
        f"allows; first: user {first_user}: {first_error}"
    )


def log_started(log: Logger, summary: RunSummary, plan: CandidatePlan, settings: Settings) -> None:
    """The run's first line once it planned: what it will do, and how."""
    log.info(
        "Batch job started",
        mode=plan.mode,
        change_capture=plan.capture.mode,
        change_capture_reason=plan.capture.reason,
        reconciled=summary.reconciled,
        as_of=summary.as_of.isoformat(),
        since=plan.since.isoformat() if plan.since else None,
        candidates=summary.candidates,
        batch_size=settings.montage_batch_size,
        concurrency=settings.chunk_workers(),
        shard=summary.shard,
        dry_run=summary.dry_run,
    )


def log_chunk(log: Logger, number: int, summary: RunSummary, result: ChunkResult, elapsed: float) -> None:
    """A chunk's line: which chunk, how far the run is, its counts and where its time went.

    `number` is the chunk's place in the candidate order (chunks finish out of order);
    `elapsed` is the seconds since the run started processing chunks.
    """
    users_per_second, eta_seconds = throughput(summary.totals.users, summary.candidates, elapsed)
    log.info(
        "chunk computed (dry run)" if summary.dry_run else "chunk committed",
        chunk=number,
        chunks_done=summary.chunks,
        chunks_total=summary.chunks_total,
        users_per_second=users_per_second,
        eta_seconds=eta_seconds,
        users=result.users,
        checkins=result.checkins,
        errors=len(result.failures),
        montages_written=result.montages_written,
        montages_removed=result.montages_removed,
        items_written=result.items_written,
        users_changed=result.users_changed,
        **(
            {
                "montages_would_write": result.montages_would_write,
                "montages_would_remove": result.montages_would_remove,
                "items_would_write": result.items_would_write,
            }
            if summary.dry_run
            else {}
        ),
        stage_seconds={stage: round(spent, 3) for stage, spent in result.seconds.items()},
    )


def throughput(users_done: int, users_total: int, elapsed: float) -> tuple[float | None, float | None]:
    """(users per second so far, seconds left at that rate); None while nothing measures a rate."""
    if users_done <= 0 or elapsed <= 0:
        return None, None
    rate = users_done / elapsed
    return round(rate, 1), round(max(0, users_total - users_done) / rate, 1)


def log_outcome(summary: RunSummary) -> None:
    """A run's last log line, wherever it ran (once, the scheduler, demo): the summary's fields."""
    line = always_shown(logger.bind(**summary.fields()))  # the run's result: shown at every LOG_LEVEL
    if summary.status == "completed":
        line.info("Batch job completed")
    else:
        line.error("Batch job failed")


def run_record(summary: RunSummary) -> RunRecord:
    """The run log row for the summary as it stands."""
    totals = summary.totals
    return RunRecord(
        job_id=summary.job_id,
        shard=summary.shard,
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
        message=f"{type(summary.error).__name__}: {summary.error_text}" if summary.error else None,
        reconciled=summary.reconciled,
    )


def requested_mode(options: RunOptions) -> str:
    """The mode a run is in until its plan decides: `users` for named users (--user-id or
    USER_ID_FILTER), `full` for --full, otherwise `incremental`.

    The plan may still make an incremental request a full run (no watermark yet, an as_of
    earlier than a past run's, another shard count); a run that fails before it planned
    reports the mode that was asked for.
    """
    if options.user_ids:
        return "users"
    return "full" if options.full else "incremental"


def new_summary(settings: Settings, options: RunOptions) -> RunSummary:
    """A run's summary as it starts: its job id, the requested mode and its reference time."""
    started_at = utc_now()
    return RunSummary(
        job_id=options.job_id or new_job_id(started_at),
        mode=requested_mode(options),
        as_of=options.as_of or started_at,
        started_at=started_at,
        dry_run=options.dry_run,
        shard=settings.shard().key,
    )


def finish_summary(summary: RunSummary, error: BaseException | None) -> RunSummary:
    """Set the run's final status from how it ended; an error that is not ours is logged with its traceback."""
    summary.error = error
    summary.status = "completed" if error is None else _status_of(error)
    summary.finished_at = utc_now()
    if error is not None and not isinstance(error, MontageVecError):
        logger.bind(job_id=summary.job_id).opt(exception=error).error("the run failed on an unexpected error")
    return summary


def _status_of(error: BaseException) -> str:
    if isinstance(error, RunLockedError):
        return "locked"
    if isinstance(error, RunInterrupted):
        return error.status
    return "failed"
