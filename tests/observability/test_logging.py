"""The log sinks (observability.logging): what a JSON line and a development line hold, the level
filter and the lines it always lets through, redaction, and lines that never cut into a progress bar.

Each test points the real sink at a StringIO through `configure_logging(stream=...)`; the
suite's `default_log_sink` fixture puts loguru's own sink back afterwards.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from loguru import logger
from tqdm import tqdm

from montage_vec.config import register_secret
from montage_vec.observability.logging import ALWAYS_SHOWN, always_shown, configure_logging

MOMENT = datetime(2026, 11, 29, 18, 9, 19, 110000, tzinfo=UTC)
STAMP = r"\d\d:\d\d:\d\d"


def sink(level: str = "debug", human: bool = False) -> io.StringIO:
    out = io.StringIO()
    configure_logging(level, human=human, stream=out)
    return out


def json_lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


# -- JSON ------------------------------------------------------------------------------------------


def test_json_line_has_the_fields_with_moments_in_iso_and_durations_as_configured() -> None:
    out = sink()
    logger.bind(job_id="batch_1_abcdef", at=MOMENT, timeout=timedelta(minutes=30), stages={"extract": 0.1}).info(
        "something happened"
    )
    (line,) = json_lines(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("timestamp"))
    assert line == {
        "level": "info",
        "message": "something happened",
        "job_id": "batch_1_abcdef",
        "at": "2026-11-29T18:09:19.110000+00:00",
        "timeout": "30m",
        "stages": {"extract": 0.1},
    }


def test_json_line_carries_a_logged_exception_with_its_traceback() -> None:
    out = sink()
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        logger.opt(exception=exc).error("the run failed on an unexpected error")
    (line,) = json_lines(out)
    assert line["error"] == "ValueError: bad value"
    assert "Traceback" in line["traceback"] and "raise ValueError" in line["traceback"]


# -- development -----------------------------------------------------------------------------------


def test_development_line_renders_fields_readably() -> None:
    out = sink(human=True)
    logger.bind(
        job_id="batch_1_abcdef",
        stage_seconds={"extract": 0.1, "write": {"copy": 0.2, "upsert": 0.3}},
        empty={},
        users=["a", "b c"],
        pair=(1, 2),
        reason="no capture triggers",
        equation="a=b",
        blank="",
        quoted='say "hi"',
        at=MOMENT,
        timeout=timedelta(hours=1, minutes=30),
        dry_run=False,
        since=None,
        rate=12.5,
        count=3,
    ).info("chunk committed")
    expected = (
        "INFO    chunk committed job_id=batch_1_abcdef stage_seconds.extract=0.1 stage_seconds.write.copy=0.2 "
        'stage_seconds.write.upsert=0.3 empty={} users=["a","b c"] pair=[1,2] reason="no capture triggers" '
        'equation="a=b" blank="" quoted="say \\"hi\\"" at=2026-11-29T18:09:19.110000+00:00 timeout=1h30m '
        "dry_run=false since=null rate=12.5 count=3"
    )
    line = out.getvalue()
    assert re.fullmatch(STAMP + " " + re.escape(expected) + "\n", line), line


def test_development_line_is_one_line_until_its_traceback() -> None:
    out = sink(human=True)
    logger.bind(error="first line\nsecond line").warning("a message\nspanning lines")
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        logger.opt(exception=exc).error("failed")
    first, second, *traceback = out.getvalue().splitlines()
    assert first.endswith('WARNING a message\\nspanning lines error="first line\\nsecond line"'), first
    assert second.endswith("ERROR   failed"), second
    assert traceback[0] == "Traceback (most recent call last):" and traceback[-1] == "RuntimeError: boom"


@pytest.mark.parametrize("human", [False, True], ids=["json", "development"])
def test_every_line_passes_through_redact(human: bool) -> None:
    register_secret("hunter2-Zq9")
    out = sink(human=human)
    logger.bind(url="postgresql://root:pw-Zq9@db/montage", detail={"key": "hunter2-Zq9"}).info("hunter2-Zq9 here")
    text = out.getvalue()
    assert "hunter2-Zq9" not in text and "pw-Zq9" not in text, text
    assert "***" in text


# -- levels ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["debug", "info", "warn", "error", "result"]),
        ("info", ["info", "warn", "error", "result"]),
        ("warn", ["warn", "error", "result"]),
        ("error", ["error", "result"]),
    ],
)
def test_level_filter_always_lets_the_result_through(level: str, shown: list[str]) -> None:
    out = sink(level)
    logger.debug("debug")
    logger.info("info")
    logger.warning("warn")
    logger.error("error")
    always_shown(logger.bind(job_id="batch_1_abcdef")).info("result")
    lines = json_lines(out)
    assert [line["message"] for line in lines] == shown
    result = lines[-1]
    assert result["level"] == "info", "let through at its own level, not raised to an error"
    assert ALWAYS_SHOWN not in result and result["job_id"] == "batch_1_abcdef"


# -- progress bars ---------------------------------------------------------------------------------


def test_a_log_line_clears_a_progress_bar_on_the_same_stream_and_redraws_it() -> None:
    out = sink()
    with tqdm(total=10, desc="full", file=out, mininterval=0) as bar:
        bar.update(3)
        logger.info("a warning-worthy line")
        drawn = out.getvalue()
    # The bar is wiped ("\r", blanks, "\r") before the line, so the line starts a line of its own...
    match = re.search(r"\r *\r(\{.*\})\n", drawn)
    assert match is not None, repr(drawn)
    assert json.loads(match.group(1))["message"] == "a warning-worthy line"
    # ...and the bar comes back after it.
    assert "3/10" in drawn[match.end() :], repr(drawn)
