"""Building a run's collaborators from Settings: store, check-in source, observers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from loguru import logger

from montage_vec.config import Settings
from montage_vec.errors import MontageVecError
from montage_vec.job.control import RunControl
from montage_vec.job.observer import RunObserver
from montage_vec.job.plan import RunOptions
from montage_vec.job.runner import run_job
from montage_vec.job.summary import RunSummary
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
    settings: Settings, options: RunOptions, control: RunControl, metrics: JobMetrics, store: Store | None = None
) -> RunSummary:
    """One run with everything the settings enable: timeout, observers, metrics push."""
    owned_store = store is None
    active_store = store or open_store(settings.database())
    summary: RunSummary | None = None
    try:
        with collaborators(settings, metrics) as wired, control.deadline(settings.batch_processing_timeout):
            summary = run_job(active_store, settings, options, control, wired.observers, wired.checkin_source)
        return summary
    finally:
        if owned_store:
            active_store.close()
        if settings.pushgateway_url:
            _push_metrics(settings, metrics, summary is not None and summary.status == "completed")


def _push_metrics(settings: Settings, metrics: JobMetrics, succeeded: bool) -> None:
    try:
        metrics.push(str(settings.pushgateway_url), settings.montage_shard, succeeded)
    except MontageVecError as exc:
        logger.error("metrics push failed; the run's outcome stands", error=str(exc))
