"""The `montage-vec` command line (alias `montage-batch`): the group, its small commands, `main`.

This is the only place that turns exceptions into exit codes and the only place that
configures log sinks. Commands import what they need when they run, so that `--help`, shell
completion, `health` and every child process start without loading what they never use: the
import of this package loads click, loguru and the light half of `montage_vec.config`, never
pydantic, Polars, PyArrow, DuckDB, httpx or the Prometheus client (tests/cli check it).
"""

from __future__ import annotations

import sys

import click
from loguru import logger

from montage_vec.cli.common import fail, program_name, settings_from
from montage_vec.cli.demo import demo
from montage_vec.cli.exit_codes import EPILOG, EXIT_INTERRUPTED, EXIT_UNEXPECTED
from montage_vec.cli.explain import explain
from montage_vec.cli.once import once
from montage_vec.cli.show import show
from montage_vec.config import redact
from montage_vec.errors import MontageVecError
from montage_vec.observability.logging import configure_logging


@click.group(invoke_without_command=True, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="montage-vec", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Generate check-in montages in bulk (vectorized, set-based).

    Without a command, BATCH_MODE (once | scheduler | health) chooses one; a command given
    here always wins, and BATCH_MODE is then not read at all.
    """
    if ctx.invoked_subcommand is None:
        from montage_vec.config import requested_batch_mode

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
def migrate(source_indexes: bool = False, capture_triggers: bool = False) -> None:
    """Apply the pending migrations to the job's own tables (each once, in order).

    Creates the DuckDB file (and its folder) when it does not exist: the one command besides
    `demo` that does. The check-in source is never touched unless a flag asks for it.
    """
    from montage_vec.db import Database

    settings = settings_from()
    with Database(settings, create=True) as db:
        applied = db.migrate()
        logger.info("schema migrated", database=settings.database().display, applied=applied)
        if capture_triggers:
            logger.info(db.install_capture_triggers(), source=settings.montage_source)
        if source_indexes:
            for done in db.create_source_indexes():
                logger.info(done, source=settings.montage_source)


@cli.command()
def scheduler() -> None:
    """Run as a daemon: the job on MONTAGE_SCHEDULE, /healthz and /metrics on METRICS_PORT."""
    from montage_vec.job.control import RunControl
    from montage_vec.observability.signals import stop_on_signals
    from montage_vec.runtime.scheduler import run_scheduler

    settings = settings_from()
    if not settings.enable_batch_processing:
        logger.info("batch processing is disabled (ENABLE_BATCH_PROCESSING=false); nothing to do")
        return
    from montage_vec.stores import require_database

    require_database(settings.database())  # a daemon on a missing file would fail every run; exit 3 now
    daemon = RunControl()
    with stop_on_signals(daemon):
        run_scheduler(settings, daemon)


@cli.command()
def health() -> None:
    """Check configuration, database, schema and services (read-only).

    Never runs the job, and never creates or changes a database.
    """
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


# Registered at import, so that `cli.commands` (and shell completion) always lists them.
cli.add_command(once)
cli.add_command(show)
cli.add_command(demo)
cli.add_command(explain)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map its outcome to an exit code."""
    program = program_name()
    configure_logging()  # replaced once settings are loaded; until then errors still come out as JSON
    try:
        cli.main(args=argv, prog_name=program, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except MontageVecError as exc:
        fail(str(exc), exc.exit_code, program)
    except Exception as exc:  # the last line of defence: a clear message, no traceback dump
        fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_UNEXPECTED, program)
    sys.exit(0)
