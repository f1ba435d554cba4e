"""A database restart during a run: the run rides it out and completes, its tables whole.

Each test starts a PostgreSQL cluster of its own (tests.support.cluster), holds one chunk
mid-write at a WriteGate, then stops the server (`-m fast`: sessions ended cleanly,
`-m immediate`: a crash) and keeps it down until the run has retried more often than the
old fixed budget of three retries allowed, then starts it again. The run's control session
reconnects and takes the shard's lock again, the chunk is retried on a new connection, and
the run ends with exactly the montages of a clean run.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import pytest

from montage_vec.datagen import DEFAULT_AS_OF
from tests.support.cluster import TemporaryCluster, temporary_cluster
from tests.support.data import expected_synthetic, load_frame, stored_montages, synthetic
from tests.support.database import count, query
from tests.support.interference import WriteGate
from tests.support.processes import JobProcess, job_env

pytestmark = pytest.mark.postgres

USERS = 300
BATCH = 50
RETRIES_BEYOND_THE_OLD_BUDGET = 4  # the old job gave up after three retries (0.5 + 1 + 2 s)
HANG_GUARD = 120.0


@pytest.fixture
def cluster() -> TemporaryCluster:
    with temporary_cluster() as started:
        yield started


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_run_completes_across_a_database_restart(cluster: TemporaryCluster, mode: str, tmp_path: Path) -> None:
    url = cluster.url
    load_frame(url, synthetic(USERS))
    args = ("once", "--as-of", DEFAULT_AS_OF.isoformat(), "--batch-size", str(BATCH), "--concurrency", "2")

    gate = WriteGate(url)
    gate.close()
    with JobProcess(*args, env=job_env(DATABASE_URL=url), cwd=tmp_path) as job:
        try:
            gate.let_one_through()  # chunk 1 commits before the restart
            gate.wait_until_blocked()  # another chunk waits mid-write
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{job.output()}") from None
        finally:
            cluster.stop(mode)  # the gate's connection goes down with the server
            with suppress(Exception):
                gate.open()
        job.wait_for_log(
            "transient error; retrying the chunk on a new connection",
            timeout=HANG_GUARD,
            where=lambda line: line["attempt"] >= RETRIES_BEYOND_THE_OLD_BUDGET,
        )
        cluster.start()
        exit_code = job.wait(timeout=HANG_GUARD)
        result = job.finished()

    assert exit_code == 0, result.everything()
    assert "reconnected; this run holds its shard's lock again" in result.messages()
    summary = result.log("Batch job completed")
    assert (summary["processed"], summary["errors"]) == (USERS, 0)
    assert stored_montages(url) == expected_synthetic(USERS)
    assert count(url, "montage_job_watermarks") == 1
    runs = query(url, "SELECT status FROM montage_job_runs")["status"].to_list()
    assert runs == ["completed"]
