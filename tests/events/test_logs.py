"""What a run prints: one JSON object per line correlated by job_id (worker threads' lines too),
the final summary line at every log level and however the run failed, chunk progress, log
levels, the development format, and secrets that never leak anywhere."""

from __future__ import annotations

import io
import json
import re
import traceback
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from montage_vec.config import load_settings
from montage_vec.errors import ConfigError, MontageVecError, TransientStoreError
from montage_vec.job.control import RunControl
from montage_vec.job.plan import RunOptions
from montage_vec.job.summary import finish_summary, log_outcome, new_summary
from montage_vec.observability.logging import configure_logging
from montage_vec.observability.metrics import JobMetrics
from montage_vec.runtime.wiring import run_once as wiring_run_once
from tests.support.cli import run_once
from tests.support.data import AS_OF, checkin, days, load_checkins, new_id
from tests.support.database import execute, pg_host, pg_port, query, sql_literal
from tests.support.outbox import RUNS_QUERY, events
from tests.support.processes import free_port, job_env, run_job
from tests.support.servers import FakeService, Reply, closed_port_url

SUMMARY_FIELDS = ("job_id", "duration", "processed", "successful", "errors", "general_montages", "interest_montages")
RUN_MESSAGES = ("Batch job started", "chunk committed", "Batch job completed")
SECRET_VARIABLES = ("DB_PASSWORD", "USER_SERVICE_API_KEY", "CHECKIN_SERVICE_API_KEY")


def some_checkins(url: str, users: int = 3) -> list[dict[str, Any]]:
    rows = [
        checkin(user, AS_OF - days(i + 1), tags=["Coffee"], text_content=f"cup {i}")
        for user in (new_id() for _ in range(users))
        for i in range(3)
    ]
    load_checkins(url, rows)
    return rows


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line parsed as JSON; fails on the first line that is not a JSON object."""
    parsed = []
    for line in stdout.splitlines():
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        parsed.append(entry)
    return parsed


# -- structure ------------------------------------------------------------------------------------


def test_every_line_is_json_and_run_lines_share_the_job_id(duckdb_url: str, run_cli) -> None:
    some_checkins(duckdb_url, users=3)
    result = run_once(run_cli, duckdb_url, env={"MONTAGE_BATCH_SIZE": "1"})
    lines = json_lines(result.stdout)
    assert lines, result.stderr
    for entry in lines:
        assert {"timestamp", "level", "message"} <= entry.keys(), entry
        assert entry["level"] in ("debug", "info", "warn", "error")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["timestamp"]), entry
        datetime.fromisoformat(entry["timestamp"])
    run_lines = [entry for entry in lines if entry["message"] in RUN_MESSAGES]
    assert [entry["message"] for entry in run_lines].count("chunk committed") == 3
    job_ids = {entry.get("job_id") for entry in run_lines} | {entry["job_id"] for entry in lines if "job_id" in entry}
    assert len(job_ids) == 1
    (job_id,) = job_ids
    assert re.fullmatch(r"batch_\d+_[0-9a-f]{6}", job_id)

    last = lines[-1]
    assert last["message"] == "Batch job completed"
    assert last["level"] == "info"
    for name in SUMMARY_FIELDS:
        assert name in last, name
    assert (last["processed"], last["successful"], last["errors"]) == (3, 3, 0)
    assert (last["general_montages"], last["interest_montages"]) == (3, 3)
    assert isinstance(last["duration"], str) and last["duration"].endswith("s")
    assert result.stderr == ""


@pytest.mark.parametrize("level", ["error", "warn"])
def test_quiet_log_levels_hide_info_lines_but_never_the_summary(duckdb_url: str, run_cli, level: str) -> None:
    """The summary line is the run's result: LOG_LEVEL hides chatter, not whether the run completed."""
    some_checkins(duckdb_url, users=2)
    result = run_once(run_cli, duckdb_url, env={"LOG_LEVEL": level, "MONTAGE_BATCH_SIZE": "1"})
    lines = json_lines(result.stdout)
    assert [entry["message"] for entry in lines] == ["Batch job completed"], result.stdout
    assert lines[0]["level"] == "info" and lines[0]["processed"] == 2  # not dressed up as an error
    assert "always_shown" not in lines[0], "the marker that lets it through is never printed"
    # ...and a failure says so too.
    env = {"DATABASE_URL": duckdb_url, "LOG_LEVEL": level, "BATCH_PROCESSING_TIMEOUT": "1ms"}
    failed = run_cli("once", "--full", env=env)
    assert failed.exit_code == 124
    assert [entry["message"] for entry in json_lines(failed.stdout)] == ["Batch job failed"]
    assert json_lines(failed.stdout)[0]["level"] == "error"


