"""Settings: documented defaults, environment parsing, validation errors naming the variable,
database resolution (DATABASE_URL, DB_* parts, DB_READ_HOST) and the connection budget."""

from __future__ import annotations

import itertools
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from montage_vec.config import Settings, check_flag, load_settings, requested_batch_mode
from montage_vec.engine import MontageParams
from montage_vec.errors import ConfigError
from tests.support.data import AS_OF, checkin, days, expected_montages, load_checkins, new_id, stored_montages
from tests.support.database import query

EXIT_CONFIG = 2


@pytest.fixture(autouse=True)
def no_job_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest clears only some variables; clear every one Settings reads."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


# -- defaults -------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "batch_mode": "once",
    "environment": "production",
    "log_level": "info",
    "debug": False,
    "batch_processing_timeout": timedelta(minutes=30),
    "montage_schedule": "0 3 * * *",
    "montage_schedule_tz": "UTC",
    "metrics_port": 8090,
    "metrics_host": "0.0.0.0",
    "pushgateway_url": None,
    "enable_batch_processing": True,
    "enable_realtime_generation": False,
    "enable_analytics": True,
    "checkin_source": "database",
    "checkin_service_url": None,
    "checkin_service_api_key": None,
    "checkin_service_timeout": timedelta(seconds=30),
    "checkin_service_page_size": 5000,
    "user_service_url": None,
    "user_service_api_key": None,
    "user_service_timeout": timedelta(seconds=10),
    "user_service_retries": 3,
    "database_url": None,
    "db_host": None,
    "db_port": 5432,
    "db_user": "postgres",
    "db_password": None,
    "db_name": "postgres",
    "db_sslmode": "prefer",
    "db_connect_timeout": timedelta(seconds=10),
    "db_read_host": None,
    "db_read_max_lag": timedelta(seconds=30),
    "db_max_open_conns": None,
    "duckdb_memory_limit": "64MB",
    "duckdb_temp_directory": None,
    "montage_source": "checkins",
    "montage_schema": None,
    "montage_change_capture": "auto",
    "montage_reconcile_every": None,
    "pgoptions": None,
    "montage_max_items": 20,
    "montage_min_interest_occurrence": 3,
    "montage_interest_lookback_days": 30,
    "montage_privacy_included": ["public", "friends"],
    "montage_batch_size": 2500,
    "max_concurrent_generations": 2,
    "watermark_overlap": timedelta(minutes=10),
    "cache_ttl": timedelta(hours=1),
    "user_id_filter": [],
    "chunk_retry_attempts": 3,
    "montage_max_failed_fraction": 0.01,
    "montage_memory_budget": 2**30,
    "montage_full_run_read": "chunks",
    "montage_scratch_dir": tempfile.gettempdir(),
    "db_reconnect_timeout": timedelta(seconds=60),
    "montage_max_clock_skew": timedelta(days=1),
    "montage_shard": "0/1",
    "montage_shard_count": None,
    "job_completion_index": None,
}


def test_the_defaults_table_covers_every_setting() -> None:
    assert set(DEFAULTS) == set(Settings.model_fields)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_setting_has_its_documented_default(name: str) -> None:
    assert getattr(load_settings(), name) == DEFAULTS[name]


def test_default_database_is_an_embedded_duckdb_file_in_the_working_directory() -> None:
    target = load_settings().database()
    assert (target.kind, target.location, target.read_location) == ("duckdb", "montage.duckdb", None)


def test_default_contract_matches_the_engine_defaults() -> None:
    assert load_settings().montage_params() == MontageParams()


def test_default_budget_is_two_workers_plus_the_lock() -> None:
    settings = load_settings()
    assert (settings.connection_budget(), settings.chunk_workers()) == (3, 2)


# -- reading the environment ----------------------------------------------------------------------

UPPER_UUID = "6F9619FF-8B86-D011-B42D-00CF4FC964FF"


