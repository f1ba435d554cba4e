"""`montage-vec demo`: starts from an empty database or refuses (`--reset` replaces it), and
keeps its listing on stdout and its logs on stderr."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.support.cli import CliResult, RunCli, parse_logs
from tests.support.data import AS_OF, checkin, days, load_checkins, new_id
from tests.support.database import query
from tests.support.processes import job_env, run_job

USERS = 30


def demo(run_cli: RunCli, url: str, *args: str) -> CliResult:
    return run_cli("demo", "--users", str(USERS), *args, env={"DATABASE_URL": url})


def users_in(url: str) -> int:
    return int(query(url, "SELECT count(DISTINCT user_id) AS n FROM checkins")["n"][0])


def test_listing_on_stdout_logs_on_stderr(tmp_path: Path, run_cli: RunCli) -> None:
    url = f"duckdb:///{tmp_path}/fresh/demo.duckdb"  # demo creates the file and its folder

    result = demo(run_cli, url)

    assert result.exit_code == 0, result.everything()
    assert result.stdout.startswith("user ") and " montage(s)" in result.stdout.splitlines()[0]
    assert not any(line.startswith("{") for line in result.stdout.splitlines()), result.stdout
    messages = [entry["message"] for entry in parse_logs(result.stderr)]
    assert "synthetic check-ins loaded" in messages and messages[-1] == "Batch job completed", messages
    assert users_in(url) == USERS
    assert [entry.name for entry in (tmp_path / "fresh").iterdir()] == ["demo.duckdb"], "no build folder left"


def test_refuses_a_database_with_data_and_changes_nothing(tmp_path: Path, run_cli: RunCli) -> None:
    path = tmp_path / "montage.duckdb"
    url = f"duckdb:///{path}"
    assert demo(run_cli, url).exit_code == 0
    before = path.read_bytes()

    again = run_cli("demo", "--users", "10", env={"DATABASE_URL": url})

    assert again.exit_code == 2, again.everything()
    assert str(path) in again.stderr and "--reset" in again.stderr and "checkins" in again.stderr, again.stderr
    assert "Traceback" not in again.everything()
    assert path.read_bytes() == before and users_in(url) == USERS


def test_refuses_check_ins_loaded_by_someone_else(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1))])

    result = demo(run_cli, duckdb_url)

    assert result.exit_code == 2, result.everything()
    assert "holds data (checkins)" in result.stderr, result.stderr
    assert users_in(duckdb_url) == 1


def test_reset_replaces_the_database(tmp_path: Path, run_cli: RunCli) -> None:
    path = tmp_path / "montage.duckdb"
    url = f"duckdb:///{path}"
    assert run_cli("demo", "--users", "50", env={"DATABASE_URL": url}).exit_code == 0

    reset = demo(run_cli, url, "--reset")

    assert reset.exit_code == 0, reset.everything()
    assert users_in(url) == USERS  # not 50: the old data is gone
    runs = query(url, "SELECT count(*) AS n FROM montage_job_runs")["n"][0]
    assert runs == 1, "the run history started over too"
    deleted = [entry["file"] for entry in parse_logs(reset.stderr) if entry["message"] == "deleted for --reset"]
    assert deleted == [str(path)]


def test_reset_deletes_the_write_ahead_log_too(tmp_path: Path, run_cli: RunCli) -> None:
    path = tmp_path / "montage.duckdb"
    wal = tmp_path / "montage.duckdb.wal"
    path.write_bytes(b"not a database")
    wal.write_bytes(b"not a log")

    result = demo(run_cli, f"duckdb:///{path}", "--reset")

    assert result.exit_code == 0, result.everything()
    deleted = [entry["file"] for entry in parse_logs(result.stderr) if entry["message"] == "deleted for --reset"]
    assert deleted == [str(path), str(wal)]
    assert users_in(f"duckdb:///{path}") == USERS


def test_a_migrated_empty_database_is_taken(tmp_path: Path, run_cli: RunCli) -> None:
    url = f"duckdb:///{tmp_path}/montage.duckdb"
    assert run_cli("migrate", env={"DATABASE_URL": url}).exit_code == 0

    result = demo(run_cli, url)

    assert result.exit_code == 0, result.everything()
    assert users_in(url) == USERS


def test_a_file_that_is_no_database_is_refused_naming_reset(tmp_path: Path, run_cli: RunCli) -> None:
    path = tmp_path / "montage.duckdb"
    path.write_bytes(b"not a database")

    result = demo(run_cli, f"duckdb:///{path}")

    assert result.exit_code == 2, result.everything()
    assert str(path) in result.stderr and "--reset" in result.stderr, result.stderr
    assert path.read_bytes() == b"not a database"


def test_reset_refuses_a_file_another_process_has_open(tmp_path: Path, run_cli: RunCli) -> None:
    """A scheduler, a run or a notebook holding the file must not lose it under them: exit 75."""
    path = tmp_path / "montage.duckdb"
    url = f"duckdb:///{path}"
    assert demo(run_cli, url).exit_code == 0
    before = path.read_bytes()
    with duckdb.connect(str(path), read_only=True):  # another process's hold, as DuckDB sees it
        refused = run_job("demo", "--users", str(USERS), "--reset", env=job_env(DATABASE_URL=url))
    assert refused.exit_code == 75, refused.everything()
    assert "in use by another process" in refused.stderr
    assert path.read_bytes() == before


def test_a_demo_that_fails_leaves_no_database_that_looks_healthy(tmp_path: Path, run_cli: RunCli) -> None:
    """Out of memory half-way (the check-ins loaded, the run failing): exit 1 naming the fix, and
    neither the file nor demo's build folder is left, so `health` fails instead of passing."""
    path = tmp_path / "montage.duckdb"
    url = f"duckdb:///{path}"

    result = run_cli("demo", "--users", "2000", env={"DATABASE_URL": url, "DUCKDB_MEMORY_LIMIT": "16MB"})

    assert result.exit_code == 1, result.everything()
    assert "DUCKDB_MEMORY_LIMIT" in result.stderr and "Traceback" not in result.everything(), result.everything()
    assert "synthetic check-ins loaded" in [entry["message"] for entry in parse_logs(result.stderr)]
    assert list(tmp_path.iterdir()) == []
    health = run_cli("health", env={"DATABASE_URL": url, "DUCKDB_MEMORY_LIMIT": "256MB"})
    assert health.exit_code == 1, health.everything()


def test_what_grows_with_the_data_has_no_index(tmp_path: Path, run_cli: RunCli) -> None:
    """DuckDB holds an index whole in memory while it writes the table (sql/duckdb/007 and 008):
    demo's check-ins and the tables a run writes have none, so DUCKDB_MEMORY_LIMIT bounds a run
    at any size."""
    url = f"duckdb:///{tmp_path}/montage.duckdb"
    assert demo(run_cli, url).exit_code == 0

    indexed = query(
        url,
        "SELECT table_name FROM duckdb_indexes() UNION ALL "
        "SELECT table_name FROM duckdb_constraints() WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
    )["table_name"].to_list()
    written = ("checkins", "montages", "montage_items", "montage_events")
    assert not set(written) & set(indexed), indexed
    user_ids = query(url, 'SELECT "user_id"::VARCHAR AS "user_id" FROM "checkins"')["user_id"].to_list()
    assert user_ids == sorted(user_ids), "stored in user order, as runs take users"
