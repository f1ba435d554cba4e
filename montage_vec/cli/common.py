"""What the commands share: the program's name, settings with their log sink, failing with a code.

Kept apart from `cli.app`, which registers the commands, so that every command module
(`demo`, `once`, `show`) imports these without importing the group that imports it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click
from loguru import logger

from montage_vec.cli.exit_codes import EXIT_UNEXPECTED
from montage_vec.config import redact
from montage_vec.observability.logging import configure_logging

if TYPE_CHECKING:
    from montage_vec.config import Settings
    from montage_vec.job.summary import RunSummary

DEFAULT_PROGRAM = "montage-vec"
PROGRAMS = frozenset({DEFAULT_PROGRAM, "montage-batch"})  # the console scripts (pyproject.toml)


def program_name(argv0: str | None = None) -> str:
    """The name the user invoked (`montage-batch` is an alias); montage-vec for `python -m montage_vec`."""
    name = Path(sys.argv[0] if argv0 is None else argv0).name
    return name if name in PROGRAMS else DEFAULT_PROGRAM


def settings_from(*, log_stream: TextIO | None = None, **overrides: Any) -> Settings:
    """`load_cli_settings`, then `log_configuration`: what a command without a run of its own does."""
    settings = load_cli_settings(log_stream=log_stream, **overrides)
    log_configuration(settings)
    return settings


def load_cli_settings(*, log_stream: TextIO | None = None, **overrides: Any) -> Settings:
    """Settings with the command's overrides, and the log sink they ask for (stdout unless `log_stream`)."""
    from montage_vec.config import load_settings

    settings = load_settings(**overrides)
    # DEBUG=true means debug output, whatever LOG_LEVEL says.
    level = "debug" if settings.debug else settings.log_level
    configure_logging(level, human=settings.environment == "development", stream=log_stream)
    return settings


def log_configuration(settings: Settings) -> None:
    """With DEBUG=true, every setting (secrets masked); a run logs it with its job id bound."""
    if settings.debug:
        # The database in use, as resolved from DATABASE_URL / DB_HOST / the default (password masked).
        logger.debug(
            "effective configuration", configuration=settings.effective(), database=settings.database().display
        )


def run_exit_code(summary: RunSummary) -> int:
    """0 for a completed run; otherwise the exit code its error carries (1 when it carries none)."""
    if summary.status == "completed":
        return 0
    return getattr(summary.error, "exit_code", EXIT_UNEXPECTED)


def exit_on_failure(summary: RunSummary) -> None:
    """A run that did not complete ends the process with its exit code and a line on stderr."""
    exit_code = run_exit_code(summary)
    if exit_code:
        fail(summary.error_text or f"run ended with status {summary.status}", exit_code)


def fail(message: str, exit_code: int, program: str | None = None) -> NoReturn:
    """End the process: one redacted line on stderr, prefixed with the program's name."""
    if program is None:
        ctx = click.get_current_context(silent=True)
        program = (ctx.find_root().info_name if ctx is not None else None) or DEFAULT_PROGRAM
    click.echo(f"{program}: {redact(message)}", err=True)
    sys.exit(exit_code)
