"""The scheduler daemon as a real subprocess: cron slots (MONTAGE_SCHEDULE with a seconds
field), failed runs that do not end it, /healthz and /metrics over real HTTP, single-user
regeneration (ENABLE_REALTIME_GENERATION) and SIGTERM; plus `next_run_time` in a time zone."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from montage_vec.config import load_settings
from montage_vec.runtime.scheduler import next_run_time
from tests.support.data import checkin, days, expected_montages, load_checkins, new_id, stored_montages
from tests.support.database import query
from tests.support.processes import JobProcess, free_port, job_env, wait_until
from tests.support.servers import samples, single_value

EVERY_TWO_SECONDS = "* * * * * */2"  # croniter: a sixth field is seconds
NEVER_DURING_THE_TEST = "0 0 1 1 *"


def daemon_env(url: str, port: int, schedule: str, **extra: str) -> dict[str, str]:
    return job_env(
        DATABASE_URL=url, METRICS_PORT=str(port), METRICS_HOST="127.0.0.1", MONTAGE_SCHEDULE=schedule, **extra
    )


def stop(daemon: JobProcess) -> None:
    """SIGTERM ends the daemon with exit code 0, "scheduler stopped" being its last word.

    The wait's timeout is a hang guard: a daemon asleep until its next slot (January, for
    NEVER_DURING_THE_TEST) must be woken by the signal, or it never exits."""
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=60)
    assert code == 0, daemon.output()
    final = daemon.logs()[-1]
    assert (final["message"], final["reason"]) == ("scheduler stopped", "interrupted"), daemon.output()


def healthz(base: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["status"] == "ok"
    return body


@pytest.mark.slow
@pytest.mark.postgres
def test_scheduler_runs_on_schedule_survives_a_failed_run_and_serves_health_and_metrics(
    postgres_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The database starts unmigrated, so the first scheduled runs fail.
    with JobProcess("scheduler", env=daemon_env(postgres_url, port, EVERY_TWO_SECONDS), cwd=tmp_path) as daemon:
        daemon.wait_for_log("scheduler started", timeout=60)
        _, scheduled = daemon.wait_for_log("next run scheduled", timeout=60)
        next_run = datetime.fromisoformat(scheduled["next_run"])
        assert next_run.second % 2 == 0 and next_run.microsecond == 0
        logged_at = datetime.fromisoformat(scheduled["timestamp"].replace("Z", "+00:00"))
        assert timedelta(0) < next_run - logged_at <= timedelta(seconds=2)

        failed_at, failed = daemon.wait_for_log("Batch job failed", timeout=60)
        assert failed["error_type"] == "SchemaNotMigratedError"
        daemon.wait_for_log("next run scheduled", timeout=60, after=failed_at)
        assert daemon.process.poll() is None, "a failed run must not end the daemon"
        health = healthz(base)
        assert health["last_run"]["status"] == "failed"
        assert "next_run" in health

        # Migrate and add check-ins: a later slot's run completes.
        now = datetime.now(UTC)
        users = sorted(new_id() for _ in range(3))
        rows = [checkin(user, now - days(i + 1), tags=["coffee"]) for user in users for i in range(3)]
        loaded_at = time.time()  # before the load: a run that sees the rows ends after this
        load_checkins(postgres_url, rows)
        _, completed = daemon.wait_for_log(
            "Batch job completed", timeout=60, after=failed_at, where=lambda entry: entry["processed"] == 3
        )
        assert (completed["status"], completed["errors"], completed["interest_montages"]) == ("completed", 0, 3)
        stored = query(postgres_url, "SELECT DISTINCT user_id::VARCHAR AS user_id FROM montages ORDER BY 1")
        assert stored["user_id"].to_list() == users

        # /healthz reports a completed run once the daemon has recorded it, just after its log line.
        last_run = wait_until(
            lambda: (run := healthz(base)["last_run"])["status"] == "completed" and run,
            "/healthz reporting the completed run",
        )
        assert last_run["job_id"].startswith("batch_")

        response = httpx.get(f"{base}/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        # The successful run is the one after the check-ins were loaded.
        assert single_value(text, "montage_batch_last_success_timestamp_seconds") > loaded_at
        assert single_value(text, "montage_batch_users_processed_total") >= 3
        assert single_value(text, "montage_batch_runs_total", status="completed") >= 1
        assert samples(text, "montage_batch_chunk_duration_seconds_count")

        assert httpx.get(f"{base}/nothing-here", timeout=10).status_code == 404
        # Without ENABLE_REALTIME_GENERATION there is no regeneration endpoint.
        assert httpx.post(f"{base}/montages/{users[0]}/regenerate", timeout=10).status_code == 404

        stop(daemon)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=2)


def response_rows(body: dict[str, Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The regeneration answer in tests.support.data.stored_montages' form."""
    user = body["user_id"]

    def moment(text: str | None) -> datetime | None:
        return None if text is None else datetime.fromisoformat(text)

    montages = sorted(
        (user, m["kind"], m["interest"], int(m["item_count"]), moment(m["valid_until"])) for m in body["montages"]
    )

    def item(i: dict[str, Any]) -> tuple[Any, ...]:
        metadata = json.dumps(i["widget_metadata"], sort_keys=True)
        created, position = moment(i["checkin_created_at"]), int(i["position"])
        return (user, i["kind"], i["interest"], position, i["checkin_id"], created, i["widget_type"], metadata)

    return montages, sorted(item(i) for i in body["items"])


