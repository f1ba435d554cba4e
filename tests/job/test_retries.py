"""How long a chunk that failed transiently is retried (montage_vec.job.backoff, issue 10 defect 5).

Two budgets: CHUNK_RETRY_ATTEMPTS retries, and DB_RECONNECT_TIMEOUT since the first failure,
which is what rides out a database restart. The time budget is the database's only: a
check-in service that keeps failing gets the attempts, not a minute of retries. Waits double
from 0.5 s up to 10 s. The policy's clock is replaced in its unit tests, so nothing sleeps.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import islice
from types import SimpleNamespace

import pytest

from montage_vec.datagen import DEFAULT_AS_OF
from montage_vec.job import backoff
from montage_vec.job.backoff import RetryPolicy
from tests.support.cli import RunCli
from tests.support.data import expected_synthetic, load_checkins, load_frame, new_id, stored_montages, synthetic
from tests.support.database import count
from tests.support.interference import WriteGate, terminate
from tests.support.servers import FakeService, Reply, Request

TRANSIENT_RETRY = "transient error; retrying the chunk on a new connection"


# -- the policy ------------------------------------------------------------------------------------


class FakeClock:
    """Stands in for `time` in montage_vec.job.backoff: monotonic() is whatever the test set."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(backoff, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_waits_double_from_half_a_second_up_to_ten(clock: FakeClock) -> None:
    waits = list(RetryPolicy(attempts=8, timeout=timedelta(0)).waits())
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


@pytest.mark.parametrize("attempts", [0, 1, 3])
def test_without_a_time_budget_the_waits_end_after_the_attempts(clock: FakeClock, attempts: int) -> None:
    assert len(list(RetryPolicy(attempts, timedelta(0)).waits())) == attempts


def test_the_attempts_are_spent_even_when_the_time_is_up(clock: FakeClock) -> None:
    waits = RetryPolicy(attempts=3, timeout=timedelta(seconds=1)).waits()
    assert next(waits) == 0.5  # the first failure: the time budget starts
    clock.now += 100
    assert list(waits) == [1.0, 2.0]


def test_retries_go_on_past_the_attempts_while_time_remains(clock: FakeClock) -> None:
    waits = RetryPolicy(attempts=1, timeout=timedelta(seconds=30)).waits()
    assert next(waits) == 0.5  # the one attempt; the time budget starts now
    clock.now += 1
    assert next(waits) == 1.0
    clock.now += 28.9
    assert list(islice(waits, 5)) == [2.0, 4.0, 8.0, 10.0, 10.0], "still within 30 s of the first failure"
    clock.now += 0.1  # 30 s since the first failure
    assert next(waits, None) is None


# -- a check-in service that keeps failing gets the attempts only ------------------------------------

BASE = "/internal/checkins"
CLIENT_TRIES = 4  # the check-in service client's own 3 retries, within one chunk attempt


def test_a_failing_check_in_service_is_tried_chunk_retry_attempts_plus_one_times(
    duckdb_url: str, run_cli: RunCli
) -> None:
    load_checkins(duckdb_url, [])  # migrated; the check-ins are behind the service
    user = new_id()

    def unavailable_queries(request: Request) -> Reply:
        if request.path == f"{BASE}/latest-update":
            return Reply.of({"max_updated_at": None})
        if request.path in (f"{BASE}/users", f"{BASE}/changed-users"):
            return Reply.of({"user_ids": [user], "next_cursor": None})
        if request.path == f"{BASE}/query":
            return Reply(503, b"maintenance", "text/plain")
        return Reply.of({"error": "not found"}, status=404)

    env = {
        "DATABASE_URL": duckdb_url,
        "CHECKIN_SOURCE": "http",
        "CHECKIN_SERVICE_API_KEY": "retries-test-api-key-R7q",  # a registered secret: never a common word
        "CHUNK_RETRY_ATTEMPTS": "2",  # DB_RECONNECT_TIMEOUT keeps its default of a minute
    }
    with FakeService(unavailable_queries) as service:
        result = run_cli("once", env={**env, "CHECKIN_SERVICE_URL": service.url})
        queries = len(service.received("POST", f"{BASE}/query"))

    assert result.exit_code == 1, result.everything()
    assert "failed 3 time(s)" in result.stderr and "503" in result.stderr, result.everything()
    assert queries == 3 * CLIENT_TRIES
    retried = [entry["attempt"] for entry in result.logs if entry["message"] == TRANSIENT_RETRY]
    assert retried == [1, 2]


# -- a lost database connection is retried while DB_RECONNECT_TIMEOUT lasts ----------------------------


@pytest.mark.postgres
def test_a_lost_connection_is_retried_beyond_the_attempts_while_time_remains(
    postgres_url: str, run_cli: RunCli
) -> None:
    """With no retry attempts at all, a chunk whose connection was killed is still retried:
    DB_RECONNECT_TIMEOUT (a minute by default) has not run out. It used to fail the run."""
    users = 200
    load_frame(postgres_url, synthetic(users))

    def kill_the_worker_mid_chunk(gate: WriteGate) -> int:
        gate.wait_until_blocked()  # chunk 1 waits mid-write
        return terminate(postgres_url, "workers")

    env = {"DATABASE_URL": postgres_url, "CHUNK_RETRY_ATTEMPTS": "0"}
    args = ("--as-of", DEFAULT_AS_OF.isoformat(), "--batch-size", "100", "--concurrency", "1")
    with WriteGate(postgres_url) as gate, gate.meanwhile(kill_the_worker_mid_chunk) as killing:
        result = run_cli("once", *args, env=env)
    assert killing.result() == 1, "the chunk's worker connection"

    assert result.exit_code == 0, result.everything()
    assert [entry["attempt"] for entry in result.logs if entry["message"] == TRANSIENT_RETRY] == [1]
    summary = result.log("Batch job completed")
    assert (summary["processed"], summary["errors"]) == (users, 0)
    assert stored_montages(postgres_url) == expected_synthetic(users)
    assert count(postgres_url, "montage_job_watermarks") == 1