@pytest.mark.parametrize(
    ("variable", "text", "field", "expected"),
    [
        ("MONTAGE_BATCH_SIZE", "250", "montage_batch_size", 250),
        ("montage_batch_size", "251", "montage_batch_size", 251),  # names are case-insensitive
        ("MAX_CONCURRENT_GENERATIONS", "7", "max_concurrent_generations", 7),
        ("DEBUG", "true", "debug", True),
        ("DEBUG", "1", "debug", True),
        ("ENABLE_ANALYTICS", "false", "enable_analytics", False),
        ("ENABLE_BATCH_PROCESSING", "0", "enable_batch_processing", False),
        ("LOG_LEVEL", "warn", "log_level", "warn"),
        ("ENVIRONMENT", "development", "environment", "development"),
        ("MONTAGE_PRIVACY_INCLUDED", " public , private,", "montage_privacy_included", ["public", "private"]),
        ("USER_ID_FILTER", f"{UPPER_UUID}, {UPPER_UUID.lower()}", "user_id_filter", [UPPER_UUID.lower()] * 2),
        ("MONTAGE_SHARD", "3/8", "montage_shard", "3/8"),
        ("JOB_COMPLETION_INDEX", "5", "job_completion_index", 5),  # no MONTAGE_ prefix: Kubernetes' own
        ("MONTAGE_SCHEDULE", "*/15 * * * *", "montage_schedule", "*/15 * * * *"),
        ("MONTAGE_SCHEDULE_TZ", "Europe/Berlin", "montage_schedule_tz", "Europe/Berlin"),
        ("WATERMARK_OVERLAP", "0", "watermark_overlap", timedelta(0)),
        ("CACHE_TTL", "1h30m", "cache_ttl", timedelta(minutes=90)),
        ("DB_READ_MAX_LAG", "1s", "db_read_max_lag", timedelta(seconds=1)),
        ("DB_READ_MAX_LAG", "500ms", "db_read_max_lag", timedelta(milliseconds=500)),
        ("DB_READ_MAX_LAG", "0", "db_read_max_lag", timedelta(0)),
        ("DB_MAX_OPEN_CONNS", "4", "db_max_open_conns", 4),
        ("CHECKIN_SERVICE_PAGE_SIZE", "7", "checkin_service_page_size", 7),
    ],
)
def test_values_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, field: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, text)
    assert getattr(load_settings(), field) == expected


def test_privacy_list_feeds_the_contract_lower_cased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONTAGE_PRIVACY_INCLUDED", "Public,FRIENDS,private")
    assert load_settings().montage_params().privacy_included == frozenset({"public", "friends", "private"})


def test_cli_overrides_win_and_none_overrides_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONTAGE_BATCH_SIZE", "10")
    monkeypatch.setenv("MAX_CONCURRENT_GENERATIONS", "3")
    settings = load_settings(montage_batch_size=20, max_concurrent_generations=None)
    assert (settings.montage_batch_size, settings.max_concurrent_generations) == (20, 3)


# -- invalid values -------------------------------------------------------------------------------

