"""`montage-vec once`: one run of the batch job, then exit with its outcome's code."""

from __future__ import annotations

import sys
from datetime import datetime

import click
from loguru import logger

from montage_vec.cli.common import exit_on_failure, load_cli_settings, log_configuration
from montage_vec.cli.options import as_of_flag, setting_flag


@click.command()
@click.option("--full", is_flag=True, help="Process every user, not only those with changes.")
@click.option(
    "--user-id",
    "user_ids",
    multiple=True,
    metavar="UUID",
    callback=setting_flag("user_id_filter"),
    help="Process exactly these users (repeatable; USER_ID_FILTER).",
)
@click.option("--as-of", metavar="TIMESTAMP", callback=as_of_flag, help="Reference time, ISO 8601 (default: now, UTC).")
@click.option("--dry-run", is_flag=True, help="Compute and report; write nothing (opens DuckDB read-only).")
@click.option(
    "--allow-future", is_flag=True, help="Accept an --as-of more than MONTAGE_MAX_CLOCK_SKEW ahead of the clock."
)
@click.option(
    "--batch-size", type=int, callback=setting_flag("montage_batch_size"), help="Users per chunk (MONTAGE_BATCH_SIZE)."
)
@click.option(
    "--concurrency",
    type=int,
    callback=setting_flag("max_concurrent_generations"),
    help="Chunks in flight (MAX_CONCURRENT_GENERATIONS).",
)
@click.pass_context
def once(
    ctx: click.Context,
    full: bool = False,
    user_ids: tuple[str, ...] = (),
    as_of: datetime | None = None,
    dry_run: bool = False,
    allow_future: bool = False,
    batch_size: int | None = None,
    concurrency: int | None = None,
) -> None:
    """Run the batch job once and exit."""
    from montage_vec.job.control import RunControl
    from montage_vec.job.plan import RunOptions, new_job_id, utc_now
    from montage_vec.job.summary import log_outcome
    from montage_vec.observability.metrics import JobMetrics
    from montage_vec.observability.signals import stop_on_signals
    from montage_vec.runtime.wiring import run_once
    from montage_vec.stores import open_store

    if full and user_ids:
        raise click.UsageError("--full and --user-id contradict each other: pass one of them", ctx)
    settings = load_cli_settings(
        montage_batch_size=batch_size,
        max_concurrent_generations=concurrency,
        user_id_filter=list(user_ids) or None,
    )
    if full and settings.user_id_filter:
        raise click.UsageError(
            "--full contradicts USER_ID_FILTER, set in the environment: unset USER_ID_FILTER or drop --full", ctx
        )
    if not settings.enable_batch_processing:
        log_configuration(settings)
        logger.info("batch processing is disabled (ENABLE_BATCH_PROCESSING=false); nothing to do")
        return
    # Chosen here, not by the run, so that the configuration line carries it too.
    job_id = new_job_id(utc_now())
    with logger.contextualize(job_id=job_id):
        log_configuration(settings)
        options = RunOptions(
            full=full,
            user_ids=tuple(settings.user_id_filter),
            as_of=as_of,
            dry_run=dry_run,
            allow_future=allow_future,
            job_id=job_id,
        )
        control = RunControl()
        # Opened here: a dry run reads a DuckDB file read-only, and no run creates a missing one.
        with open_store(settings.database(), read_only=dry_run, create=False) as store, stop_on_signals(control):
            # On a terminal, a progress bar on stderr replaces the line per chunk.
            summary = run_once(settings, options, control, JobMetrics(), store=store, progress=sys.stderr.isatty())
        log_outcome(summary)
        exit_on_failure(summary)
