"""The command line: migrate, show, failure messages and exit codes, and the installed scripts."""

from __future__ import annotations

import json
from importlib.metadata import entry_points, version
from pathlib import Path

import duckdb
import pytest

from tests.support.cli import RunCli, parse_logs
from tests.support.data import AS_OF, checkin, days, load_checkins, montage_ids, new_id
from tests.support.database import execute, query
from tests.support.processes import job_env, run_job

SECRET = "secretpw"
EXIT_CONFIG = 2  # ConfigError
EXIT_NOT_MIGRATED = 3  # SchemaNotMigratedError
RUN_MESSAGES = ("Batch job started", "chunk committed", "Batch job completed")


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


@pytest.mark.parametrize(
    ("stored", "shown"),
    [("infinity", "valid until infinity"), ("10000-01-01 00:00:00+00", "valid until 10000-01-01 00:00")],
    ids=["infinity", "year 10000"],
)
def test_show_prints_a_valid_until_that_no_python_datetime_holds(
    database_url: str, run_cli, stored: str, shown: str
) -> None:
    """Regression: `show` crashed (OverflowError) turning such a stored timestamp into a Python
    datetime; it prints the database's own text instead."""
    user = new_id()
    load_checkins(database_url, [checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for i in range(3)])
    env = {"DATABASE_URL": database_url}
    assert run_cli("once", "--as-of", AS_OF.isoformat(), env=env).exit_code == 0
    execute(database_url, f"UPDATE montages SET valid_until = TIMESTAMPTZ '{stored}' WHERE kind = 'interest'")

    result = run_cli("show", "--user-id", user, env=env)

    assert result.exit_code == 0, result.everything()
    assert f"interest 'coffee': 3 item(s), {shown}  [id " in result.stdout, result.stdout
    assert "general: 3 item(s)  [id " in result.stdout, result.stdout


def test_show_rejects_a_user_id_that_is_not_a_uuid(database_url: str, run_cli) -> None:
    load_checkins(database_url, [checkin(new_id(), AS_OF - days(1))])
    assert run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": database_url}).exit_code == 0
    result = run_cli("show", "--user-id", "alice", env={"DATABASE_URL": database_url})
    assert "Traceback" not in result.everything()
    assert "unexpected" not in result.stderr
    assert result.exit_code == EXIT_CONFIG, result.everything()
    assert "not a uuid" in result.stderr and "alice" in result.stderr


# -- failures --------------------------------------------------------------------------------------


def test_once_on_unmigrated_database_says_migrate(database_url: str, run_cli) -> None:
    result = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": database_url})
    assert result.exit_code == EXIT_NOT_MIGRATED
    assert "montage-vec migrate" in result.stderr
    assert "Traceback" not in result.everything()
    assert result.log("Batch job failed")["error_type"] == "SchemaNotMigratedError"


def test_show_on_unmigrated_database_says_migrate(duckdb_url: str, run_cli) -> None:
    result = run_cli("show", "--user-id", new_id(), env={"DATABASE_URL": duckdb_url})
    assert result.exit_code == EXIT_NOT_MIGRATED
    assert "migrate" in result.stderr
    assert "Traceback" not in result.everything()


@pytest.mark.parametrize(
    ("variable", "value", "args"),
    [
        ("MONTAGE_BATCH_SIZE", "-1", ()),
        # A valid flag does not hide a bad variable (tests/cli/test_options.py: bad flags).
        ("MONTAGE_BATCH_SIZE", "-1", ("--concurrency", "3")),
        ("MONTAGE_MIN_INTEREST_OCCURRENCE", "0", ()),
        ("DATABASE_URL", f"mysql://u:{SECRET}@h/db", ()),
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
    assert result.exit_code == EXIT_CONFIG, result.everything()
    assert variable in result.stderr
    assert SECRET not in result.everything()
    assert "Traceback" not in result.everything()


@pytest.mark.parametrize("as_of", ["nonsense", "2026-13-01"])
def test_bad_as_of_fails_clearly(duckdb_url: str, run_cli, as_of: str) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1))])
    result = run_cli("once", "--as-of", as_of, env={"DATABASE_URL": duckdb_url})
    assert result.exit_code == EXIT_CONFIG, result.everything()
    assert "--as-of" in result.stderr and "ISO 8601" in result.stderr
    assert "Traceback" not in result.everything()
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


def test_user_id_filter_that_is_not_a_uuid_names_the_variable(duckdb_url: str, run_cli) -> None:
    result = run_cli("once", env={"DATABASE_URL": duckdb_url, "USER_ID_FILTER": "alice"})
    assert result.exit_code == EXIT_CONFIG, result.everything()
    assert "USER_ID_FILTER" in result.stderr and "alice" in result.stderr


# -- the installed console scripts -------------------------------------------------------------------


@pytest.mark.slow
def test_migrate_demo_then_once_from_the_console_script(tmp_path: Path, run_cli: RunCli) -> None:
    url = f"duckdb:///{tmp_path}/demo.duckdb"
    migrate = run_cli("migrate", env={"DATABASE_URL": url})
    assert migrate.exit_code == 0, migrate.everything()
    assert migrate.messages() == ["schema migrated"]

    # A migrated database holds no data yet: demo takes it (tests/cli/test_demo.py: one with data).
    demo = run_cli("demo", "--users", "200", env={"DATABASE_URL": url})
    assert demo.exit_code == 0, demo.everything()
    demo_logs = parse_logs(demo.stderr)  # stdout is the listing's
    assert next(entry for entry in demo_logs if entry["message"] == "synthetic check-ins loaded")["users"] == 200
    demo_runs = [entry for entry in demo_logs if entry["message"] in RUN_MESSAGES]
    assert demo_runs and all(entry["job_id"].startswith("batch_") for entry in demo_runs)
    assert demo_runs[-1]["message"] == "Batch job completed" and demo_runs[-1]["processed"] == 200
    assert "montage(s)" in demo.stdout  # the busiest user's montages are shown

    # The installed script, in a process of its own: nothing but JSON lines reaches its stdout.
    once = run_job("once", env=job_env(DATABASE_URL=url), cwd=tmp_path)
    assert once.exit_code == 0, once.everything()
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
    migrated = run_job("migrate", env=job_env(DATABASE_URL=url), cwd=tmp_path, script="montage-batch")
    assert migrated.exit_code == 0, migrated.everything()
    assert migrated.logs[-1]["message"] == "schema migrated"
    assert (tmp_path / "alias.duckdb").exists()


def test_second_run_on_a_locked_duckdb_file_exits_75(tmp_path: Path) -> None:
    """DuckDB locks a file against other processes (a second connection in this one would share it)."""
    path = tmp_path / "locked.duckdb"
    url = f"duckdb:///{path}"
    load_checkins(url, [])  # migrated, empty
    with duckdb.connect(str(path)):  # another process holds the file read-write
        locked = run_job("once", env=job_env(DATABASE_URL=url), cwd=tmp_path)
    assert locked.exit_code == 75, locked.everything()
    assert "in use" in locked.stderr
    assert "Traceback" not in locked.stdout + locked.stderr
    assert query(url, "SELECT count(*) AS n FROM montage_job_runs")["n"][0] == 0


def test_version_prints_the_installed_package_version(run_cli: RunCli) -> None:
    result = run_cli("--version")

    assert result.exit_code == 0, result.everything()
    assert result.stdout.strip() == f"montage-vec {version('montage-vec')}"
