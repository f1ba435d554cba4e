"""Prometheus metrics: `montage-vec once` pushing to a real Pushgateway (grouping key, replace
semantics, failed runs, an unreachable gateway) and JobMetrics' bookkeeping.

The runs happen in this process: each builds its own JobMetrics (its own registry), exactly
as a new process would."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from montage_vec.job.chunks import ChunkResult
from montage_vec.job.summary import RunSummary
from montage_vec.observability.metrics import PUSH_JOB, JobMetrics
from tests.support.cli import CliResult, RunCli
from tests.support.data import AS_OF, checkin, days, load_checkins, new_id
from tests.support.servers import closed_port_url, samples, single_value

LAST_SUCCESS = "montage_batch_last_success_timestamp_seconds"
LAST_COMPLETION = "montage_batch_last_completion_timestamp_seconds"
USERS_PROCESSED = "montage_batch_users_processed_total"
RUNS = "montage_batch_runs_total"
GROUP = {"job": PUSH_JOB, "shard": "0/1"}


def add_users(url: str, count: int, updated_at: datetime) -> list[str]:
    users = [new_id() for _ in range(count)]
    load_checkins(url, [checkin(user, AS_OF - days(i + 1), tags=["coffee"], updated_at=updated_at)
                        for user in users for i in range(3)])  # fmt: skip
    return users


def once(run_cli: RunCli, url: str, gateway: str, *args: str, as_of: datetime = AS_OF, **env: str) -> CliResult:
    """`montage-vec once` pushing to `gateway`, whatever its outcome."""
    return run_cli(
        "once", "--as-of", as_of.isoformat(), *args, env={"DATABASE_URL": url, "PUSHGATEWAY_URL": gateway, **env}
    )


def gateway_metrics(gateway: str) -> str:
    response = httpx.get(f"{gateway}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def test_once_pushes_its_metrics_and_a_second_run_replaces_the_group(
    duckdb_url: str, pushgateway_url: str, run_cli: RunCli
) -> None:
    add_users(duckdb_url, 2, updated_at=AS_OF - days(1))
    before = time.time()
    first = once(run_cli, duckdb_url, pushgateway_url)
    assert first.exit_code == 0, first.everything()
    assert first.log("Batch job completed")["processed"] == 2

    text = gateway_metrics(pushgateway_url)
    # The grouping key: job and shard; the shard's '/' survives the trip (base64 in the push URL).
    assert f'{LAST_SUCCESS}{{instance="",job="montage_batch",shard="0/1"}} ' in text
    success = single_value(text, LAST_SUCCESS, **GROUP)
    assert before <= success <= time.time()
    assert single_value(text, LAST_COMPLETION, **GROUP) == success
    assert single_value(text, USERS_PROCESSED, **GROUP) == 2
    assert single_value(text, RUNS, status="completed", **GROUP) == 1
    assert single_value(text, "montage_batch_montages_generated_total", kind="general", **GROUP) == 2
    assert single_value(text, "montage_batch_montages_generated_total", kind="interest", **GROUP) == 2
    assert single_value(text, "montage_batch_duration_seconds", **GROUP) > 0
    assert single_value(text, "montage_batch_errors_total", **GROUP) == 0

    # A second run with different work replaces the group: values are the second run's, once.
    add_users(duckdb_url, 3, updated_at=AS_OF + days(1))
    second = once(run_cli, duckdb_url, pushgateway_url, as_of=AS_OF + days(2))
    assert second.exit_code == 0, second.everything()
    processed = second.log("Batch job completed")["processed"]
    assert processed >= 3  # at least the new users

    text = gateway_metrics(pushgateway_url)
    assert len(samples(text, LAST_SUCCESS)) == 1, "one group, not one per run"
    assert len(samples(text, "push_time_seconds", job=PUSH_JOB)) == 1
    assert single_value(text, LAST_SUCCESS, **GROUP) > success
    assert single_value(text, USERS_PROCESSED, **GROUP) == processed  # not 2 + processed
    assert single_value(text, RUNS, status="completed", **GROUP) == 1

    # Another shard is another group; shard 0/1's values stay.
    other = once(run_cli, duckdb_url, pushgateway_url, "--full", MONTAGE_SHARD="1/2")
    assert other.exit_code == 0, other.everything()
    text = gateway_metrics(pushgateway_url)
    assert {labels["shard"] for labels, _ in samples(text, LAST_SUCCESS, job=PUSH_JOB)} == {"0/1", "1/2"}
    assert single_value(text, USERS_PROCESSED, **GROUP) == processed
    assert (
        single_value(text, USERS_PROCESSED, job=PUSH_JOB, shard="1/2") == other.log("Batch job completed")["processed"]
    )


def succeed_then_time_out(run_cli: RunCli, url: str, gateway: str) -> tuple[str, str]:
    """A successful run, then one stopped by BATCH_PROCESSING_TIMEOUT; the gateway text after each."""
    add_users(url, 2, updated_at=AS_OF - days(1))
    first = once(run_cli, url, gateway)
    assert first.exit_code == 0, first.everything()
    after_success = gateway_metrics(gateway)
    failed = once(run_cli, url, gateway, "--full", BATCH_PROCESSING_TIMEOUT="1ms")
    assert failed.exit_code == 124, failed.everything()
    assert failed.log("Batch job failed")["status"] == "timeout"
    return after_success, gateway_metrics(gateway)


def test_failed_run_pushes_its_completion_and_keeps_the_previous_success(
    duckdb_url: str, pushgateway_url: str, run_cli: RunCli
) -> None:
    after_success, after_failure = succeed_then_time_out(run_cli, duckdb_url, pushgateway_url)
    assert single_value(after_failure, LAST_COMPLETION, **GROUP) > single_value(after_success, LAST_COMPLETION, **GROUP)
    assert single_value(after_failure, LAST_SUCCESS, **GROUP) == single_value(after_success, LAST_SUCCESS, **GROUP)
    assert single_value(after_failure, RUNS, status="timeout", **GROUP) == 1
    assert samples(after_failure, RUNS, status="completed", **GROUP) == []


def test_run_failing_before_it_starts_still_pushes_its_completion(
    duckdb_url: str, pushgateway_url: str, run_cli: RunCli
) -> None:
    before = time.time()
    failed = once(run_cli, duckdb_url, pushgateway_url)  # the DuckDB file was never migrated
    assert failed.exit_code == 3, failed.everything()
    text = gateway_metrics(pushgateway_url)
    assert single_value(text, LAST_COMPLETION, **GROUP) >= before
    assert single_value(text, RUNS, status="failed", **GROUP) == 1


@pytest.mark.timeout(60)  # hang guard: a push to a closed port must fail, not wait
def test_unreachable_gateway_logs_an_error_and_the_run_still_succeeds(duckdb_url: str, run_cli: RunCli) -> None:
    add_users(duckdb_url, 1, updated_at=AS_OF - days(1))
    result = once(run_cli, duckdb_url, closed_port_url())
    assert result.exit_code == 0, result.everything()
    failure = result.log("metrics push failed; the run's outcome stands")
    assert failure["level"] == "error"
    assert "Pushgateway" in failure["error"]
    assert result.logs[-1]["message"] == "Batch job completed"
    assert result.logs[-1]["processed"] == 1


# -- JobMetrics --------------------------------------------------------------------------------------


def test_job_metrics_count_chunks_and_runs() -> None:
    metrics = JobMetrics()
    value = metrics.registry.get_sample_value
    started = datetime(2026, 6, 1, 3, tzinfo=UTC)
    summary = RunSummary(job_id="batch_1", mode="full", as_of=started, started_at=started)

    metrics.run_started(summary)
    assert value("montage_batch_users_processed_total") == 0
    assert value(LAST_SUCCESS) == 0

    metrics.chunk_finished(summary, ChunkResult(
        users=500, successful=498, general_montages=490, interest_montages=120, montages_written=300,
        failures=[("u1", "boom"), ("u2", "boom")], seconds={"extract": 0.1, "compute": 0.2, "write": 0.3},
    ))  # fmt: skip
    metrics.chunk_finished(summary, ChunkResult(users=20, successful=20, general_montages=20, seconds={"write": 2.0}))
    assert value("montage_batch_users_processed_total") == 520
    assert value("montage_batch_errors_total") == 2
    assert value("montage_batch_montages_generated_total", {"kind": "general"}) == 510
    assert value("montage_batch_montages_generated_total", {"kind": "interest"}) == 120
    assert value("montage_batch_montages_written_total") == 300
    assert value("montage_batch_chunk_duration_seconds_count") == 2
    assert value("montage_batch_chunk_duration_seconds_sum") == pytest.approx(2.6)
    assert value("montage_batch_chunk_duration_seconds_bucket", {"le": "0.5"}) == 0
    assert value("montage_batch_chunk_duration_seconds_bucket", {"le": "1.0"}) == 1
    assert value("montage_batch_chunk_duration_seconds_bucket", {"le": "2.5"}) == 2

    metrics.run_finished(summary)  # not finished yet: nothing recorded
    assert value(LAST_COMPLETION) == 0
    assert value(RUNS, {"status": "running"}) is None

    summary.status, summary.finished_at = "completed", started + timedelta(seconds=42)
    metrics.run_finished(summary)
    assert value(LAST_SUCCESS) == value(LAST_COMPLETION) == summary.finished_at.timestamp()
    assert value("montage_batch_duration_seconds") == 42
    assert value(RUNS, {"status": "completed"}) == 1

    later = RunSummary(job_id="batch_2", mode="incremental", as_of=started, started_at=started + timedelta(hours=1))
    later.status, later.finished_at = "interrupted", later.started_at + timedelta(seconds=5)
    metrics.run_finished(later)
    assert value(LAST_COMPLETION) == later.finished_at.timestamp()
    assert value(LAST_SUCCESS) == summary.finished_at.timestamp(), "only a completed run moves last_success"
    assert value("montage_batch_duration_seconds") == 5
    assert value(RUNS, {"status": "interrupted"}) == 1
    assert value(RUNS, {"status": "completed"}) == 1

    exposition = metrics.exposition().decode()
    assert f"{LAST_SUCCESS} " in exposition
    assert 'montage_batch_runs_total{status="interrupted"} 1.0' in exposition
