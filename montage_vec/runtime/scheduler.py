"""The scheduler daemon: runs the job on a cron schedule and serves /healthz and /metrics.

Runs never overlap (one at a time, in this thread); a failed run is logged and the daemon
waits for the next slot. SIGTERM/SIGINT stop the run in progress gracefully and end the
daemon.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from loguru import logger

from montage_vec.config import Settings
from montage_vec.job.control import RunControl
from montage_vec.job.plan import RunOptions, utc_now
from montage_vec.job.summary import log_outcome
from montage_vec.observability.metrics import JobMetrics
from montage_vec.runtime.realtime import regenerate_user
from montage_vec.runtime.server import JobHttpServer, Regenerate
from montage_vec.runtime.wiring import collaborators, run_once
from montage_vec.stores import open_store


def next_run_time(settings: Settings, after: datetime) -> datetime:
    """The next slot of MONTAGE_SCHEDULE in MONTAGE_SCHEDULE_TZ, strictly after `after`.

    Slots are walked in local wall-clock time, like cron: a wall time that occurs twice
    when clocks go back runs once (its first occurrence, fold=0).
    """
    zone = ZoneInfo(settings.montage_schedule_tz)
    slots = croniter(settings.montage_schedule, after.astimezone(zone).replace(tzinfo=None))
    while True:
        upcoming: datetime = slots.get_next(datetime).replace(tzinfo=zone)
        if upcoming > after:
            return upcoming


def run_scheduler(settings: Settings, daemon: RunControl) -> None:
    """Serve until `daemon` is asked to stop; run the job at every scheduled slot."""
    metrics = JobMetrics()
    server = JobHttpServer(
        settings.metrics_host, settings.metrics_port, metrics.exposition, _regenerator(settings)
    ).start()
    logger.info("scheduler started", schedule=settings.montage_schedule, time_zone=settings.montage_schedule_tz)
    try:
        while not daemon.stopping:
            upcoming = next_run_time(settings, utc_now())
            logger.info("next run scheduled", next_run=upcoming.isoformat())
            server.status.update(next_run=upcoming.isoformat())
            if daemon.wait(max(0.0, (upcoming - utc_now()).total_seconds())):
                break
            server.status.update(last_run=_scheduled_run(settings, daemon, metrics))
    finally:
        server.stop()
        logger.info("scheduler stopped", reason=daemon.reason)


def _scheduled_run(settings: Settings, daemon: RunControl, metrics: JobMetrics) -> dict[str, str]:
    """One run; its outcome is logged and reported on /healthz, never raised.

    A run that could not even be set up (a service's settings, an unreachable database) is a
    failed run like any other (see run_once), with its summary line.
    """
    summary = run_once(settings, RunOptions(), RunControl(parent=daemon), metrics)
    log_outcome(summary)
    return {"status": summary.status, "job_id": summary.job_id, "at": utc_now().isoformat()}


def _regenerator(settings: Settings) -> Regenerate | None:
    if not settings.enable_realtime_generation:
        return None

    def regenerate(user_id: str) -> dict[str, Any]:
        with open_store(settings.database(), create=False) as store, collaborators(settings, JobMetrics()) as wired:
            return regenerate_user(store, settings, user_id, wired.checkin_source)

    return regenerate
