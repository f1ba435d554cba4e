"""The `montage-vec` command line (alias `montage-batch`).

This is the only place that turns exceptions into exit codes and the only place that
configures log sinks. Commands import what they need when they run, so that `--help`,
`health` and every child process start without loading what they never use.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from loguru import logger

from montage_vec.config import Settings, load_settings, redact, requested_batch_mode
from montage_vec.errors import ConfigError, MontageVecError
from montage_vec.observability.logging import configure_logging

if TYPE_CHECKING:
    from montage_vec.job.summary import RunSummary

EXIT_UNEXPECTED = 1


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    """Load settings once per command, with CLI overrides, and set up logging from them."""
    settings = load_settings(**overrides)
    # DEBUG=true means debug output, whatever LOG_LEVEL says.
    level = "debug" if settings.debug else settings.log_level
    configure_logging(level, human=settings.environment == "development")
    if settings.debug:
        logger.debug("effective configuration", configuration=settings.effective())
    return settings


def run_exit_code(summary: RunSummary) -> int:
    """0 for a completed run; otherwise the exit code its error carries (1 when it carries none)."""
    if summary.status == "completed":
        return 0
    return getattr(summary.error, "exit_code", EXIT_UNEXPECTED)


def exit_on_failure(summary: RunSummary) -> None:
    """A run that did not complete ends the process with its exit code and a line on stderr."""
    exit_code = run_exit_code(summary)
    if exit_code:
        _fail(summary.error_text or f"run ended with status {summary.status}", exit_code)


def parse_as_of(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--as-of: not an ISO 8601 timestamp: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="montage-vec", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Generate check-in montages in bulk (vectorized, set-based).

    Without a command, BATCH_MODE (once | scheduler | health) chooses one; a command given
    here always wins.
    """
    if ctx.invoked_subcommand is None:
        mode = requested_batch_mode()
        ctx.invoke({"once": once, "scheduler": scheduler, "health": health}[mode])


@cli.command()
@click.option(
    "--source-indexes",
    is_flag=True,
    help="Also create the recommended indexes on the check-in source table, CONCURRENTLY (writers never wait).",
)
@click.option(
    "--capture-triggers",
    is_flag=True,
    help="Also install the change-capture triggers on the check-in source table (needs TRIGGER on it).",
)
@click.pass_context
def migrate(ctx: click.Context, source_indexes: bool = False, capture_triggers: bool = False) -> None:
    """Apply the pending migrations to the job's own tables (each once, in order).

    The check-in source is never touched unless a flag asks for it.
    """
    from montage_vec.stores import open_store

    settings = settings_from(ctx)
    with open_store(settings.database()) as store, store.session() as session:
        applied = session.migrate()
        logger.info("schema migrated", database=settings.database().display, applied=applied)
        if capture_triggers:
            logger.info(session.install_capture_triggers(), source=settings.montage_source)
        if source_indexes:
            for done in session.create_source_indexes():
                logger.info(done, source=settings.montage_source)


@cli.command()
@click.option("--full", is_flag=True, help="Process every user, not only those with changes.")
@click.option("--user-id", "user_ids", multiple=True, help="Process exactly these users (repeatable).")
@click.option("--as-of", help="Reference time, ISO 8601 (default: now, UTC).")
@click.option("--dry-run", is_flag=True, help="Compute and report; write nothing.")
@click.option(
    "--allow-future", is_flag=True, help="Accept an --as-of more than MONTAGE_MAX_CLOCK_SKEW ahead of the clock."
)
@click.option("--batch-size", type=int, help="Users per chunk (MONTAGE_BATCH_SIZE).")
@click.option("--concurrency", type=int, help="Chunks in flight (MAX_CONCURRENT_GENERATIONS).")
@click.pass_context
def once(
    ctx: click.Context,
    full: bool = False,
    user_ids: tuple[str, ...] = (),
    as_of: str | None = None,
    dry_run: bool = False,
    allow_future: bool = False,
    batch_size: int | None = None,
    concurrency: int | None = None,
) -> None:
    """Run the batch job once and exit."""
    from montage_vec.job.control import RunControl
    from montage_vec.job.plan import RunOptions
    from montage_vec.job.summary import log_outcome
    from montage_vec.observability.metrics import JobMetrics
    from montage_vec.observability.signals import stop_on_signals
    from montage_vec.runtime.wiring import run_once

    settings = settings_from(
        ctx,
        montage_batch_size=batch_size,
        max_concurrent_generations=concurrency,
        user_id_filter=list(user_ids) or None,
    )
    if not settings.enable_batch_processing:
        logger.info("batch processing is disabled (ENABLE_BATCH_PROCESSING=false); nothing to do")
        return
    options = RunOptions(
        full=full,
        user_ids=tuple(settings.user_id_filter),
        as_of=parse_as_of(as_of),
        dry_run=dry_run,
        allow_future=allow_future,
    )
    control = RunControl()
    with stop_on_signals(control):
        summary = run_once(settings, options, control, JobMetrics())
    log_outcome(summary)
    exit_on_failure(summary)


@cli.command()
@click.pass_context
def scheduler(ctx: click.Context) -> None:
    """Run as a daemon: the job on MONTAGE_SCHEDULE, /healthz and /metrics on METRICS_PORT."""
    from montage_vec.job.control import RunControl
    from montage_vec.observability.signals import stop_on_signals
    from montage_vec.runtime.scheduler import run_scheduler

    settings = settings_from(ctx)
    if not settings.enable_batch_processing:
        logger.info("batch processing is disabled (ENABLE_BATCH_PROCESSING=false); nothing to do")
        return
    daemon = RunControl()
    with stop_on_signals(daemon):
        run_scheduler(settings, daemon)


@cli.command()
def health() -> None:
    """Check configuration, database, schema and services; never runs the job."""
    from montage_vec.runtime.health import run_health_checks

    results = run_health_checks()
    for result in results:
        if result.warning:
            click.echo(f"health check warning: {result.name}: {redact(result.detail)}")
    failed = [result for result in results if not result.ok]
    for result in failed:
        click.echo(f"health check failed: {result.name}: {redact(result.detail)}")
    if failed:
        sys.exit(1)
    click.echo("Health check passed")


@cli.command()
@click.option("--user-id", required=True, help="The user whose montages to show.")
@click.pass_context
def show(ctx: click.Context, user_id: str) -> None:
    """Print a user's stored montages and items."""
    from montage_vec.cli.render import render_user_montages
    from montage_vec.stores import open_store

    settings = settings_from(ctx, user_id_filter=[user_id])  # validates and canonicalises the id
    user_id = settings.user_id_filter[0]
    with open_store(settings.database()) as store, store.session() as session:
        session.ensure_migrated()
        montages, items = session.user_montages(user_id, timestamps_as_text=True)
    click.echo(render_user_montages(user_id, montages, items))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map its outcome to an exit code."""
    from montage_vec.cli.demo import demo

    cli.add_command(demo)
    configure_logging()  # replaced once settings are loaded; until then errors still come out as JSON
    try:
        cli.main(args=argv, prog_name="montage-vec", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)
    except MontageVecError as exc:
        _fail(str(exc), exc.exit_code)
    except Exception as exc:  # the last line of defence: a clear message, no traceback dump
        _fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_UNEXPECTED)
    sys.exit(0)


def _fail(message: str, exit_code: int) -> None:
    click.echo(f"montage-vec: {redact(message)}", err=True)
    sys.exit(exit_code)