INVALID = [
    ("MONTAGE_BATCH_SIZE", "-5"),
    ("MONTAGE_BATCH_SIZE", "0"),
    ("MONTAGE_BATCH_SIZE", "lots"),
    ("MONTAGE_MIN_INTEREST_OCCURRENCE", "0"),
    ("MONTAGE_MAX_ITEMS", "0"),
    ("MONTAGE_INTEREST_LOOKBACK_DAYS", "-1"),
    ("MONTAGE_PRIVACY_INCLUDED", " , "),
    ("MAX_CONCURRENT_GENERATIONS", "0"),
    ("DB_SSLMODE", "bogus"),
    ("DB_SSLMODE", "REQUIRE"),
    ("DB_PORT", "0"),
    ("DB_MAX_OPEN_CONNS", "0"),
    ("MONTAGE_SCHEDULE", "every day at three"),
    ("MONTAGE_SCHEDULE", "61 3 * * *"),
    ("MONTAGE_SCHEDULE_TZ", "Mars/Olympus_Mons"),
    ("MONTAGE_SCHEDULE_TZ", "../../etc/passwd"),
    ("BATCH_PROCESSING_TIMEOUT", "forever"),
    ("WATERMARK_OVERLAP", "-5m"),
    ("DB_READ_MAX_LAG", "-1s"),
    ("DB_READ_MAX_LAG", "a while"),
    ("DB_CONNECT_TIMEOUT", "10 seconds"),
    ("MONTAGE_SHARD", "3/2"),
    ("MONTAGE_SHARD", "2/2"),
    ("MONTAGE_SHARD", "0/0"),
    ("MONTAGE_SHARD", "first"),
    ("USER_ID_FILTER", "not-a-uuid"),
    ("USER_ID_FILTER", f"{UPPER_UUID},nope"),
    ("DATABASE_URL", "mysql://montage:hunter2hunter2@db.internal:3306/montages"),
    ("DATABASE_URL", "duckdb://"),
    ("DATABASE_URL", "montage.duckdb"),
    ("ENVIRONMENT", "prod"),
    ("LOG_LEVEL", "verbose"),
    ("CHECKIN_SOURCE", "ftp"),
    ("CHECKIN_SERVICE_PAGE_SIZE", "0"),
    ("USER_SERVICE_RETRIES", "11"),
    ("METRICS_PORT", "70000"),
    ("MONTAGE_FULL_RUN_READ", "rows"),
]


@pytest.mark.parametrize(("variable", "value"), INVALID)
def test_invalid_value_fails_with_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as failure:
        load_settings()
    assert variable in str(failure.value)
    assert "hunter2hunter2" not in str(failure.value)
    assert failure.value.exit_code == EXIT_CONFIG


def test_http_checkin_source_needs_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKIN_SOURCE", "http")
    with pytest.raises(ConfigError) as failure:
        load_settings()
    assert "CHECKIN_SOURCE" in str(failure.value)
    assert "CHECKIN_SERVICE_URL" in str(failure.value)
    monkeypatch.setenv("CHECKIN_SERVICE_URL", "http://checkins.internal")
    assert load_settings().checkin_source == "http"


def test_several_problems_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONTAGE_BATCH_SIZE", "-1")
    monkeypatch.setenv("DB_SSLMODE", "bogus")
    with pytest.raises(ConfigError) as failure:
        load_settings()
    assert "MONTAGE_BATCH_SIZE" in str(failure.value)
    assert "DB_SSLMODE" in str(failure.value)


# -- BATCH_MODE, read only by requested_batch_mode ----------------------------------------------------


def test_batch_mode_is_validated_only_when_requested(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command given on the command line never reads BATCH_MODE: a bad one must not stop it."""
    monkeypatch.setenv("BATCH_MODE", "sometimes")
    assert load_settings().montage_batch_size == 2500
    with pytest.raises(ConfigError) as failure:
        requested_batch_mode()
    assert "BATCH_MODE" in str(failure.value) and failure.value.exit_code == EXIT_CONFIG


@pytest.mark.parametrize("mode", ["once", "scheduler", "health"])
def test_requested_batch_mode(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("BATCH_MODE", mode)
    # Other settings may be broken: BATCH_MODE=health must still reach the health check.
    monkeypatch.setenv("MONTAGE_BATCH_SIZE", "-1")
    assert requested_batch_mode() == mode


# -- check_flag: one setting given as a flag ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "held"),
    [
        ("montage_batch_size", "10", 10),
        ("max_concurrent_generations", 64, 64),
        ("user_id_filter", [UPPER_UUID], [UPPER_UUID.lower()]),
    ],
)
def test_check_flag_gives_the_value_as_settings_hold_it(name: str, value: Any, held: Any) -> None:
    assert check_flag(name, value) == held


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("montage_batch_size", 0, "greater than or equal to 1"),
        ("max_concurrent_generations", 65, "less than or equal to 64"),
        ("user_id_filter", [UPPER_UUID, "nope"], "not a uuid: 'nope'"),
    ],
)
def test_check_flag_says_what_is_wrong_without_the_variable(name: str, value: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as failure:
        check_flag(name, value)
    assert name.upper() not in str(failure.value) and "Value error" not in str(failure.value)


def test_check_flag_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flag replaces its variable; neither it nor any other variable is the flag's problem."""
    monkeypatch.setenv("MONTAGE_BATCH_SIZE", "-1")
    monkeypatch.setenv("DB_SSLMODE", "bogus")
    assert check_flag("montage_batch_size", 5) == 5


def test_cli_exits_2_naming_the_variable_before_touching_data(run_cli, tmp_path: Path) -> None:
    result = run_cli("once", env={"MONTAGE_SHARD": "3/2", "DATABASE_URL": f"duckdb:///{tmp_path}/never.duckdb"})
    assert result.exit_code == EXIT_CONFIG
    assert "MONTAGE_SHARD" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "never.duckdb").exists()