def test_every_line_of_a_run_carries_its_job_id_worker_threads_included(duckdb_url: str, run_cli) -> None:
    """Chunks run on worker threads, which do not inherit the run's logging context: the
    "cannot be processed" warning below is logged on one, by library code using the bare logger."""
    rows = some_checkins(duckdb_url, users=4)
    broken = rows[0]
    execute(
        duckdb_url,
        f"UPDATE checkins SET created_at = TIMESTAMPTZ 'infinity' WHERE id = {sql_literal(broken['id'])}",
    )
    result = run_once(run_cli, duckdb_url, "--batch-size", "1", "--concurrency", "2")
    lines = json_lines(result.stdout)
    messages = [entry["message"] for entry in lines]
    assert "user's check-ins cannot be processed; it goes to the retry list" in messages, result.stdout
    start, end = messages.index("Batch job started"), messages.index("Batch job completed")
    assert end == len(lines) - 1
    job_id = lines[end]["job_id"]
    assert lines[end]["errors"] == 1
    missing = [entry for entry in lines[start:] if entry.get("job_id") != job_id]
    assert not missing, f"lines without the run's job_id {job_id}: {missing}"


def test_chunk_lines_say_how_far_the_run_is(duckdb_url: str, run_cli) -> None:
    some_checkins(duckdb_url, users=5)
    result = run_once(run_cli, duckdb_url, "--batch-size", "2", "--concurrency", "1")
    chunks = [entry for entry in result.logs if entry["message"] == "chunk committed"]
    assert [(entry["chunk"], entry["chunks_done"], entry["chunks_total"]) for entry in chunks] == [
        (1, 1, 3),
        (2, 2, 3),
        (3, 3, 3),
    ]
    assert "chunks" not in chunks[0], "chunks_total replaced it"
    for entry in chunks:
        assert entry["users_per_second"] > 0, entry
        assert entry["eta_seconds"] >= 0, entry
    # The last chunk leaves nobody to wait for.
    assert chunks[-1]["eta_seconds"] == 0


def summary_field_names() -> set[str]:
    """Every field of a failed run's summary line (RunSummary.fields), whatever its error."""
    summary = finish_summary(new_summary(load_settings(), RunOptions()), TransientStoreError("gone"))
    return set(summary.fields())


@pytest.mark.parametrize(
    ("args", "mode"),
    [((), "incremental"), (("--full",), "full"), (("--user-id", "7c9e6679-7425-40de-944b-e07fc1f90ae7"), "users")],
)
def test_run_that_cannot_reach_its_database_ends_with_a_full_summary_line(
    tmp_path: Path, args: tuple[str, ...], mode: str
) -> None:
    """Nothing listens on the port, and DB_RECONNECT_TIMEOUT=0 gives up at once: the run never
    planned, so its line names the mode it was asked for."""
    url = f"postgresql://root@127.0.0.1:{free_port()}/montage"
    env = job_env(DATABASE_URL=url, DB_RECONNECT_TIMEOUT="0", DB_CONNECT_TIMEOUT="5s")
    result = run_job("once", *args, env=env, cwd=tmp_path)

    assert result.exit_code == 1, result.everything()  # a transient error that outlived its budget
    last = json_lines(result.stdout)[-1]
    assert (last["message"], last["level"], last["status"]) == ("Batch job failed", "error", "failed"), last
    assert last["mode"] == mode
    assert summary_field_names() <= last.keys(), summary_field_names() - last.keys()
    assert last["error_type"] == "TransientStoreError"
    assert re.fullmatch(r"batch_\d+_[0-9a-f]{6}", last["job_id"])
    assert all(entry.get("job_id") == last["job_id"] for entry in json_lines(result.stdout))
    assert result.stderr == f"montage-vec: {last['error']}\n", result.everything()
    assert "refused" in result.stderr


