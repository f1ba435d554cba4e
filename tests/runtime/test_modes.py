"""How `montage-vec` picks what to do: BATCH_MODE, subcommands, the health check (against
real PostgreSQL and real HTTP services on 127.0.0.1) and ENABLE_BATCH_PROCESSING.

All in this process (the entry point with the arguments a process would get); exit codes
are the same SystemExit either way. The console scripts themselves: tests/cli."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.support.cli import CliResult, RunCli
from tests.support.data import AS_OF, JOB_TABLES, checkin, days, load_checkins, new_id
from tests.support.database import count, postgres_database, query
from tests.support.processes import free_port
from tests.support.servers import health_service

pytestmark = pytest.mark.postgres

HEALTH_PASSED = "Health check passed"
NOTHING_WRITTEN = dict.fromkeys(JOB_TABLES, 0)


def seed(url: str, around: datetime = AS_OF) -> str:
    """Migrate `url` and give it one user with three tagged check-ins before `around`; returns the user id."""
    user = new_id()
    load_checkins(url, [checkin(user, around - days(i + 1), tags=["coffee"]) for i in range(3)])
    return user


@pytest.fixture(scope="module")
def seeded_url() -> Iterator[str]:
    """A migrated database with check-ins, shared by the tests that must not write to it."""
    with postgres_database() as url:
        seed(url)
        yield url


def row_counts(url: str) -> dict[str, int]:
    return {table: count(url, table) for table in JOB_TABLES}


def health_failures(result: CliResult) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("health check failed: ")]


# -- BATCH_MODE and subcommands ---------------------------------------------------------------------


def test_batch_mode_health_without_subcommand_runs_the_health_check(seeded_url: str, run_cli: RunCli) -> None:
    result = run_cli(env={"DATABASE_URL": seeded_url, "BATCH_MODE": "health"})
    assert result.exit_code == 0, result.everything()
    assert HEALTH_PASSED in result.stdout
    assert health_failures(result) == []
    assert row_counts(seeded_url) == NOTHING_WRITTEN


@pytest.mark.timeout(60)  # hang guard: with BATCH_MODE=scheduler, a daemon started by mistake never returns
@pytest.mark.parametrize("mode", ["once", "scheduler"])
def test_health_subcommand_never_starts_a_run(seeded_url: str, run_cli: RunCli, mode: str) -> None:
    result = run_cli("health", env={"DATABASE_URL": seeded_url, "BATCH_MODE": mode})
    assert result.exit_code == 0, result.everything()
    assert HEALTH_PASSED in result.stdout
    assert "Batch job started" not in result.messages()
    assert row_counts(seeded_url) == NOTHING_WRITTEN


def test_subcommand_wins_over_batch_mode(postgres_url: str, run_cli: RunCli) -> None:
    seed(postgres_url)
    result = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": postgres_url, "BATCH_MODE": "health"})
    assert result.exit_code == 0, result.everything()
    assert HEALTH_PASSED not in result.stdout
    assert result.log("Batch job completed")["processed"] == 1
    assert query(postgres_url, "SELECT status FROM montage_job_runs")["status"].to_list() == ["completed"]


def test_no_arguments_with_batch_mode_once_runs_the_job(postgres_url: str, run_cli: RunCli) -> None:
    """What `docker run -e BATCH_MODE=once image` does: the entry point without arguments."""
    user = seed(postgres_url, around=datetime.now(UTC))
    result = run_cli(env={"DATABASE_URL": postgres_url, "BATCH_MODE": "once"})
    assert result.exit_code == 0, result.everything()
    completed = result.log("Batch job completed")
    assert (completed["status"], completed["processed"], completed["interest_montages"]) == ("completed", 1, 1)
    stored = query(postgres_url, "SELECT user_id::VARCHAR AS user_id, kind FROM montages ORDER BY kind")
    assert stored.rows() == [(user, "general"), (user, "interest")]


def test_unknown_batch_mode_exits_2_naming_the_variable(run_cli: RunCli) -> None:
    # The database is unreachable on purpose: the mode is rejected before anything connects.
    result = run_cli(env={"BATCH_MODE": "bogus", "DATABASE_URL": "postgresql://root@127.0.0.1:1/x"})
    assert result.exit_code == 2, result.everything()
    assert "BATCH_MODE" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_disabled_batch_processing_exits_0_and_writes_nothing(seeded_url: str, run_cli: RunCli) -> None:
    env = {"DATABASE_URL": seeded_url, "ENABLE_BATCH_PROCESSING": "false"}
    result = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)
    assert result.exit_code == 0, result.everything()
    assert any("disabled" in message for message in result.messages()), result.everything()
    assert "Batch job started" not in result.messages()
    assert row_counts(seeded_url) == NOTHING_WRITTEN


# -- health check failures ---------------------------------------------------------------------------


def test_health_fails_on_an_unmigrated_database(postgres_url: str, run_cli: RunCli) -> None:
    result = run_cli("health", env={"DATABASE_URL": postgres_url})
    assert result.exit_code == 1, result.everything()
    failures = health_failures(result)
    assert len(failures) == 1 and failures[0].startswith("health check failed: schema migrated: ")
    assert "montage-vec migrate" in failures[0]
    assert HEALTH_PASSED not in result.stdout
    tables = query(postgres_url, "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public'")
    assert tables["n"][0] == 0, "the health check must not migrate"


def test_batch_mode_health_reports_broken_configuration(run_cli: RunCli) -> None:
    """BATCH_MODE=health still runs when other settings are invalid, and says which one."""
    env = {"BATCH_MODE": "health", "MONTAGE_BATCH_SIZE": "-1", "DATABASE_URL": "postgresql://root@127.0.0.1:1/x"}
    result = run_cli(env=env)
    assert result.exit_code == 1, result.everything()
    failures = health_failures(result)
    assert len(failures) == 1 and failures[0].startswith("health check failed: configuration: "), failures
    assert "MONTAGE_BATCH_SIZE" in failures[0]


def test_health_reports_every_failure(run_cli: RunCli) -> None:
    closed = free_port()
    secret = "s3cr3t-Pa55"
    env = {
        "DATABASE_URL": f"postgresql://root:{secret}@127.0.0.1:1/montage",
        "USER_SERVICE_URL": f"http://127.0.0.1:{closed}",
        "DB_CONNECT_TIMEOUT": "3s",
    }
    result = run_cli("health", env=env)
    assert result.exit_code == 1, result.everything()
    failures = health_failures(result)
    assert len(failures) == 2, result.everything()
    assert failures[0].startswith("health check failed: database: ")
    assert failures[1].startswith("health check failed: user service: ")
    assert "127.0.0.1:1" in failures[0]
    assert f"127.0.0.1:{closed}" in failures[1]
    assert secret not in result.stdout + result.stderr
    assert HEALTH_PASSED not in result.stdout


# -- health against real HTTP services ---------------------------------------------------------------


def test_health_passes_when_both_services_answer_200(seeded_url: str, run_cli: RunCli) -> None:
    with health_service(200) as checkins, health_service(200) as users:
        env = {
            "DATABASE_URL": seeded_url,
            "CHECKIN_SERVICE_URL": checkins.url,
            "USER_SERVICE_URL": users.url + "/",  # a trailing slash must not double up
            "USER_SERVICE_API_KEY": "user-key-123",
        }
        result = run_cli("health", env=env)
    assert result.exit_code == 0, result.everything()
    assert HEALTH_PASSED in result.stdout
    assert [(request.method, request.path) for request in checkins.requests] == [("GET", "/healthz")]
    assert [(request.method, request.path) for request in users.requests] == [("GET", "/healthz")]
    assert "user-key-123" in users.requests[0].headers.values(), "the API key goes with the request"
    assert "user-key-123" not in checkins.requests[0].headers.values(), "each service gets only its own key"


def test_health_fails_when_services_answer_500(seeded_url: str, run_cli: RunCli) -> None:
    with health_service(500) as checkins, health_service(500) as users:
        env = {"DATABASE_URL": seeded_url, "CHECKIN_SERVICE_URL": checkins.url, "USER_SERVICE_URL": users.url}
        result = run_cli("health", env=env)
    assert result.exit_code == 1, result.everything()
    failures = health_failures(result)
    assert len(failures) == 2, result.everything()
    assert failures[0].startswith("health check failed: check-in service: ")
    assert failures[1].startswith("health check failed: user service: ")
    assert all("500" in failure for failure in failures)
    assert HEALTH_PASSED not in result.stdout