# -- DATABASE_URL ---------------------------------------------------------------------------------


def test_duckdb_url_with_three_slashes_is_relative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "duckdb:///rel.duckdb")
    target = load_settings().database()
    assert (target.kind, target.location) == ("duckdb", "rel.duckdb")


def test_duckdb_url_with_four_slashes_is_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "duckdb:////abs/path.duckdb")
    target = load_settings().database()
    assert (target.kind, target.location) == ("duckdb", "/abs/path.duckdb")


def test_duckdb_urls_really_open_those_files(run_cli, tmp_path: Path) -> None:
    # conftest runs every test inside tmp_path, so a relative file lands there.
    relative = run_cli("migrate", env={"DATABASE_URL": "duckdb:///rel.duckdb"})
    assert relative.exit_code == 0, relative.stderr
    assert (tmp_path / "rel.duckdb").is_file()
    (tmp_path / "abs").mkdir()
    absolute = run_cli("migrate", env={"DATABASE_URL": f"duckdb:///{tmp_path}/abs/path.duckdb"})
    assert absolute.exit_code == 0, absolute.stderr
    assert (tmp_path / "abs" / "path.duckdb").is_file()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_postgres_url_is_used_as_given(monkeypatch: pytest.MonkeyPatch, scheme: str) -> None:
    url = f"{scheme}://app:pw@db.internal:6543/montages?sslmode=require"
    monkeypatch.setenv("DATABASE_URL", url)
    target = load_settings().database()
    assert (target.kind, target.location, target.read_location) == ("postgresql", url, None)


def test_database_url_wins_over_db_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "duckdb:///chosen.duckdb")
    monkeypatch.setenv("DB_HOST", "ignored.internal")
    target = load_settings().database()
    assert (target.kind, target.location) == ("duckdb", "chosen.duckdb")


# -- DB_* parts -----------------------------------------------------------------------------------

AWKWARD_PASSWORD = "p@ss:w/rd %&=?#x"


def parts_of(uri: str) -> tuple[Any, dict[str, list[str]]]:
    split = urlsplit(uri)
    return split, parse_qs(split.query)