def test_run_whose_services_cannot_be_set_up_is_a_failed_run_with_a_summary_line(duckdb_url: str) -> None:
    """The check-in service is chosen but has no URL (settings validation would refuse this; an
    embedding caller can still build it): run_once fails the run instead of raising, and counts it."""
    settings = load_settings(database_url=duckdb_url).model_copy(
        update={"checkin_source": "http", "checkin_service_url": None}
    )
    out = io.StringIO()
    configure_logging("info", stream=out)
    metrics = JobMetrics()
    user = new_id()

    summary = wiring_run_once(settings, RunOptions(user_ids=(user,), job_id="batch_1_abcdef"), RunControl(), metrics)
    log_outcome(summary)

    assert (summary.status, summary.mode, type(summary.error)) == ("failed", "users", ConfigError)
    (last,) = json_lines(out.getvalue())
    assert (last["message"], last["job_id"], last["mode"]) == ("Batch job failed", "batch_1_abcdef", "users")
    assert summary_field_names() <= last.keys()
    assert last["error"] == "CHECKIN_SERVICE_URL is not set"
    assert metrics.registry.get_sample_value("montage_batch_runs_total", {"status": "failed"}) == 1


def test_failed_run_line_carries_the_job_id_and_summary(duckdb_url: str, run_cli) -> None:
    some_checkins(duckdb_url, users=1)
    failed = run_cli("once", env={"DATABASE_URL": duckdb_url, "BATCH_PROCESSING_TIMEOUT": "1ms"})
    assert failed.exit_code == 124
    line = failed.log("Batch job failed")
    assert line["level"] == "error"
    assert line["status"] == "timeout"
    assert line["job_id"] == failed.log("Batch job started")["job_id"]
    for name in SUMMARY_FIELDS:  # "the same fields" as a completed run's last line
        assert name in line, name
    assert json_lines(failed.stdout)[-1]["message"] == "Batch job failed"
    assert "timeout" in failed.stderr


def debug_env(url: str) -> dict[str, str]:
    return {"DATABASE_URL": url, "DEBUG": "true", "MONTAGE_BATCH_SIZE": "123"}


def assert_effective_configuration(result: Any) -> None:
    line = result.log("effective configuration")
    assert line["level"] == "debug"
    configuration = line["configuration"]
    assert configuration["montage_batch_size"] == 123
    assert configuration["debug"] is True
    assert configuration["database_url"] == "***"
    assert line["database"].endswith("montage.duckdb"), "names the database in use, as resolved"


def test_debug_with_debug_level_logs_the_effective_configuration(duckdb_url: str, run_cli) -> None:
    some_checkins(duckdb_url, users=1)
    result = run_once(run_cli, duckdb_url, env={**debug_env(duckdb_url), "LOG_LEVEL": "debug"})
    assert_effective_configuration(result)


def test_debug_true_logs_the_effective_configuration(duckdb_url: str, run_cli) -> None:
    some_checkins(duckdb_url, users=1)
    assert_effective_configuration(run_once(run_cli, duckdb_url, env=debug_env(duckdb_url)))


def test_development_environment_prints_human_lines(duckdb_url: str, run_cli) -> None:
    some_checkins(duckdb_url, users=1)
    result = run_once(run_cli, duckdb_url, env={"ENVIRONMENT": "development"})
    lines = result.stdout.splitlines()
    assert lines
    for line in lines:
        assert not line.startswith("{"), line
        assert re.match(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR)\s", line), line
    completed = [line for line in lines if "Batch job completed" in line]
    assert len(completed) == 1
    assert re.search(r"job_id=batch_\d+_[0-9a-f]{6}", completed[0])
    assert "processed=1" in completed[0]
    # Readable fields: nested ones dotted, never a Python repr; durations as settings take them.
    assert re.search(r" stage_seconds\.extract=\d", completed[0]), completed[0]
    assert re.search(r" duration=\d+(\.\d+)?m?s ", completed[0]), completed[0]
    for line in lines:
        assert "{'" not in line and "['" not in line and "=True" not in line and "=None" not in line, line
    started = next(line for line in lines if "Batch job started" in line)
    assert re.search(r' change_capture_reason="[^"]+ [^"]+"', started), "a string with spaces is quoted"


