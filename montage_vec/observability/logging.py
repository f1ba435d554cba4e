"""Log sinks: one JSON object per line on stdout, or a readable format in development.

Only the CLI entry point calls `configure_logging`; library code just uses loguru's
`logger`, binding `job_id` so that every line of a run carries the correlation id. Every
line passes through `redact`, the last guard against a secret reaching a log.
"""

from __future__ import annotations

import json
import sys
import traceback
from datetime import UTC
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from montage_vec.config.secrets import redact

if TYPE_CHECKING:
    from loguru import Message, Record

LEVEL_NAMES = {"TRACE": "debug", "DEBUG": "debug", "INFO": "info", "SUCCESS": "info", "WARNING": "warn"}
LOGURU_LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "warning": "WARNING", "error": "ERROR"}


def json_line(record: Record) -> str:
    """The flat JSON object of one log record: timestamp, level, message, then its fields."""
    entry: dict[str, Any] = {
        "timestamp": record["time"].astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": LEVEL_NAMES.get(record["level"].name, record["level"].name.lower()),
        "message": record["message"],
    }
    entry.update(record["extra"])
    if (failure := _exception(record)) is not None:
        entry["error"] = f"{type(failure).__name__}: {failure}"
        entry["traceback"] = _traceback(failure)
    return redact(json.dumps(entry, default=str, ensure_ascii=False))


def human_line(record: Record) -> str:
    fields = " ".join(f"{key}={value}" for key, value in record["extra"].items())
    stamp = record["time"].astimezone(UTC).strftime("%H:%M:%S")
    line = f"{stamp} {record['level'].name:<7} {record['message']} {fields}".rstrip()
    if (failure := _exception(record)) is not None:
        line += "\n" + _traceback(failure).rstrip()
    return redact(line)


def _exception(record: Record) -> BaseException | None:
    """The exception logged with `logger.opt(exception=...)`, if any: a bug's only witness."""
    return record["exception"].value if record["exception"] is not None else None


def _traceback(failure: BaseException) -> str:
    return "".join(traceback.format_exception(failure))


def configure_logging(level: str = "info", human: bool = False, stream: TextIO | None = None) -> None:
    """Replace loguru's default sink with ours (idempotent)."""
    out = stream or sys.stdout
    render = human_line if human else json_line

    def sink(message: Message) -> None:
        out.write(render(message.record) + "\n")
        out.flush()

    logger.remove()
    logger.enable("montage_vec")  # the package disables its logs for library callers (montage_vec/__init__.py)
    logger.add(sink, level=LOGURU_LEVELS.get(level.lower(), "INFO"), enqueue=False, catch=False)
