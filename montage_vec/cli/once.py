"""`montage-vec once`: one run of the batch job, then exit with its outcome's code."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING

import click
from loguru import logger

from montage_vec.cli.common import exit_on_failure, load_cli_settings, log_configuration
from montage_vec.cli.options import as_of_flag, setting_flag

if TYPE_CHECKING:
    from montage_vec.db import Database


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
    from montage_vec.db import Database
    from montage_vec.job.control import RunControl
    from montage_vec.job.plan import new_job_id, utc_now
    from montage_vec.job.summary import log_outcome
    from montage_vec.observability.signals import stop_on_signals

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
        control = RunControl()
        # A dry run reads a DuckDB file read-only, and no run creates a missing one.
        with Database(settings, read_only=dry_run) as db, stop_on_signals(control):
            summary = db.run(
                full=full,
                user_ids=settings.user_id_filter or None,
                as_of=as_of,
                dry_run=dry_run,
                allow_future=allow_future,
                control=control,
                job_id=job_id,
                progress=sys.stderr.isatty(),  # on a terminal, a bar on stderr replaces the line per chunk
            )
            if dry_run and settings.user_id_filter and summary.status == "completed":
                log_would_change(db, settings.user_id_filter, summary.as_of)
        log_outcome(summary)
    exit_on_failure(summary)


def log_would_change(db: Database, user_ids: list[str], as_of: datetime) -> None:
    """A named users' dry run: one line per montage the run would add, change or remove."""
    from montage_vec.engine.documents import diff_document

    for user_id in user_ids:
        diff = db.explain(user_id, as_of=as_of).diff
        if diff is None:  # the user is set aside (retry list): the run said why
            continue
        changes = diff_document(diff)
        for montage in changes["montages"]:
            logger.info(f"dry run: montage would be {montage.pop('status')}", **montage)