def test_db_parts_build_a_postgresql_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DB_HOST": "db.internal",
        "DB_PORT": "6543",
        "DB_USER": "montage app",
        "DB_PASSWORD": AWKWARD_PASSWORD,
        "DB_NAME": "montages/prod",
        "DB_SSLMODE": "verify-full",
        "DB_CONNECT_TIMEOUT": "1m30s",
    }.items():
        monkeypatch.setenv(name, value)
    target = load_settings().database()
    assert target.kind == "postgresql"
    split, options = parts_of(target.location)
    assert split.scheme == "postgresql"
    assert (split.hostname, split.port) == ("db.internal", 6543)
    assert unquote(split.username or "") == "montage app"
    assert unquote(split.password or "") == AWKWARD_PASSWORD
    assert unquote(split.path) == "/montages/prod"
    assert options["sslmode"] == ["verify-full"]
    assert options["connect_timeout"] == ["90"]
    assert target.read_location is None
    assert AWKWARD_PASSWORD not in target.display
    assert "montage%20app:***@db.internal" in target.display


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])
def test_every_libpq_sslmode_is_accepted(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("DB_HOST", "db.internal")
    monkeypatch.setenv("DB_SSLMODE", mode)
    _, options = parts_of(load_settings().database().location)
    assert options["sslmode"] == [mode]


@pytest.mark.parametrize(("text", "seconds"), [(None, "10"), ("500ms", "1"), ("45", "45"), ("2m", "120")])
def test_connect_timeout_is_whole_seconds_at_least_one(
    monkeypatch: pytest.MonkeyPatch, text: str | None, seconds: str
) -> None:
    monkeypatch.setenv("DB_HOST", "db.internal")
    if text is not None:
        monkeypatch.setenv("DB_CONNECT_TIMEOUT", text)
    _, options = parts_of(load_settings().database().location)
    assert options["connect_timeout"] == [seconds]


def test_db_parts_without_password_have_no_colon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db.internal")
    split, _ = parts_of(load_settings().database().location)
    assert split.netloc == "postgres@db.internal:5432"
    assert split.path == "/postgres"


def test_db_read_host_with_db_parts_keeps_everything_but_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DB_HOST": "primary.internal",
        "DB_READ_HOST": "replica.internal",
        "DB_PORT": "6543",
        "DB_USER": "app",
        "DB_PASSWORD": AWKWARD_PASSWORD,
        "DB_SSLMODE": "require",
    }.items():
        monkeypatch.setenv(name, value)
    target = load_settings().database()
    primary, primary_options = parts_of(target.location)
    replica, replica_options = parts_of(target.read_location or "")
    assert (replica.hostname, replica.port) == ("replica.internal", 6543)
    assert (replica.username, replica.password, replica.path) == (primary.username, primary.password, primary.path)
    assert replica_options == primary_options


def test_db_read_host_with_a_port_and_db_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "primary.internal")
    monkeypatch.setenv("DB_PORT", "6543")
    monkeypatch.setenv("DB_READ_HOST", "replica.internal:7000")
    replica, _ = parts_of(load_settings().database().read_location or "")
    assert (replica.hostname, replica.port) == ("replica.internal", 7000)


@pytest.mark.parametrize(
    ("read_host", "expected"),
    [
        ("replica.internal", "postgresql://app:pw@replica.internal:6543/montages?sslmode=require"),
        ("replica.internal:7000", "postgresql://app:pw@replica.internal:7000/montages?sslmode=require"),
    ],
)
def test_db_read_host_with_database_url(monkeypatch: pytest.MonkeyPatch, read_host: str, expected: str) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@primary.internal:6543/montages?sslmode=require")
    monkeypatch.setenv("DB_READ_HOST", read_host)
    assert load_settings().database().read_location == expected


def test_db_read_host_with_url_without_credentials_or_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://primary.internal/montages")
    monkeypatch.setenv("DB_READ_HOST", "replica.internal")
    assert load_settings().database().read_location == "postgresql://replica.internal/montages"


@pytest.mark.parametrize(("text", "expected"), [(None, timedelta(seconds=30)), ("2m", timedelta(minutes=2))])
def test_db_read_max_lag_reaches_the_database_target(
    monkeypatch: pytest.MonkeyPatch, text: str | None, expected: timedelta
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@primary.internal:6543/montages")
    monkeypatch.setenv("DB_READ_HOST", "replica.internal")
    if text is not None:
        monkeypatch.setenv("DB_READ_MAX_LAG", text)
    assert load_settings().database().read_max_lag == expected


def test_db_read_host_is_ignored_for_duckdb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "duckdb:///local.duckdb")
    monkeypatch.setenv("DB_READ_HOST", "replica.internal")
    assert load_settings().database().read_location is None