# -- secrets --------------------------------------------------------------------------------------


def distinctive() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {name: f"{name.lower().replace('_', '-')}-{tag}-Zq9" for name in SECRET_VARIABLES}


def assert_nowhere(secrets: list[str], *texts: str) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"secret {secret!r} leaked into:\n{text}"


def with_password(url: str, password: str) -> str:
    return url.replace("postgresql://root@", f"postgresql://root:{password}@")


def run_log_messages(url: str) -> str:
    return "\n".join(str(row["message"]) for row in query(url, RUNS_QUERY).to_dicts())


def connection_target(target: str, password: str) -> tuple[dict[str, str], str]:
    """The variables pointing the job at a database it cannot use, and a clue stderr must carry.

    "refused": nothing listens on the port; "missing": the server has no such database. The
    password is in DATABASE_URL for the url targets, in DB_PASSWORD for the db-parts ones."""
    missing = f"montage_absent_{uuid.uuid4().hex[:8]}"
    kind, problem = target.split(", ")
    if problem == "refused":
        host, port, name, clue = "127.0.0.1", "1", "montage", "refused"
    else:
        host, port, name, clue = pg_host(), str(pg_port()), missing, missing
    if kind == "url":
        return {"DATABASE_URL": f"postgresql://root:{password}@{host}:{port}/{name}"}, clue
    return {"DB_HOST": host, "DB_PORT": port, "DB_USER": "root", "DB_PASSWORD": password, "DB_NAME": name}, clue


@pytest.mark.parametrize("debug", [False, True], ids=["info", "debug"])
@pytest.mark.parametrize("target", ["url, refused", "url, missing", "db parts, refused", "db parts, missing"])
def test_failing_connection_is_clear_and_leaks_no_secret(run_cli, target: str, debug: bool) -> None:
    secrets = distinctive()
    password = f"db-pw-{uuid.uuid4().hex[:8]}"
    variables, clue = connection_target(target, password)
    env = {**secrets, **variables, "DB_CONNECT_TIMEOUT": "5s"}
    if debug:
        env.update(DEBUG="true", LOG_LEVEL="debug")
    all_secrets = [*secrets.values(), password]

    result = run_cli("once", env=env)

    if "refused" in target:
        assert result.exit_code == 1, result.everything()
    assert result.exit_code not in (0, 75), result.everything()
    assert result.stderr.startswith("montage-vec: "), result.everything()
    assert clue in result.stderr, result.everything()
    assert "connection" in result.stderr.lower() and "database" in result.stderr, result.everything()
    assert "Traceback" not in result.everything()
    assert_nowhere(all_secrets, result.stdout, result.stderr)

    # The run's error itself, as an embedding caller would see it.
    summary = wiring_run_once(load_settings(), RunOptions(), RunControl(), JobMetrics())
    assert summary.status == "failed" and isinstance(summary.error, MontageVecError)
    shown = "".join(traceback.format_exception(summary.error))
    assert_nowhere(all_secrets, str(summary.error), repr(summary.error), shown, json.dumps(summary.fields()))