@pytest.mark.slow
@pytest.mark.postgres
def test_realtime_regeneration_endpoint(postgres_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    user, bystander = new_id(), new_id()
    mine = [checkin(user, now - days(i + 1), tags=["Coffee", "hiking"], text_content=f"day {i}") for i in range(4)]
    mine.append(checkin(user, now - days(6), media_url="https://m.example/a.jpg", media_type="image"))
    mine.append(checkin(user, now - days(7), privacy="private", tags=["secret"]))
    theirs = [checkin(bystander, now - days(2), tags=["tea"])]
    load_checkins(postgres_url, mine + theirs)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = daemon_env(postgres_url, port, NEVER_DURING_THE_TEST, ENABLE_REALTIME_GENERATION="true")
    with JobProcess("scheduler", env=env, cwd=tmp_path) as daemon:
        daemon.wait_for_log("HTTP endpoints listening", timeout=60)

        response = httpx.post(f"{base}/montages/{user}/regenerate", timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["user_id"] == user
        assert body["job_id"].startswith("realtime_")
        expected = expected_montages(mine, datetime.now(UTC))
        assert len(expected[0]) == 3  # general, coffee, hiking
        assert response_rows(body) == expected
        # Stored too, and only for the user asked about.
        assert stored_montages(postgres_url) == expected

        # Upper-case ids name the same user; montage ids are stable across regenerations.
        again = httpx.post(f"{base}/montages/{user.upper()}/regenerate", timeout=30)
        assert again.status_code == 200, again.text
        assert again.json()["user_id"] == user
        assert sorted(m["id"] for m in again.json()["montages"]) == sorted(m["id"] for m in body["montages"])

        bad = httpx.post(f"{base}/montages/not-a-user/regenerate", timeout=30)
        assert bad.status_code == 400
        assert "not a user id" in bad.json()["error"]

        nobody = httpx.post(f"{base}/montages/{new_id()}/regenerate", timeout=30)
        assert nobody.status_code == 200, nobody.text
        assert (nobody.json()["montages"], nobody.json()["items"]) == ([], [])

        assert httpx.get(f"{base}/montages/{user}/regenerate", timeout=10).status_code == 404
        assert "last_run" not in healthz(base)  # no scheduled run happened
        assert query(postgres_url, "SELECT count(*) AS n FROM montage_job_runs")["n"][0] == 0

        stop(daemon)  # asleep until January: SIGTERM must still end it at once


# -- next_run_time -------------------------------------------------------------------------------


def settings(schedule: str, time_zone: str) -> Any:
    return load_settings(
        montage_schedule=schedule, montage_schedule_tz=time_zone, database_url="duckdb:///unused.duckdb"
    )


@pytest.mark.parametrize(
    ("after", "expected_utc"),
    [
        (datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 1, 16, 2, tzinfo=UTC)),  # CET, UTC+1
        (datetime(2026, 7, 15, 12, tzinfo=UTC), datetime(2026, 7, 16, 1, tzinfo=UTC)),  # CEST, UTC+2
        (datetime(2026, 1, 15, 1, 59, 59, tzinfo=UTC), datetime(2026, 1, 15, 2, tzinfo=UTC)),  # same day
        (datetime(2026, 1, 15, 2, tzinfo=UTC), datetime(2026, 1, 16, 2, tzinfo=UTC)),  # strictly after
        (datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 29, 1, tzinfo=UTC)),  # spring forward
        (datetime(2026, 10, 24, 12, tzinfo=UTC), datetime(2026, 10, 25, 2, tzinfo=UTC)),  # fall back
    ],
)
def test_next_run_time_honours_the_schedule_time_zone(after: datetime, expected_utc: datetime) -> None:
    upcoming = next_run_time(settings("0 3 * * *", "Europe/Berlin"), after)
    assert upcoming.utcoffset() is not None
    assert upcoming == expected_utc
    assert upcoming.astimezone(UTC).hour in (1, 2)
    assert (upcoming.hour, upcoming.minute) == (3, 0)  # 03:00 on the Berlin wall clock


def test_next_run_time_defaults_to_utc_and_accepts_non_utc_input() -> None:
    new_york = datetime(2026, 1, 15, 12, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    upcoming = next_run_time(settings("0 3 * * *", "UTC"), new_york)
    assert upcoming == datetime(2026, 1, 16, 3, tzinfo=UTC)
    tokyo = next_run_time(settings("0 3 * * *", "Asia/Tokyo"), datetime(2026, 1, 15, 12, tzinfo=UTC))
    assert tokyo == datetime(2026, 1, 15, 18, tzinfo=UTC)  # 03:00 JST on the 16th


def test_daily_slot_runs_once_on_the_fall_back_day() -> None:
    daily = settings("30 2 * * *", "Europe/Berlin")
    moment = datetime(2026, 10, 24, 12, tzinfo=UTC)
    slots = []
    while moment < datetime(2026, 10, 27, tzinfo=UTC):
        moment = next_run_time(daily, moment)
        slots.append(moment.astimezone(UTC))
    local_days = [slot.astimezone(ZoneInfo("Europe/Berlin")).date() for slot in slots]
    assert len(local_days) == len(set(local_days)), f"several runs on one local day: {slots}"
