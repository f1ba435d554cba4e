"""Log sinks: one JSON object per line on stdout, or a readable format in development.

Only the CLI entry point calls `configure_logging`; library code just uses loguru's
`logger`. A run's `job_id` comes from `logger.contextualize` (job.runner, runtime.wiring),
so that every line of the run carries it, the library's own lines included. Every line
passes through `redact`, the last guard against a secret reaching a log.

A line bound with `always_shown` passes whatever LOG_LEVEL says: a run's summary line is
its result, not chatter, and `LOG_LEVEL=error` must not hide that a run completed.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from montage_vec.config.durations import format_duration
from montage_vec.config.secrets import redact

if TYPE_CHECKING:
    from loguru import Logger, Message, Record

LEVEL_NAMES = {"TRACE": "debug", "DEBUG": "debug", "INFO": "info", "SUCCESS": "info", "WARNING": "warn"}
LOGURU_LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "warning": "WARNING", "error": "ERROR"}
# The extra field that lets a line through the level filter; never printed itself.
ALWAYS_SHOWN = "always_shown"


def always_shown(log: Logger) -> Logger:
    """`log`, bound so that its lines pass the sink's level filter (at their own level)."""
    return log.bind(**{ALWAYS_SHOWN: True})


def json_line(record: Record) -> str:
    """The flat JSON object of one log record: timestamp, level, message, then its fields."""
    entry: dict[str, Any] = {
        "timestamp": record["time"].astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": LEVEL_NAMES.get(record["level"].name, record["level"].name.lower()),
        "message": record["message"],
    }
    entry.update(_fields(record))
    if (failure := _exception(record)) is not None:
        entry["error"] = f"{type(failure).__name__}: {failure}"
        entry["traceback"] = _traceback(failure)
    return redact(json.dumps(entry, default=_plain, ensure_ascii=False))


def human_line(record: Record) -> str:
    """`12:00:01 INFO    message key=value ...` on one line, plus the traceback when there is one.

    Nested mappings read as dotted keys (`stage_seconds.extract=0.1`), sequences as compact
    JSON, strings that would split the line or the pair are quoted, datetimes are ISO 8601
    and durations read as settings take them (`30m`).
    """
    fields = " ".join(f"{key}={_human(value)}" for key, value in _flattened(_fields(record)))
    stamp = record["time"].astimezone(UTC).strftime("%H:%M:%S")
    message = _one_line(record["message"])
    line = f"{stamp} {record['level'].name:<7} {message} {fields}".rstrip()
    if (failure := _exception(record)) is not None:
        line += "\n" + _traceback(failure).rstrip()
    return redact(line)


def _fields(record: Record) -> dict[str, Any]:
    return {key: value for key, value in record["extra"].items() if key != ALWAYS_SHOWN}


def _flattened(fields: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf; an empty mapping stays a value, so its key still shows."""
    for key, value in fields.items():
        if isinstance(value, Mapping) and value:
            yield from _flattened(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _human(value: Any) -> str:
    """One field's value as it reads in a development log line."""
    if value is None or isinstance(value, bool | Mapping | list | tuple):
        return json.dumps(value, default=_plain, ensure_ascii=False, separators=(",", ":"))
    text = _plain(value) if isinstance(value, date | timedelta) else str(value)
    needs_quotes = not text or any(character.isspace() or character in '"=' for character in text)
    return json.dumps(text, ensure_ascii=False) if needs_quotes else text


def _plain(value: Any) -> str:
    """A value JSON has no type for: ISO 8601 for moments, the settings' notation for durations."""
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, timedelta):
        return format_duration(value)
    return str(value)


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


@contextmanager
def _progress_bars_cleared(out: TextIO) -> Iterator[None]:
    """Take progress bars (observability.progress) off the terminal while a line is written.

    tqdm is in sys.modules only once a bar may exist: plain runs never import it for this.
    """
    bars = sys.modules.get("tqdm")
    if bars is None:
        yield
        return
    with bars.tqdm.external_write_mode(file=out):
        yield


def _exception(record: Record) -> BaseException | None:
    """The exception logged with `logger.opt(exception=...)`, if any: a bug's only witness."""
    return record["exception"].value if record["exception"] is not None else None


def _traceback(failure: BaseException) -> str:
    return "".join(traceback.format_exception(failure))


def configure_logging(level: str = "info", human: bool = False, stream: TextIO | None = None) -> None:
    """Replace loguru's default sink with ours (idempotent).

    Lines below `level` are dropped unless bound with `always_shown`; those are never below
    INFO, so the sink need not see debug records unless `level` asks for them.
    """
    out = stream or sys.stdout
    render = human_line if human else json_line
    threshold = logger.level(LOGURU_LEVELS.get(level.lower(), "INFO")).no

    def shown(record: Record) -> bool:
        return record["level"].no >= threshold or record["extra"].get(ALWAYS_SHOWN) is True

    def sink(message: Message) -> None:
        with _progress_bars_cleared(out):
            out.write(render(message.record) + "\n")
            out.flush()

    logger.remove()
    logger.enable("montage_vec")  # the package disables its logs for library callers (montage_vec/__init__.py)
    lowest = min(threshold, logger.level("INFO").no)
    logger.add(sink, level=lowest, filter=shown, enqueue=False, catch=False)
