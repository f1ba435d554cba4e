"""Bad flags are usage errors (exit 2) that name the flag, never the variable it stands in for;
contradictory flags too; and BATCH_MODE is read only when no command is given."""

from __future__ import annotations

import pytest

from tests.support.cli import CliResult, RunCli
from tests.support.data import AS_OF, checkin, days, load_checkins, new_id
from tests.support.database import query

EXIT_USAGE = 2
SECRET = "secretpw"
# Unreachable on purpose: a usage error is reported before anything connects.
NOWHERE = {"DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:1/db"}


def assert_usage_error(result: CliResult, *flags: str, variable: str | None = None) -> None:
    assert result.exit_code == EXIT_USAGE, result.everything()
    for flag in flags:
        assert flag in result.stderr, result.everything()
    if variable is not None:
        assert variable not in result.stderr, result.everything()
    assert "Traceback" not in result.everything() and SECRET not in result.everything()
    assert result.stdout == "", "a usage error runs nothing and logs nothing"


@pytest.mark.parametrize(
    ("args", "flag", "variable", "reason"),
    [
        (("--batch-size", "0"), "--batch-size", "MONTAGE_BATCH_SIZE", "greater than or equal to 1"),
        (("--batch-size", "1000001"), "--batch-size", "MONTAGE_BATCH_SIZE", "less than or equal to 1000000"),
        (("--batch-size", "many"), "--batch-size", "MONTAGE_BATCH_SIZE", "not a valid integer"),
        (("--concurrency", "0"), "--concurrency", "MAX_CONCURRENT_GENERATIONS", "greater than or equal to 1"),
        (("--concurrency", "65"), "--concurrency", "MAX_CONCURRENT_GENERATIONS", "less than or equal to 64"),
        (("--user-id", "alice"), "--user-id", "USER_ID_FILTER", "not a uuid: 'alice'"),
        (("--user-id", new_id(), "--user-id", "bob"), "--user-id", "USER_ID_FILTER", "not a uuid: 'bob'"),
        (("--as-of", "nonsense"), "--as-of", None, "not an ISO 8601 timestamp: 'nonsense'"),
        (("--as-of", "2026-13-01"), "--as-of", None, "ISO 8601"),
    ],
)
def test_a_bad_flag_is_a_usage_error_naming_the_flag(
    run_cli: RunCli, args: tuple[str, ...], flag: str, variable: str | None, reason: str
) -> None:
    result = run_cli("once", *args, env=NOWHERE)

    assert_usage_error(result, flag, variable=variable)
    assert result.stderr.startswith("Usage: montage-vec once [OPTIONS]"), result.stderr
    assert reason in result.stderr, result.stderr


def test_show_names_its_user_id_flag(run_cli: RunCli) -> None:
    result = run_cli("show", "--user-id", "alice", env=NOWHERE)

    assert_usage_error(result, "--user-id", "not a uuid: 'alice'", variable="USER_ID_FILTER")


def test_a_bad_flag_is_named_even_when_its_variable_is_bad_too(run_cli: RunCli) -> None:
    result = run_cli("once", "--batch-size", "0", env={**NOWHERE, "MONTAGE_BATCH_SIZE": "-1"})

    assert_usage_error(result, "--batch-size", variable="MONTAGE_BATCH_SIZE")


def test_a_good_flag_wins_over_a_bad_variable_it_replaces(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1))])
    env = {"DATABASE_URL": duckdb_url, "MONTAGE_BATCH_SIZE": "-1"}

    result = run_cli("once", "--as-of", AS_OF.isoformat(), "--batch-size", "10", env=env)

    assert result.exit_code == 0, result.everything()
    assert result.log("Batch job completed")["processed"] == 1


def test_user_ids_are_canonical(duckdb_url: str, run_cli: RunCli) -> None:
    user = new_id()
    load_checkins(duckdb_url, [checkin(user, AS_OF - days(i + 1), tags=["tea"]) for i in range(3)])

    result = run_cli("once", "--as-of", AS_OF.isoformat(), "--user-id", user.upper(), env={"DATABASE_URL": duckdb_url})

    assert result.exit_code == 0, result.everything()
    assert result.log("Batch job completed")["processed"] == 1
    stored = query(duckdb_url, "SELECT DISTINCT user_id::VARCHAR AS user_id FROM montages")["user_id"].to_list()
    assert stored == [user]


# -- contradictory flags -----------------------------------------------------------------------------------


def test_full_with_user_id_is_a_usage_error(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1))])

    result = run_cli("once", "--full", "--user-id", new_id(), env={"DATABASE_URL": duckdb_url})

    assert_usage_error(result, "--full", "--user-id")
    assert query(duckdb_url, "SELECT count(*) AS n FROM montage_job_runs")["n"][0] == 0


def test_full_with_user_id_filter_in_the_environment_is_a_usage_error(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1))])
    env = {"DATABASE_URL": duckdb_url, "USER_ID_FILTER": new_id()}

    result = run_cli("once", "--full", "--as-of", AS_OF.isoformat(), env=env)

    assert_usage_error(result, "--full", "USER_ID_FILTER")
    assert query(duckdb_url, "SELECT count(*) AS n FROM montage_job_runs")["n"][0] == 0


def test_user_id_filter_alone_still_narrows_a_run(duckdb_url: str, run_cli: RunCli) -> None:
    user = new_id()
    load_checkins(duckdb_url, [checkin(user, AS_OF - days(1)), checkin(new_id(), AS_OF - days(1))])

    result = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": duckdb_url, "USER_ID_FILTER": user})

    assert result.exit_code == 0, result.everything()
    assert result.log("Batch job completed")["processed"] == 1


# -- BATCH_MODE --------------------------------------------------------------------------------------------


def test_batch_mode_is_not_read_when_a_command_is_given(duckdb_url: str, run_cli: RunCli) -> None:
    user = new_id()
    load_checkins(duckdb_url, [checkin(user, AS_OF - days(1))])
    env = {"DATABASE_URL": duckdb_url, "BATCH_MODE": "bogus"}

    once = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)
    shown = run_cli("show", "--user-id", user, env=env)

    assert once.exit_code == 0, once.everything()
    assert shown.exit_code == 0, shown.everything()
    assert f"user {user}: 1 montage(s)" in shown.stdout


def test_a_bad_batch_mode_without_a_command_still_exits_2_naming_it(run_cli: RunCli) -> None:
    result = run_cli(env={**NOWHERE, "BATCH_MODE": "bogus"})

    assert result.exit_code == 2, result.everything()
    assert "BATCH_MODE" in result.stderr and "Traceback" not in result.everything()
