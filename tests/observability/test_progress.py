"""The progress bar (observability.progress): what it draws on a terminal, and a run with it on,
which logs no chunk lines but still its summary.

The bar writes to a StringIO standing in for the terminal: tqdm draws the same text there
(`\\r`-separated frames), only with ASCII blocks.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from loguru import logger

from montage_vec.config import load_settings
from montage_vec.errors import RunInterrupted
from montage_vec.job.chunks import ChunkResult
from montage_vec.job.control import RunControl
from montage_vec.job.plan import RunOptions
from montage_vec.job.summary import RunSummary, finish_summary, log_outcome, new_summary
from montage_vec.observability.logging import configure_logging
from montage_vec.observability.metrics import JobMetrics
from montage_vec.observability.progress import ProgressBar
from montage_vec.runtime.wiring import run_once
from tests.support.data import AS_OF, checkin, days, load_checkins, new_id


def frames(terminal: io.StringIO) -> list[str]:
    """What the bar showed, frame by frame (tqdm redraws its line after a carriage return)."""
    return [frame.strip() for frame in re.split(r"[\r\n]", terminal.getvalue()) if frame.strip()]


def started_summary(candidates: int, batch_size: int = 5) -> RunSummary:
    """A summary as the runner leaves it once it found its candidates and chunked them."""
    summary = new_summary(load_settings(), RunOptions(full=True))
    summary.candidates = candidates
    summary.chunks_total = -(-candidates // batch_size)
    return summary


def finish_chunk(bar: ProgressBar, summary: RunSummary, users: int, failed: int = 0) -> None:
    """What the runner does when a chunk finishes: add it up, then tell the observers."""
    result = ChunkResult(users=users, successful=users - failed, failures=[(new_id(), "bad") for _ in range(failed)])
    summary.add_chunk(result)
    bar.chunk_finished(summary, result)


def test_bar_counts_users_against_the_candidates_with_chunks_and_errors() -> None:
    terminal = io.StringIO()
    bar = ProgressBar(terminal)
    summary = started_summary(candidates=10, batch_size=4)
    bar.run_started(summary)
    finish_chunk(bar, summary, 4)
    finish_chunk(bar, summary, 4, failed=1)
    finish_chunk(bar, summary, 2)
    bar.run_finished(finish_summary(summary, None))

    last = frames(terminal)[-1]
    assert last.startswith("full: 100%"), last
    assert "10/10" in last and "users/s" in last, last
    assert "chunks 3/3, errors 1" in last, last
    assert terminal.getvalue().endswith("\n"), "the finished bar stays on its own line"


def test_bar_of_a_run_that_did_not_complete_says_how_it_ended() -> None:
    terminal = io.StringIO()
    bar = ProgressBar(terminal)
    summary = started_summary(candidates=10, batch_size=5)
    summary.dry_run = True
    bar.run_started(summary)
    finish_chunk(bar, summary, 5)
    error = RunInterrupted("stopped", status="interrupted", exit_code=130)
    bar.run_finished(finish_summary(summary, error))
    last = frames(terminal)[-1]
    assert last.startswith("full (dry run) (interrupted):  50%"), last
    assert "5/10" in last and "chunks 1/2" in last, last


def test_bar_of_a_run_that_never_started_draws_nothing() -> None:
    terminal = io.StringIO()
    ProgressBar(terminal).run_finished(finish_summary(started_summary(0), RuntimeError("no store")))
    assert terminal.getvalue() == ""


def seeded(url: str, users: int) -> None:
    ids = [new_id() for _ in range(users)]
    load_checkins(url, [checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for user in ids for i in (0, 1)])


@pytest.mark.parametrize("progress", [False, True], ids=["lines", "bar"])
def test_a_run_with_the_bar_on_logs_no_chunk_lines_but_its_summary(
    duckdb_url: str, capsys: pytest.CaptureFixture[str], progress: bool
) -> None:
    seeded(duckdb_url, users=6)
    settings = load_settings(database_url=duckdb_url, montage_batch_size=2)
    logs = io.StringIO()
    configure_logging("info", stream=logs)
    capsys.readouterr()

    summary = run_once(settings, RunOptions(as_of=AS_OF), RunControl(), JobMetrics(), progress=progress)
    log_outcome(summary)
    logger.remove()  # before reading: nothing else may write to the sink meanwhile

    assert summary.status == "completed", summary.error
    messages = [json.loads(line)["message"] for line in logs.getvalue().splitlines()]
    assert messages[0] == "Batch job started" and messages[-1] == "Batch job completed"
    assert messages.count("chunk committed") == (0 if progress else 3)
    bar = frames(io.StringIO(capsys.readouterr().err))
    if progress:
        assert bar and "6/6" in bar[-1] and "chunks 3/3" in bar[-1], bar
    else:
        assert bar == []
