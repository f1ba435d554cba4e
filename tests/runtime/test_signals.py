"""Stopping `montage-vec once`: SIGTERM / SIGINT to a real subprocess mid-run, and
BATCH_PROCESSING_TIMEOUT, on synthetic users in PostgreSQL.

A stopped run must exit with 128 + the signal (124 on timeout), log its outcome as the final
line, record itself in the run log, leave the watermark alone and leave only whole chunks
behind, each a full recompute of its users; the next run then finishes the job.

The signal arrives at a known point: chunk 1 committed, chunk 2 held mid-write at a
WriteGate, later chunks not started; so "mid-run" never depends on the machine's speed.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import RunCli, run_once
from tests.support.data import SyntheticDatabase, stored_montages, watermarks
from tests.support.database import execute, query
from tests.support.interference import WriteGate
from tests.support.processes import JobProcess, job_env

pytestmark = pytest.mark.postgres

BATCH = 200
STOP_REQUESTED = "stop requested; finishing chunks in flight"


def run_log(url: str) -> list[dict[str, Any]]:
    sql = "SELECT status, mode, processed, watermark_to, message FROM montage_job_runs ORDER BY started_at"
    return query(url, sql).to_dicts()


@pytest.mark.parametrize(
    ("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
@pytest.mark.slow
def test_stop_signal_mid_run_keeps_whole_chunks(
    synthetic_db: SyntheticDatabase, tmp_path: Path, run_cli: RunCli, signum: signal.Signals, exit_code: int
) -> None:
    url = synthetic_db.url
    users = synthetic_db.user_ids()
    chunks = -(-len(users) // BATCH)
    assert chunks >= 3, "chunk 1 commits, chunk 2 is in flight, the rest must never start"
    args = ("once", "--as-of", synthetic_db.as_of.isoformat(), "--batch-size", str(BATCH), "--concurrency", "1")

    with WriteGate(url) as gate, JobProcess(*args, env=job_env(DATABASE_URL=url), cwd=tmp_path) as job:
        gate.let_one_through()  # chunk 1 commits; chunk 2 waits at the gate, mid-write
        job.wait_for_log("chunk committed", timeout=60)
        gate.wait_until_blocked()
        job.send_signal(signum)
        job.wait_for_log(STOP_REQUESTED, timeout=60)
        gate.open()  # chunk 2, in flight, may finish; no chunk may start after the signal
        code = job.wait(timeout=60)
        result = job.finished()

    assert code == exit_code, result.everything()
    assert "Traceback" not in result.stderr
    final = result.logs[-1]
    assert final["message"] == "Batch job failed", result.everything()
    assert final["status"] == "interrupted"
    assert final["error_type"] == "RunInterrupted"
    assert result.log(STOP_REQUESTED)["signal"] == signum.name

    committed = [entry for entry in result.logs if entry["message"] == "chunk committed"]
    stop_index = result.messages().index(STOP_REQUESTED)
    after_stop = [entry for entry in result.logs[stop_index:] if entry["message"] == "chunk committed"]
    assert committed[0]["chunk"] == 1 and committed[0] not in after_stop
    assert len(after_stop) <= 1, "only the chunk in flight may commit after the signal"
    assert 1 <= len(committed) < chunks, "the run must have been stopped mid-way"
    processed = sum(entry["users"] for entry in committed)
    assert processed == BATCH * len(committed) == final["processed"]

    # The run log says interrupted; the watermark was never written.
    runs = run_log(url)
    assert [(run["status"], run["mode"], run["processed"], run["watermark_to"]) for run in runs] == [
        ("interrupted", "full", processed, None)
    ]
    assert "interrupted" in runs[0]["message"]
    assert watermarks(url) == []

    # Exactly the committed chunks' users have montages, each exactly a full recompute.
    done = users[:processed]
    stored = stored_montages(url)
    assert stored == synthetic_db.expected(done)
    assert {row[0] for row in stored[0]} <= set(done)

    if signum == signal.SIGTERM:  # once is enough: the follow-up does not depend on the signal
        assert_follow_up_completes(synthetic_db, run_cli, already_stored=len(stored[0]))


def assert_follow_up_completes(synthetic_db: SyntheticDatabase, run_cli: RunCli, already_stored: int) -> None:
    """A following run completes every user and moves the watermark."""
    url = synthetic_db.url
    follow_up = run_once(run_cli, url, as_of=synthetic_db.as_of)
    completed = follow_up.log("Batch job completed")
    assert (completed["mode"], completed["processed"], completed["errors"]) == ("full", synthetic_db.users, 0)
    everyone = synthetic_db.expected()
    assert stored_montages(url) == everyone
    # The interrupted run's chunks were already right: only the other users' montages were written.
    assert completed["montages_written"] == len(everyone[0]) - already_stored
    assert [run["status"] for run in run_log(url)] == ["interrupted", "completed"]
    assert len(watermarks(url)) == 1


def test_processing_timeout_exits_124_and_leaves_the_watermark(
    synthetic_db: SyntheticDatabase, run_cli: RunCli
) -> None:
    url = synthetic_db.url
    # An earlier run's watermark: the timed-out run must leave it exactly as it was.
    execute(
        url,
        "INSERT INTO montage_job_watermarks (shard, watermark, job_id, updated_at) "
        "VALUES ('0/1', '2025-01-01T00:00:00Z', 'batch_earlier', '2025-01-01T00:05:00Z')",
    )
    before = watermarks(url)
    # 1 ms runs out long before the first of several chunks is done, so the run stops with
    # chunks never started; in this process, since nothing here needs a process of its own.
    env = {"DATABASE_URL": url, "BATCH_PROCESSING_TIMEOUT": "1ms"}
    args = ("--as-of", synthetic_db.as_of.isoformat(), "--batch-size", str(BATCH), "--concurrency", "1")
    result = run_cli("once", *args, env=env)

    assert result.exit_code == 124, result.everything()
    final = result.logs[-1]
    assert (final["message"], final["status"], final["error_type"]) == ("Batch job failed", "timeout", "RunInterrupted")
    started_line = result.log("Batch job started")
    assert started_line["mode"] == "incremental"
    assert final["processed"] < started_line["candidates"]
    assert final["processed"] % BATCH == 0
    assert "timeout" in result.stderr

    runs = run_log(url)
    assert [(run["status"], run["processed"], run["watermark_to"]) for run in runs] == [
        ("timeout", final["processed"], None)
    ]
    assert watermarks(url) == before
