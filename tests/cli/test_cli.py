"""The command line: migrate, show, failure messages and exit codes, and the installed scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import duckdb
import pytest

from montage_vec.config import load_settings
from montage_vec.stores import open_store
from tests.helpers import checkin, days, load_checkins, new_id, query
from tests.job._support import AS_OF, montage_ids

SECRET = "secretpw"
EXIT_CONFIG = 2  # ConfigError
EXIT_NOT_MIGRATED = 3  # SchemaNotMigratedError
RUN_MESSAGES = ("Batch job started", "chunk committed", "Batch job completed")


def scripts_dir() -> Path:
    return Path(sys.executable).parent


def everything(result: Any) -> str:
    return result.stdout + result.stderr


# -- migrate and show ----------------------------------------------------------------------------


def test_migrate_twice_is_fine(database_url: str, run_cli) -> None:
    env = {"DATABASE_URL": database_url}
    first = run_cli("migrate", env=env)
    second = run_cli("migrate", env=env)
    assert (first.exit_code, second.exit_code) == (0, 0), first.stderr + second.stderr
    applied = first.log("schema migrated")["applied"]
    assert applied == sorted(applied) and applied[:3] == ["001_checkins", "002_montages", "003_job_state"]
    assert second.log("schema migrated")["applied"] == []
    tables = query(
        database_url,
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_name IN "
        "('checkins', 'montages', 'montage_items', 'montage_job_runs', 'montage_job_watermarks', "
        "'montage_retry_users')",
    )
    assert tables["n"][0] == 6
    # A migrated, empty database runs fine.
    empty = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)
    assert empty.exit_code == 0, empty.stderr
    assert empty.log("Batch job completed")["processed"] == 0


def test_show_prints_the_users_montages(database_url: str, run_cli) -> None:
    user, stranger = new_id(), new_id()
    rows = [checkin(user, AS_OF - days(i + 1), tags=["Coffee"], text_content=f"cup {i}") for i in range(3)]
    load_checkins(database_url, rows)
    env = {"DATABASE_URL": database_url}
    assert run_cli("once", "--as-of", AS_OF.isoformat(), env=env).exit_code == 0
    ids = montage_ids(database_url)

    shown = run_cli("show", "--user-id", user, env=env)
    assert shown.exit_code == 0, shown.stderr
    text = [line for line in shown.stdout.splitlines() if not line.startswith("{")]
    assert text[0] == f"user {user}: 2 montage(s)"
    assert f"general: 3 item(s)  [id {ids[(user, 'general', '')]}]" in text
    # The third-newest coffee (AS_OF - 3 days) leaves the 30-day window on June 28.
    coffee_id = ids[(user, "interest", "coffee")]
    assert f"interest 'coffee': 3 item(s), valid until 2026-06-28 00:00  [id {coffee_id}]" in text
    item_lines = [line for line in text if line.startswith("    ")]
    assert len(item_lines) == 6
    assert item_lines[0].split()[:5] == ["0", "2026-05-31", "00:00", "text", "cup"]

    shouted = run_cli("show", "--user-id", user.upper(), env=env)
    assert shouted.exit_code == 0, shouted.stderr
    assert ": 2 montage(s)" in shouted.stdout

    nobody = run_cli("show", "--user-id", stranger, env=env)
    assert nobody.exit_code == 0
    assert f"user {stranger} has no montages" in nobody.stdout


@pytest.mark.postgres
def test_show_accepts_an_upper_case_user_id_on_postgresql(postgres_url: str, run_cli) -> None:
    user = new_id()
    load_checkins(postgres_url, [checkin(user, AS_OF - days(1))])
    assert run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": postgres_url}).exit_code == 0
    shown = run_cli("show", "--user-id", user.upper(), env={"DATABASE_URL": postgres_url})
    assert shown.exit_code == 0, shown.stderr
    assert ": 1 montage(s)" in shown.stdout


def test_show_rejects_a_user_id_that_is_not_a_uuid(database_url: str, run_cli) -> None:
    load_checkins(database_url, [checkin(new_id(), AS_OF - days(1))])
    assert run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": database_url}).exit_code == 0
    result = run_cli("show", "--user-id", "alice", env={"DATABASE_URL": database_url})
    assert "Traceback" not in everything(result)
    assert "unexpected" not in result.stderr
    assert result.exit_code == EXIT_CONFIG, everything(result)
    assert "not a uuid" in result.stderr and "alice" in result.stderr


# -- failures --------------------------------------------------------------------------------------


def test_once_on_unmigrated_database_says_migrate(database_url: str, run_cli) -> None:
    result = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": database_url})
    assert result.exit_code == EXIT_NOT_MIGRATED
    assert "montage-vec migrate" in result.stderr
    assert "Traceback" not in everything(result)
    assert result.log("Batch job failed")["error_type"] == "SchemaNotMigratedError"


def test_show_on_unmigrated_database_says_migrate(duckdb_url: str, run_cli) -> None:
    result = run_cli("show", "--user-id", new_id(), env={"DATABASE_URL": duckdb_url})
    assert result.exit_code == EXIT_NOT_MIGRATED
    assert "migrate" in result.stderr
    assert "Traceback" not in everything(result)


@pytest.mark.parametrize(
    ("variable", "value", "args"),
    [
        ("MONTAGE_BATCH_SIZE", "-1", ()),
        ("MONTAGE_MIN_INTEREST_OCCURRENCE", "0", ()),
        ("DATABASE_URL", f"mysql://u:{SECRET}@h/db", ()),
        ("MONTAGE_BATCH_SIZE", None, ("--batch-size", "0")),
        ("MAX_CONCURRENT_GENERATIONS", None, ("--concurrency", "0")),
        ("DATABASE_URL", "duckdb:///", ()),
        ("MONTAGE_SHARD", "2/2", ()),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(
    run_cli, tmp_path: Path, variable: str, value: str | None, args: tuple[str, ...]
) -> None:
    # A password in DATABASE_URL must never be echoed, whichever setting is wrong.
    env = {"DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:1/db"}
    if value is not None:
        env[variable] = value
    result = run_cli("once", "--as-of", AS_OF.isoformat(), *args, env=env)
    assert result.exit_code == EXIT_CONFIG, everything(result)
    assert variable in result.stderr
    assert SECRET not in everything(result)
    assert "Traceback" not in everything(result)


def test_unreachable_postgresql_fails_without_leaking_the_password(run_cli) -> None:
    result = run_cli(
        "once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:1/db"}
    )
    assert result.exit_code == 1, everything(result)
    assert result.stderr.startswith("montage-vec: ")
    assert SECRET not in everything(result)
    assert "Traceback" not in everything(result)


@pytest.mark.parametrize("as_of", ["nonsense", "2026-13-01"])
def test_bad_as_of_fails_clearly(duckdb_url: str, run_cli, as_of: str) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1))])
    result = run_cli("once", "--as-of", as_of, env={"DATABASE_URL": duckdb_url})
    assert result.exit_code == EXIT_CONFIG, everything(result)
    assert "--as-of" in result.stderr and "ISO 8601" in result.stderr
    assert "Traceback" not in everything(result)
    assert query(duckdb_url, "SELECT count(*) AS n FROM montage_job_runs")["n"][0] == 0


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("2026-06-01T02:00:00", "2026-06-01T02:00:00+00:00"),  # no offset: UTC
        ("2026-06-01T02:00:00+02:00", "2026-06-01T00:00:00+00:00"),
        ("2026-06-01T00:00:00Z", "2026-06-01T00:00:00+00:00"),
    ],
)
def test_as_of_is_taken_in_utc(duckdb_url: str, run_cli, given: str, meant: str) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1))])
    result = run_cli("once", "--as-of", given, env={"DATABASE_URL": duckdb_url})
    assert result.exit_code == 0, result.stderr
    assert result.log("Batch job started")["as_of"] == meant
    [stored] = query(duckdb_url, "SELECT as_of FROM montage_job_runs")["as_of"].to_list()
    assert stored.isoformat() == meant


def test_user_id_that_is_not_a_uuid(duckdb_url: str, run_cli) -> None:
    result = run_cli("once", "--user-id", "alice", env={"DATABASE_URL": duckdb_url})
    assert result.exit_code == EXIT_CONFIG, everything(result)
    assert "USER_ID_FILTER" in result.stderr and "alice" in result.stderr


# -- the installed console scripts -------------------------------------------------------------------


def _run_script(name: str, *args: str, cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [str(scripts_dir() / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_console_script_migrate_demo_once(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path}/demo.duckdb"
    migrate = _run_script("montage-vec", "migrate", cwd=tmp_path, database_url=url)
    assert migrate.returncode == 0, migrate.stderr
    assert [entry["message"] for entry in _json_lines(migrate.stdout)] == ["schema migrated"]

    demo = _run_script("montage-vec", "demo", "--users", "200", cwd=tmp_path, database_url=url)
    assert demo.returncode == 0, demo.stderr
    demo_logs = _json_lines(demo.stdout)
    loaded = next(entry for entry in demo_logs if entry["message"] == "synthetic check-ins loaded")
    assert loaded["users"] == 200
    demo_runs = [entry for entry in demo_logs if entry["message"] in RUN_MESSAGES]
    assert demo_runs and all(entry["job_id"].startswith("batch_") for entry in demo_runs)
    assert demo_runs[-1]["message"] == "Batch job completed" and demo_runs[-1]["processed"] == 200
    assert "montage(s)" in demo.stdout  # the busiest user's montages are shown

    once = _run_script("montage-vec", "once", cwd=tmp_path, database_url=url)
    assert once.returncode == 0, once.stderr
    lines = [line for line in once.stdout.splitlines() if line.strip()]
    logs = [json.loads(line) for line in lines]  # every line is one JSON object...
    missing = [entry["message"] for entry in logs if "job_id" not in entry]
    assert not missing, f"lines of the run without job_id: {missing}"  # ...and carries the job id
    runs = [entry for entry in logs if entry["message"] in RUN_MESSAGES]
    assert [runs[0]["message"], runs[-1]["message"]] == ["Batch job started", "Batch job completed"]
    job_ids = {entry["job_id"] for entry in runs}
    assert len(job_ids) == 1 and job_ids != {demo_runs[-1]["job_id"]}
    assert runs[0]["mode"] == "incremental"
    assert runs[-1]["status"] == "completed" and runs[-1]["errors"] == 0
    assert all({"timestamp", "level", "message"} <= set(entry) for entry in logs)


def test_montage_batch_alias_exists(tmp_path: Path) -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["montage-batch"] == scripts["montage-vec"] == "montage_vec.cli:main"
    url = f"duckdb:///{tmp_path}/alias.duckdb"
    migrated = _run_script("montage-batch", "migrate", cwd=tmp_path, database_url=url)
    assert migrated.returncode == 0, migrated.stderr
    assert _json_lines(migrated.stdout)[-1]["message"] == "schema migrated"
    assert (tmp_path / "alias.duckdb").exists()


def test_second_run_on_a_locked_duckdb_file_exits_75(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    url = f"duckdb:///{path}"
    load_checkins(url, [])  # migrated, empty
    with duckdb.connect(str(path)):  # another process holds the file read-write
        locked = _run_script("montage-vec", "once", cwd=tmp_path, database_url=url)
    assert locked.returncode == 75, locked.stderr
    assert "in use" in locked.stderr
    assert "Traceback" not in locked.stdout + locked.stderr
    assert query(url, "SELECT count(*) AS n FROM montage_job_runs")["n"][0] == 0


@pytest.mark.postgres
def test_second_run_on_a_locked_postgresql_shard_exits_75(postgres_url: str, run_cli) -> None:
    user = new_id()
    load_checkins(postgres_url, [checkin(user, AS_OF - days(1))])
    env = {"DATABASE_URL": postgres_url}
    with open_store(load_settings(database_url=postgres_url).database()) as store:
        holder = store.session()
        try:
            assert holder.try_lock_run("0/1")  # a run in progress on shard 0/1
            locked = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)
            other_shard = run_cli("once", "--as-of", AS_OF.isoformat(), env={**env, "MONTAGE_SHARD": "1/2"})
        finally:
            holder.close()
    assert locked.exit_code == 75, everything(locked)
    assert "lock" in locked.stderr
    assert other_shard.exit_code == 0, "the lock is per shard"
    # The locked-out run touched nothing: the only run recorded is the other shard's.
    assert query(postgres_url, "SELECT shard FROM montage_job_runs")["shard"].to_list() == ["1/2"]
    after = run_cli("once", "--as-of", AS_OF.isoformat(), env={**env, "MONTAGE_SHARD": "0/1"})
    assert after.exit_code == 0, "released when the holder disconnects"
