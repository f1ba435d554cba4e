"""`montage-vec once`: every line of a run carries its job id, the configuration line included.
(Flags: tests/cli/test_options.py; files it must not create: test_no_surprising_writes.py.)"""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import RunCli
from tests.support.data import AS_OF, checkin, days, load_checkins, new_id
from tests.support.database import query


def test_every_line_of_a_debug_run_carries_the_runs_job_id(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(i + 1), tags=["tea"]) for i in range(3)])
    env = {"DATABASE_URL": duckdb_url, "DEBUG": "true"}

    result = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)

    assert result.exit_code == 0, result.everything()
    assert result.messages()[0] == "effective configuration", result.messages()
    without = [entry["message"] for entry in result.logs if "job_id" not in entry]
    assert not without, f"lines without job_id: {without}"
    [job_id] = {entry["job_id"] for entry in result.logs}
    assert query(duckdb_url, "SELECT job_id FROM montage_job_runs")["job_id"].to_list() == [job_id]


def test_a_run_that_cannot_start_names_its_job_id_too(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("once", env={"DATABASE_URL": f"duckdb:///{tmp_path}/missing.duckdb", "DEBUG": "true"})

    assert result.exit_code == 3, result.everything()
    configuration, failed = result.log("effective configuration"), result.log("Batch job failed")
    assert configuration["job_id"] == failed["job_id"]


def test_disabled_batch_processing_runs_nothing(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1))])
    env = {"DATABASE_URL": duckdb_url, "ENABLE_BATCH_PROCESSING": "false", "DEBUG": "true"}

    result = run_cli("once", env=env)

    assert result.exit_code == 0, result.everything()
    assert result.messages()[-1].startswith("batch processing is disabled"), result.messages()
    assert all("job_id" not in entry for entry in result.logs), "no run, no job id"
    assert query(duckdb_url, "SELECT count(*) AS n FROM montage_job_runs")["n"][0] == 0