@pytest.mark.postgres
def test_db_parts_and_read_host_connect_to_a_real_server(
    postgres_url: str, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built URI really works with libpq: write on DB_HOST, read check-ins via DB_READ_HOST."""
    user = new_id()
    rows = [checkin(user, AS_OF - days(i + 1), tags=["tea"]) for i in range(3)]
    load_checkins(postgres_url, rows)
    split = urlsplit(postgres_url)
    env = {
        "DB_HOST": "localhost",
        "DB_READ_HOST": "127.0.0.1",
        "DB_PORT": str(split.port),
        "DB_USER": split.username or "root",
        "DB_NAME": split.path.lstrip("/"),
        "DB_SSLMODE": "disable",
        "DB_CONNECT_TIMEOUT": "5s",
    }
    result = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert stored_montages(postgres_url) == expected_montages(rows, AS_OF)
    apps = query(postgres_url, "SELECT count(*) AS n FROM montage_job_runs WHERE status = 'completed'")
    assert apps["n"][0] == 1


# -- connection budget ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concurrency", "max_open", "budget", "workers"),
    [
        (2, None, 3, 2),
        (4, None, 5, 4),
        (4, 100, 5, 4),  # never more than concurrency + the lock's connection
        (4, 5, 5, 4),
        (4, 3, 3, 2),
        (4, 2, 2, 1),
        (1, None, 2, 1),
        (8, 4, 4, 3),
    ],
)
def test_connection_budget_examples(
    monkeypatch: pytest.MonkeyPatch, concurrency: int, max_open: int | None, budget: int, workers: int
) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_GENERATIONS", str(concurrency))
    if max_open is not None:
        monkeypatch.setenv("DB_MAX_OPEN_CONNS", str(max_open))
    settings = load_settings()
    assert (settings.connection_budget(), settings.chunk_workers()) == (budget, workers)


def test_connection_budget_bounds_over_a_grid() -> None:
    for concurrency, max_open in itertools.product(range(1, 10), [None, *range(2, 12)]):
        settings = load_settings(max_concurrent_generations=concurrency, db_max_open_conns=max_open)
        budget, workers = settings.connection_budget(), settings.chunk_workers()
        assert budget <= concurrency + 1
        if max_open is not None:
            assert budget <= max_open
        assert 1 <= workers <= concurrency
        assert workers + 1 <= budget  # the workers' connections plus the lock's fit the budget


def test_concurrency_flag_is_bounded_by_db_max_open_conns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_MAX_OPEN_CONNS", "3")
    settings = load_settings(max_concurrent_generations=16)
    assert (settings.connection_budget(), settings.chunk_workers()) == (3, 2)


def test_db_max_open_conns_of_one_is_rejected_or_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_MAX_OPEN_CONNS", "1")
    try:
        settings = load_settings()
    except ConfigError as exc:
        assert "DB_MAX_OPEN_CONNS" in str(exc)
        return
    assert settings.connection_budget() <= 1


def test_effective_configuration_prints_durations_as_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DEBUG=true configuration line reads like the variables it came from, not like PT1H30M."""
    monkeypatch.setenv("BATCH_PROCESSING_TIMEOUT", "90m")
    shown = load_settings().effective()
    assert shown["batch_processing_timeout"] == "1h30m"
    assert shown["cache_ttl"] == "1h"


@pytest.mark.parametrize(
    ("variable", "given", "held"),
    [
        ("LOG_LEVEL", "ERROR", "error"),
        ("ENVIRONMENT", " Development", "development"),
        ("MONTAGE_FULL_RUN_READ", "Chunks", "chunks"),
    ],
)
def test_choices_are_taken_whatever_their_case(
    monkeypatch: pytest.MonkeyPatch, variable: str, given: str, held: str
) -> None:
    monkeypatch.setenv(variable, given)
    assert getattr(load_settings(), variable.lower()) == held


def test_a_blank_scratch_folder_means_the_systems_temporary_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """MONTAGE_SCRATCH_DIR= as an env file writes it; TMPDIR is what the system's folder follows."""
    monkeypatch.setenv("MONTAGE_SCRATCH_DIR", " ")
    assert load_settings().montage_scratch_dir == tempfile.gettempdir()
    monkeypatch.setenv("MONTAGE_SCRATCH_DIR", "/var/spool/montage")
    assert load_settings().montage_scratch_dir == "/var/spool/montage"
