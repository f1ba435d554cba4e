"""Cache invalidation against a real HTTP user service on 127.0.0.1."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from typing import Any

import pytest

from tests.support.cli import job_id_of, run_once
from tests.support.data import AS_OF, checkin, days, expected_montages, load_checkins, new_id, stored_montages
from tests.support.outbox import INVALIDATED, events
from tests.support.servers import FakeService, Reply, Request, closed_port_url

PATH = "/internal/montages/cache-invalidations"
API_KEY = "user-service-key-7Hq2"


def ok(request: Request) -> Reply:
    return Reply.of({"accepted": True}, status=202)


def coffee_rows(users: list[str], per_user: int = 3) -> list[dict[str, Any]]:
    return [checkin(user, AS_OF - days(i + 1), tags=["Coffee"]) for user in users for i in range(per_user)]


def service_env(service: FakeService, **extra: str) -> dict[str, str]:
    return {"USER_SERVICE_URL": service.url, "USER_SERVICE_API_KEY": API_KEY, **extra}


def invalidated_users(requests: list[Request]) -> list[str]:
    return [user for request in requests for user in request.json()["user_ids"]]


def test_changed_users_are_posted_with_the_api_key(database_url: str, run_cli) -> None:
    users = sorted(new_id() for _ in range(5))
    quiet = new_id()  # only private check-ins: no montage, nothing to invalidate
    rows = [*coffee_rows(users), checkin(quiet, AS_OF - days(1), privacy="private")]
    load_checkins(database_url, rows)
    with FakeService(ok) as service:
        first = run_once(run_cli, database_url, env=service_env(service, MONTAGE_BATCH_SIZE="2"))
        job = job_id_of(first)
        calls = service.received()
        assert calls, "no call reached the user service"
        for call in calls:
            assert (call.method, call.path) == ("POST", PATH)
            assert call.headers["x-api-key"] == API_KEY
            assert call.headers["content-type"].startswith("application/json")
            body = call.json()
            assert set(body) == {"job_id", "user_ids"}
            assert body["job_id"] == job
        posted = invalidated_users(calls)
        assert sorted(posted) == users  # exactly the changed users, each once
        assert len(calls) == 3  # one call per committed chunk of 2 users (5 users, one without changes)
        assert set(posted) == {row["aggregate_id"] for row in events(database_url, job_id=job, type=INVALIDATED)}

        # Nothing changed: no call at all.
        run_once(run_cli, database_url, env=service_env(service))
        assert len(service.received()) == 3

        # One user's check-in changes: that user alone.
        edited = next(row for row in rows if row["user_id"] == users[2])
        load_checkins(database_url, [{**edited, "text_content": "new", "updated_at": AS_OF + timedelta(hours=1)}])
        third = run_once(run_cli, database_url, env=service_env(service))
        later = service.received()[3:]
        assert [call.json() for call in later] == [{"job_id": job_id_of(third), "user_ids": [users[2]]}]

        # A user deletes every check-in: the montages go, and the service hears about it.
        gone = [
            {**row, "deleted_at": AS_OF, "updated_at": AS_OF + timedelta(hours=2)}
            for row in rows
            if row["user_id"] == users[4]
        ]
        load_checkins(database_url, gone)
        fourth = run_once(run_cli, database_url, env=service_env(service))
        latest = service.received()[4:]
        assert [call.json() for call in latest] == [{"job_id": job_id_of(fourth), "user_ids": [users[4]]}]
        assert users[4] not in {m[0] for m in stored_montages(database_url)[0]}


def test_more_than_a_thousand_users_are_split_into_calls_of_at_most_1000(duckdb_url: str, run_cli) -> None:
    users = sorted(new_id() for _ in range(1001))
    load_checkins(duckdb_url, [checkin(user, AS_OF - days(1)) for user in users])
    with FakeService(ok) as service:
        # One chunk of 1,001 changed users (one worker: two would split them into 500 and 501).
        run_once(run_cli, duckdb_url, env=service_env(service, MAX_CONCURRENT_GENERATIONS="1"))
        calls = service.received()
    assert sorted(len(call.json()["user_ids"]) for call in calls) == [1, 1000]
    assert sorted(invalidated_users(calls)) == users


def test_dry_run_posts_nothing(duckdb_url: str, run_cli) -> None:
    load_checkins(duckdb_url, coffee_rows([new_id()]))
    with FakeService(ok) as service:
        run_once(run_cli, duckdb_url, "--dry-run", env=service_env(service))
        assert service.received() == []


def flaky(failures: int, status: int = 503) -> Any:
    """`failures` answers of `status`, then 200s."""
    counter = itertools.count()
    lock = threading.Lock()

    def respond(request: Request) -> Reply:
        with lock:
            number = next(counter)
        return Reply(status, b"busy", "text/plain") if number < failures else Reply.of({})

    return respond


def test_transient_failures_are_retried_until_success(duckdb_url: str, run_cli) -> None:
    user = new_id()
    load_checkins(duckdb_url, coffee_rows([user]))
    with FakeService(flaky(2)) as service:
        result = run_once(run_cli, duckdb_url, env=service_env(service))
        calls = service.received()
    assert len(calls) == 3
    assert all(call.json() == calls[0].json() for call in calls)
    assert calls[0].json()["user_ids"] == [user]
    assert not [entry for entry in result.logs if entry["level"] == "error"], result.stdout


def test_client_errors_are_not_retried(duckdb_url: str, run_cli) -> None:
    load_checkins(duckdb_url, coffee_rows([new_id()]))
    with FakeService(flaky(100, status=401)) as service:
        result = run_once(run_cli, duckdb_url, env=service_env(service))
        assert len(service.received()) == 1
    failure = result.log("cache invalidation failed; montages are committed and the outbox keeps the events")
    assert "401" in failure["error"]


def always_500(request: Request) -> Reply:
    return Reply(500, f"internal error for key {request.headers.get('x-api-key')}".encode(), "text/plain")


@pytest.mark.parametrize("outage", ["always 500", "down"])
def test_an_unavailable_service_never_fails_the_run(duckdb_url: str, run_cli, outage: str) -> None:
    users = [new_id(), new_id()]
    rows = coffee_rows(users)
    load_checkins(duckdb_url, rows)
    # One worker, so both users are in one chunk and one notice.
    env = {"USER_SERVICE_API_KEY": API_KEY, "USER_SERVICE_RETRIES": "1", "MAX_CONCURRENT_GENERATIONS": "1"}
    if outage == "down":
        result = run_once(run_cli, duckdb_url, env={**env, "USER_SERVICE_URL": closed_port_url()})
    else:
        with FakeService(always_500) as service:
            result = run_once(run_cli, duckdb_url, env={**env, "USER_SERVICE_URL": service.url})
            assert len(service.received()) == 2  # the call and its one retry
    assert stored_montages(duckdb_url) == expected_montages(rows, AS_OF)
    errors = [entry for entry in result.logs if entry["level"] == "error"]
    assert errors and all("cache invalidation" in entry["message"] for entry in errors)
    assert errors[0]["job_id"] == job_id_of(result)
    assert errors[0]["users"] == 2
    assert result.log("Batch job completed")["successful"] == 2
    # The outbox still holds what the service missed.
    assert {row["aggregate_id"] for row in events(duckdb_url, type=INVALIDATED)} == set(users)
    assert API_KEY not in result.stdout + result.stderr


def test_no_user_service_configured_means_no_calls_and_no_errors(duckdb_url: str, run_cli) -> None:
    load_checkins(duckdb_url, coffee_rows([new_id()]))
    with FakeService(ok) as service:
        result = run_once(run_cli, duckdb_url, env={"USER_SERVICE_API_KEY": API_KEY})
        assert service.received() == []
    assert not [entry for entry in result.logs if entry["level"] == "error"]
