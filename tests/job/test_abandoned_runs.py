"""Runs whose process died without recording an outcome (kill -9, an allocator abort) are
marked `abandoned` by the next run of their shard, which holds the shard's lock and so knows
that no live run of the shard can still be `running` (issue 10, defect 6).

On PostgreSQL a real run is killed with SIGKILL while a chunk is provably mid-write (held
at a WriteGate). Elsewhere a `running` row is inserted directly: on DuckDB the file lock
makes a killed run's leftovers exactly that row, and the rules are the same on both
backends. Each abandoned run gets one `montage.batch_job.failed` event, whose id
(md5(type/aggregate/job)) keeps later runs from adding another; a dry run writes nothing,
so it abandons nothing; and runs of another shard are never touched.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from montage_vec.datagen import DEFAULT_AS_OF
from tests.support.cli import CliResult, RunCli, job_id_of, run_once
from tests.support.data import (
    AS_OF,
    checkin,
    days,
    load_checkins,
    load_frame,
    new_id,
    run_rows,
    same_instant,
    synthetic,
)
from tests.support.database import count, execute, sql_literal
from tests.support.interference import WriteGate, job_connections
from tests.support.outbox import FAILED, STARTED, events, expected_event_id, type_counts
from tests.support.processes import JobProcess, job_env, wait_until

ABANDONED_WARNING = "an earlier run of this shard died without an outcome; marked abandoned"
HANG_GUARD = 60.0
DIED_AT = AS_OF - days(1)  # when the fake dead runs started


def left_running(url: str, shard: str = "0/1", started_at: datetime = DIED_AT) -> str:
    """A run log row as a run killed mid-run leaves it (status `running`, no finished_at); its job id."""
    job_id = f"batch-dead-{new_id()[:8]}"
    values = [job_id, shard, "full", started_at, started_at, "running"]
    execute(
        url,
        'INSERT INTO montage_job_runs ("job_id", "shard", "mode", "as_of", "started_at", "status") '
        f"VALUES ({', '.join(sql_literal(value) for value in values)})",
    )
    return job_id


def some_checkins(url: str) -> None:
    """A few users with check-ins (loading them also migrates the database)."""
    load_checkins(url, [checkin(new_id(), AS_OF - days(i + 1), tags=["coffee"]) for i in range(3)])


def runs_by_id(url: str) -> dict[str, dict[str, Any]]:
    return {row["job_id"]: row for row in run_rows(url)}


def abandoned_warnings(result: CliResult) -> list[str]:
    return [entry["run"] for entry in result.logs if entry.get("message") == ABANDONED_WARNING]


def assert_abandoned_by(url: str, dead: str, finder: CliResult) -> dict[str, Any]:
    """`dead` is marked abandoned by the run `finder`, with exactly one failed event; its row."""
    runs = runs_by_id(url)
    finder_id = job_id_of(finder)
    row = runs[dead]
    assert row["status"] == "abandoned", row
    assert row["finished_at"] is not None, row
    assert same_instant(row["finished_at"], runs[finder_id]["started_at"]), "abandoned when the finder started"
    assert finder_id in row["message"], row
    assert runs[finder_id]["status"] == "completed"
    [failed] = events(url, job_id=dead, type=FAILED)
    assert failed["id"] == expected_event_id(FAILED, dead, dead)
    assert failed["aggregate_id"] == dead
    assert failed["payload"]["status"] == "abandoned", failed
    assert same_instant(failed["occurred_at"], row["finished_at"])
    assert dead in abandoned_warnings(finder)
    return row


# -- a run killed with -9 (PostgreSQL: a real process) -------------------------------------------


@pytest.mark.postgres
def test_a_run_killed_mid_chunk_is_abandoned_by_the_next_run(
    postgres_url: str, run_cli: RunCli, tmp_path: Path
) -> None:
    load_frame(postgres_url, synthetic(200))
    args = ("once", "--as-of", DEFAULT_AS_OF.isoformat(), "--batch-size", "50", "--concurrency", "1")
    scratch = tmp_path / "scratch"  # a full run's spool goes here, and a killed run cannot delete it
    scratch.mkdir()
    env = job_env(DATABASE_URL=postgres_url, MONTAGE_SCRATCH_DIR=str(scratch), MONTAGE_FULL_RUN_READ="scan")

    with WriteGate(postgres_url) as gate, JobProcess(*args, env=env, cwd=tmp_path) as job:
        try:
            gate.wait_until_blocked()  # its first chunk waits mid-write
            _, started = job.wait_for_log("Batch job started", timeout=HANG_GUARD)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{job.output()}") from None
        job.kill()  # SIGKILL: nothing of the run's ending is recorded
    dead = started["job_id"]
    wait_until(lambda: job_connections(postgres_url) == 0, "the killed run's connections closed", HANG_GUARD)
    assert [path.name[: len("montage-vec-spool-")] for path in scratch.iterdir()] == ["montage-vec-spool-"]

    [left] = run_rows(postgres_url)
    assert (left["job_id"], left["status"], left["finished_at"]) == (dead, "running", None)
    assert type_counts(events(postgres_url, job_id=dead)) == {STARTED: 1}

    second = run_once(run_cli, postgres_url, as_of=DEFAULT_AS_OF)

    row = assert_abandoned_by(postgres_url, dead, second)
    assert type_counts(events(postgres_url, job_id=dead)) == {STARTED: 1, FAILED: 1}

    # Later runs find nothing left running: the row and its one failed event stay as they were.
    third = run_once(run_cli, postgres_url, as_of=DEFAULT_AS_OF)
    assert abandoned_warnings(third) == []
    assert runs_by_id(postgres_url)[dead] == row
    assert type_counts(events(postgres_url, job_id=dead)) == {STARTED: 1, FAILED: 1}
    assert [r["status"] for r in run_rows(postgres_url)] == ["abandoned", "completed", "completed"]


# -- a row left running (both backends) ----------------------------------------------------------


def test_a_run_left_running_is_abandoned_once(database_url: str, run_cli: RunCli) -> None:
    some_checkins(database_url)
    dead = left_running(database_url)

    second = run_once(run_cli, database_url)

    row = assert_abandoned_by(database_url, dead, second)
    assert len(events(database_url, type=FAILED)) == 1, "only the dead run failed"

    third = run_once(run_cli, database_url)
    assert abandoned_warnings(third) == []
    assert runs_by_id(database_url)[dead] == row
    assert len(events(database_url, job_id=dead, type=FAILED)) == 1
    assert len(events(database_url, type=FAILED)) == 1


def test_a_dry_run_abandons_nothing(database_url: str, run_cli: RunCli) -> None:
    some_checkins(database_url)
    dead = left_running(database_url)

    dry = run_once(run_cli, database_url, "--dry-run")

    assert abandoned_warnings(dry) == []
    [row] = run_rows(database_url)
    assert (row["job_id"], row["status"], row["finished_at"], row["message"]) == (dead, "running", None, None)
    assert events(database_url) == []
    for table in ("montage_job_leases", "montages", "montage_job_watermarks", "montage_retry_users"):
        assert count(database_url, table) == 0, f"a dry run wrote to {table}"

    # The next real run does abandon it.
    assert_abandoned_by(database_url, dead, run_once(run_cli, database_url))


def test_runs_of_another_shard_are_not_touched(database_url: str, run_cli: RunCli) -> None:
    some_checkins(database_url)
    own = left_running(database_url, shard="0/2")
    other = left_running(database_url, shard="1/2")

    first = run_once(run_cli, database_url, env={"MONTAGE_SHARD": "0/2"})

    assert_abandoned_by(database_url, own, first)
    assert abandoned_warnings(first) == [own]
    untouched = runs_by_id(database_url)[other]
    assert (untouched["status"], untouched["finished_at"], untouched["message"]) == ("running", None, None)
    assert events(database_url, job_id=other) == []

    # The other shard's own next run is the one that abandons it.
    assert_abandoned_by(database_url, other, run_once(run_cli, database_url, env={"MONTAGE_SHARD": "1/2"}))
