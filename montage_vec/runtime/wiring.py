"""Building a run's collaborators from Settings: store, check-in source, observers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace

from loguru import logger

from montage_vec.config import Settings
from montage_vec.errors import MontageVecError
from montage_vec.job.control import RunControl
from montage_vec.job.observer import RunObserver
from montage_vec.job.plan import RunOptions, new_job_id, utc_now
from montage_vec.job.runner import run_job
from montage_vec.job.summary import RunSummary, finish_summary, new_summary
from montage_vec.observability.metrics import JobMetrics
from montage_vec.services.checkin_service import CheckinService
from montage_vec.services.user_service import CacheInvalidator
from montage_vec.stores import CheckinSource, Store, open_store


@dataclass
class Collaborators:
    observers: list[RunObserver] = field(default_factory=list)
    checkin_source: CheckinSource | None = None


@contextmanager
def collaborators(settings: Settings, metrics: JobMetrics) -> Iterator[Collaborators]:
    """Observers and the check-in source the settings ask for; their clients close afterwards."""
    with ExitStack() as stack:
        wired = Collaborators(observers=[metrics])
        invalidator = CacheInvalidator.from_settings(settings, metrics)
        if invalidator is not None:
            stack.callback(invalidator.close)
            wired.observers.append(invalidator)
        if settings.checkin_source == "http":
            service = CheckinService.from_settings(settings)
            stack.callback(service.close)
            wired.checkin_source = service
        yield wired


def run_once(
    settings: Settings,
    options: RunOptions,
    control: RunControl,
    metrics: JobMetrics,
    store: Store | None = None,
    progress: bool = False,
) -> RunSummary:
    """One run with everything the settings enable: timeout, observers, metrics push.

    Every line logged meanwhile carries the run's job_id (`options.job_id`, or a new one). A
    run whose store or services cannot be set up still ends in a failed summary, with the
    requested mode (see `requested_mode`), so that its caller logs the same last line as for
    any run. `progress` draws a progress bar on stderr instead of logging a line per chunk.
    """
    options = replace(options, job_id=options.job_id or new_job_id(utc_now()))
    with logger.contextualize(job_id=options.job_id):
        summary: RunSummary | None = None
        try:
            summary = _run(settings, options, control, metrics, store, progress)
            return summary
        finally:
            if settings.pushgateway_url:
                _push_metrics(settings, metrics, summary is not None and summary.status == "completed")


def _run(
    settings: Settings,
    options: RunOptions,
    control: RunControl,
    metrics: JobMetrics,
    store: Store | None,
    progress: bool,
) -> RunSummary:
    with ExitStack() as stack:
        try:
            active_store = store or stack.enter_context(open_store(settings.database(), create=False))
            wired = stack.enter_context(collaborators(settings, metrics))
        except Exception as exc:  # a store or service the settings cannot build: the run fails, it is not a crash
            return _not_started(settings, options, exc, metrics)
        observers = list(wired.observers)
        if progress:
            from montage_vec.observability.progress import ProgressBar  # the bar's library loads only for terminals

            observers.append(ProgressBar(sys.stderr))
        with control.deadline(settings.batch_processing_timeout):
            return run_job(
                active_store, settings, options, control, observers, wired.checkin_source, chunk_lines=not progress
            )


def _not_started(settings: Settings, options: RunOptions, error: Exception, metrics: JobMetrics) -> RunSummary:
    """The failed summary of a run that never reached run_job; metrics count it like any run."""
    summary = finish_summary(new_summary(settings, options), error)
    metrics.run_finished(summary)
    return summary


def _push_metrics(settings: Settings, metrics: JobMetrics, succeeded: bool) -> None:
    try:
        metrics.push(str(settings.pushgateway_url), settings.montage_shard, succeeded)
    except MontageVecError as exc:
        logger.error("metrics push failed; the run's outcome stands", error=str(exc))
