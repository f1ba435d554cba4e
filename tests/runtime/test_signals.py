"""Stopping a real `montage-vec once` subprocess: SIGTERM / SIGINT mid-run and
BATCH_PROCESSING_TIMEOUT, on ~30k synthetic users in PostgreSQL.

A stopped run must exit with 128 + the signal (124 on timeout), log its outcome as the final
line, record itself in the run log, leave the watermark alone and leave only whole chunks
behind, each a full recompute of its users; the next run then finishes the job.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.helpers import query, stored_montages
from tests.runtime._procs import JobProcess, execute, job_env, run_job
from tests.runtime.conftest import SYNTHETIC_USERS, SyntheticDatabase

pytestmark = pytest.mark.postgres

BATCH = 500
CHUNKS = SYNTHETIC_USERS // BATCH


def as_of(db: SyntheticDatabase) -> str:
    return db.spec.as_of.isoformat()


def run_log(url: str) -> list[dict[str, Any]]:
    sql = "SELECT status, mode, processed, watermark_to, message FROM montage_job_runs ORDER BY started_at"
    return query(url, sql).to_dicts()


def watermarks(url: str) -> list[dict[str, Any]]:
    return query(url, "SELECT shard, watermark, job_id FROM montage_job_watermarks").to_dicts()


@pytest.mark.parametrize(
    ("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_stop_signal_mid_run_keeps_whole_chunks(
    synthetic_db: SyntheticDatabase, tmp_path: Any, signum: signal.Signals, exit_code: int
) -> None:
    url = synthetic_db.url
    args = ("once", "--as-of", as_of(synthetic_db), "--batch-size", str(BATCH), "--concurrency", "1")
    with JobProcess(*args, env=job_env(DATABASE_URL=url), cwd=tmp_path) as job:
        job.wait_for_log("chunk committed", timeout=60)
        sent = job.send_signal(signum)
        code = job.wait(timeout=20)
        stopped_after = time.monotonic() - sent
        result = job.finished()

    assert code == exit_code, result.everything()
    assert stopped_after < 10, f"took {stopped_after:.1f}s to stop after {signum.name}"
    assert "Traceback" not in result.stderr
    final = result.logs[-1]
    assert final["message"] == "Batch job failed", result.everything()
    assert final["status"] == "interrupted"
    assert final["error_type"] == "RunInterrupted"
    assert result.log("stop requested; finishing chunks in flight")["signal"] == signum.name

    committed = [entry for entry in result.logs if entry["message"] == "chunk committed"]
    stop_index = result.messages().index("stop requested; finishing chunks in flight")
    after_stop = [entry for entry in result.logs[stop_index:] if entry["message"] == "chunk committed"]
    assert len(after_stop) <= 1, "only the chunk in flight may commit after the signal"
    assert 1 <= len(committed) < CHUNKS, "the run must have been stopped mid-way"
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
    users = synthetic_db.users()
    assert len(users) == SYNTHETIC_USERS
    done = users[:processed]
    stored = stored_montages(url)
    assert stored == synthetic_db.expected(done)
    assert {row[0] for row in stored[0]} <= set(done)

    if signum == signal.SIGTERM:  # once is enough: the follow-up does not depend on the signal
        assert_follow_up_completes(synthetic_db, tmp_path, already_stored=len(stored[0]))


def assert_follow_up_completes(synthetic_db: SyntheticDatabase, tmp_path: Any, already_stored: int) -> None:
    """A following run completes every user and moves the watermark."""
    url = synthetic_db.url
    follow_up = run_job("once", "--as-of", as_of(synthetic_db), env=job_env(DATABASE_URL=url), cwd=tmp_path)
    assert follow_up.exit_code == 0, follow_up.everything()
    completed = follow_up.log("Batch job completed")
    assert (completed["mode"], completed["processed"], completed["errors"]) == ("full", SYNTHETIC_USERS, 0)
    everyone = synthetic_db.expected()
    assert stored_montages(url) == everyone
    # The interrupted run's chunks were already right: only the other users' montages were written.
    assert completed["montages_written"] == len(everyone[0]) - already_stored
    assert [run["status"] for run in run_log(url)] == ["interrupted", "completed"]
    assert len(watermarks(url)) == 1


def test_processing_timeout_exits_124_and_leaves_the_watermark(synthetic_db: SyntheticDatabase, tmp_path: Any) -> None:
    url = synthetic_db.url
    # An earlier run's watermark: the timed-out run must leave it exactly as it was.
    execute(
        url,
        "INSERT INTO montage_job_watermarks (shard, watermark, job_id, updated_at) "
        "VALUES ('0/1', '2025-01-01T00:00:00Z', 'batch_earlier', '2025-01-01T00:05:00Z')",
    )
    before = watermarks(url)
    env = job_env(DATABASE_URL=url, BATCH_PROCESSING_TIMEOUT="1s")
    started = time.monotonic()
    result = run_job(
        "once", "--as-of", as_of(synthetic_db), "--batch-size", str(BATCH), "--concurrency", "1",
        env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - started

    assert result.exit_code == 124, result.everything()
    assert elapsed < 20, f"a 1s timeout took {elapsed:.1f}s to end the process"
    final = result.logs[-1]
    assert (final["message"], final["status"], final["error_type"]) == ("Batch job failed", "timeout", "RunInterrupted")
    started_line = result.log("Batch job started")
    assert started_line["mode"] == "incremental"
    assert final["processed"] < started_line["candidates"]
    assert final["processed"] % BATCH == 0

    runs = run_log(url)
    assert [(run["status"], run["processed"], run["watermark_to"]) for run in runs] == [
        ("timeout", final["processed"], None)
    ]
    assert watermarks(url) == before