@pytest.mark.postgres
def test_debug_run_leaks_no_secret(postgres_url: str, run_cli) -> None:
    """DEBUG=true at debug level, with every secret set and an inline password (trust auth ignores it)."""
    secrets = distinctive()
    url_password = f"url-pw-{uuid.uuid4().hex[:8]}"
    some_checkins(postgres_url, users=2)
    with FakeService(lambda request: Reply.of({})) as users_service:
        env = {
            **secrets,
            "DATABASE_URL": with_password(postgres_url, url_password),
            "DEBUG": "true",
            "LOG_LEVEL": "debug",
            "USER_SERVICE_URL": users_service.url,
        }
        result = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)
        assert result.exit_code == 0, result.stdout + result.stderr
        # The service did get the key: it was in play, just never printed.
        assert users_service.requests[0].headers["x-api-key"] == secrets["USER_SERVICE_API_KEY"]
    configuration = result.log("effective configuration")["configuration"]
    for name in (*SECRET_VARIABLES, "DATABASE_URL"):
        assert configuration[name.lower()] == "***"
    stored = json.dumps(events(postgres_url), default=str) + run_log_messages(postgres_url)
    assert_nowhere([*secrets.values(), url_password], result.stdout, result.stderr, stored)


def test_user_service_failure_leaks_no_secret(duckdb_url: str, run_cli) -> None:
    """The service answers 500 and echoes the key back in its body and a header."""
    secrets = distinctive()
    key = secrets["USER_SERVICE_API_KEY"]

    def echo_key(request: Any) -> Reply:
        return Reply(500, f"bad key {request.headers.get('x-api-key')}".encode(), "text/plain")

    some_checkins(duckdb_url, users=2)
    with FakeService(echo_key) as users_service:
        env = {**secrets, "USER_SERVICE_URL": users_service.url, "USER_SERVICE_RETRIES": "1", "LOG_LEVEL": "debug"}
        result = run_once(run_cli, duckdb_url, "--concurrency", "1", env=env)  # one chunk, one notice
        assert len(users_service.requests) == 2
    assert any("cache invalidation" in entry["message"] for entry in result.logs if entry["level"] == "error")
    stored = json.dumps(events(duckdb_url), default=str) + run_log_messages(duckdb_url)
    assert_nowhere([*secrets.values(), key], result.stdout, result.stderr, stored)


def test_failed_run_log_row_leaks_no_secret(duckdb_url: str, run_cli) -> None:
    """A run that fails mid-way (check-in query unavailable) records why, without secrets."""
    secrets = distinctive()
    rows = some_checkins(duckdb_url, users=1)
    user = rows[0]["user_id"]

    def half_broken(request: Any) -> Reply:
        if request.path.endswith("/latest-update"):
            return Reply.of({"max_updated_at": AS_OF.isoformat()})
        if request.path.endswith("/users"):
            return Reply.of({"user_ids": [user], "next_cursor": None})
        return Reply(503, f"down, key {request.headers.get('x-api-key')}".encode(), "text/plain")

    with FakeService(half_broken) as checkins:
        env = {**secrets, "CHECKIN_SOURCE": "http", "CHECKIN_SERVICE_URL": checkins.url, "CHUNK_RETRY_ATTEMPTS": "0"}
        result = run_cli("once", env={"DATABASE_URL": duckdb_url, **env})
    assert result.exit_code == 1
    messages = run_log_messages(duckdb_url)
    assert "check-in service" in messages
    assert_nowhere(list(secrets.values()), result.stdout, result.stderr, messages)


def test_checkin_service_down_leaks_no_secret(duckdb_url: str, run_cli) -> None:
    secrets = distinctive()
    load_checkins(duckdb_url, [])
    env = {**secrets, "DATABASE_URL": duckdb_url, "CHECKIN_SOURCE": "http", "CHECKIN_SERVICE_URL": closed_port_url()}
    result = run_cli("once", env=env)
    assert result.exit_code == 1
    assert_nowhere(list(secrets.values()), result.stdout, result.stderr)


def test_api_key_with_a_trailing_newline_never_leaks(duckdb_url: str, run_cli) -> None:
    visible = f"newline-key-{uuid.uuid4().hex[:8]}"
    some_checkins(duckdb_url, users=1)
    with FakeService(lambda request: Reply.of({})) as users_service:
        env = {
            "USER_SERVICE_URL": users_service.url,
            "USER_SERVICE_API_KEY": visible + "\n",
            "USER_SERVICE_RETRIES": "0",
        }
        result = run_once(run_cli, duckdb_url, env=env)
    assert_nowhere([visible], result.stdout, result.stderr)
