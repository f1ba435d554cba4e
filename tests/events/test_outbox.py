"""The transactional outbox `montage_events`: which events a run writes, with which ids and
payloads, and that they commit together with the montages they describe."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from tests.support.cli import job_id_of, run_once
from tests.support.data import AS_OF, checkin, days, load_checkins, new_id
from tests.support.database import execute, query
from tests.support.outbox import (
    COMPLETED,
    FAILED,
    GENERATED,
    INVALIDATED,
    STARTED,
    events,
    expected_event_id,
    montages,
    runs,
    type_counts,
)
from tests.support.servers import closed_port_url


def sample(user_a: str, user_b: str, user_c: str) -> dict[str, dict[str, Any]]:
    """A: three coffee check-ins and one plain (general + interest); B: two plain (general);
    C: only private check-ins (no montage at all)."""
    rows = [checkin(user_a, AS_OF - days(i + 1), tags=["Coffee"], text_content=f"cup {i}") for i in range(3)]
    rows.append(checkin(user_a, AS_OF - days(5), text_content="a walk"))
    rows += [checkin(user_b, AS_OF - days(i + 2), location_name="park") for i in range(2)]
    rows += [checkin(user_c, AS_OF - days(i + 1), privacy="private", tags=["coffee"]) for i in range(3)]
    return {row["id"]: row for row in rows}


def users() -> tuple[str, str, str]:
    return new_id(), new_id(), new_id()


def montage_key(payload: dict[str, Any]) -> tuple[str, str, str, int]:
    return payload["user_id"], payload["kind"], payload["interest"], int(payload["item_count"])


def test_first_run_writes_lifecycle_generated_and_invalidated_events(database_url: str, run_cli) -> None:
    a, b, c = users()
    load_checkins(database_url, list(sample(a, b, c).values()))
    job = job_id_of(run_once(run_cli, database_url, env={"MONTAGE_BATCH_SIZE": "1"}))  # 3 chunks, 2 in flight

    written = events(database_url)
    stored = montages(database_url)
    assert len(stored) == 3  # A general, A coffee, B general
    assert type_counts(written) == Counter({STARTED: 1, COMPLETED: 1, GENERATED: 3, INVALIDATED: 2})
    assert {row["job_id"] for row in written} == {job}

    for lifecycle in (STARTED, COMPLETED):
        (event,) = events(database_url, type=lifecycle)
        assert event["aggregate_id"] == job
        assert event["payload"]["job_id"] == job
    assert events(database_url, type=STARTED)[0]["payload"]["status"] == "running"
    completed = events(database_url, type=COMPLETED)[0]["payload"]
    assert completed["status"] == "completed"
    assert (completed["processed"], completed["general_montages"], completed["interest_montages"]) == (3, 2, 1)

    generated = events(database_url, type=GENERATED)
    by_montage = {row["aggregate_id"]: montage_key(row["payload"]) for row in generated}
    assert by_montage == {m["id"]: (m["user_id"], m["kind"], m["interest"], m["item_count"]) for m in stored}

    invalidated = {row["aggregate_id"]: row["payload"] for row in events(database_url, type=INVALIDATED)}
    assert invalidated == {
        a: {"user_id": a, "montages_written": 2, "montages_removed": 0},
        b: {"user_id": b, "montages_written": 1, "montages_removed": 0},
    }
    assert c not in {row["payload"].get("user_id") for row in written}
    # Change events carry the run's generation time, which is also when it started.
    (started_at,) = {row["occurred_at"] for row in written if row["type"] == STARTED}
    assert {row["occurred_at"] for row in written if row["type"] in (GENERATED, INVALIDATED)} == {started_at}
    assert {m["generated_at"] for m in stored} == {started_at}
    assert events(database_url, type=COMPLETED)[0]["occurred_at"] >= started_at

    # Ids are derived, so a retried chunk or a relay can drop duplicates.
    for row in written:  # for batch lifecycle events the aggregate is the job itself
        assert row["id"] == expected_event_id(row["type"], row["aggregate_id"], job), row
    assert len({row["id"] for row in written}) == len(written)


def test_every_event_id_follows_one_formula(duckdb_url: str, run_cli) -> None:
    a, b, c = users()
    load_checkins(duckdb_url, list(sample(a, b, c).values()))
    job = job_id_of(run_once(run_cli, duckdb_url))
    for row in events(duckdb_url):
        assert row["id"] == expected_event_id(row["type"], row["aggregate_id"], job), row


def test_reruns_write_events_only_for_what_changed(database_url: str, run_cli) -> None:
    a, b, c = users()
    rows = sample(a, b, c)
    load_checkins(database_url, list(rows.values()))
    run_once(run_cli, database_url)
    before = {m["id"]: m for m in montages(database_url)}

    # Nothing changed: only the run's own lifecycle events.
    quiet = job_id_of(run_once(run_cli, database_url))
    assert type_counts(events(database_url, job_id=quiet)) == Counter({STARTED: 1, COMPLETED: 1})

    # A's plain check-in is edited: it sits only in A's general montage.
    plain = next(r for r in rows.values() if r["user_id"] == a and not r["tags"])
    load_checkins(database_url, [{**plain, "text_content": "a longer walk", "updated_at": AS_OF + timedelta(hours=1)}])
    edit = job_id_of(run_once(run_cli, database_url))
    edited = events(database_url, job_id=edit)
    assert type_counts(edited) == Counter({STARTED: 1, COMPLETED: 1, GENERATED: 1, INVALIDATED: 1})
    (generated,) = [row for row in edited if row["type"] == GENERATED]
    general_a = next(m for m in before.values() if m["user_id"] == a and m["kind"] == "general")
    assert generated["aggregate_id"] == general_a["id"]
    assert montage_key(generated["payload"]) == (a, "general", "", 4)
    (invalidated,) = [row for row in edited if row["type"] == INVALIDATED]
    assert invalidated["payload"] == {"user_id": a, "montages_written": 1, "montages_removed": 0}

    # One coffee check-in loses its tag: coffee drops below 3 and A's coffee montage goes.
    cup = next(r for r in rows.values() if r["user_id"] == a and r["tags"])
    load_checkins(database_url, [{**cup, "tags": [], "updated_at": AS_OF + timedelta(hours=2)}])
    removal = job_id_of(run_once(run_cli, database_url))
    removed = events(database_url, job_id=removal)
    (invalidated,) = [row for row in removed if row["type"] == INVALIDATED]
    assert invalidated["aggregate_id"] == a
    assert invalidated["payload"]["montages_removed"] == 1
    generated_now = [row for row in removed if row["type"] == GENERATED]
    # The general montage shows the check-in's tags, so it may be rewritten; nothing else is.
    assert all(montage_key(row["payload"])[:3] == (a, "general", "") for row in generated_now)
    assert invalidated["payload"]["montages_written"] == len(generated_now)
    assert not any(m["kind"] == "interest" for m in montages(database_url))
    # B never changed after the first run.
    assert [row["job_id"] for row in events(database_url) if row["aggregate_id"] == b] == [
        events(database_url, type=INVALIDATED)[0]["job_id"]
    ]


def test_analytics_off_writes_no_generated_events(database_url: str, run_cli) -> None:
    a, b, c = users()
    load_checkins(database_url, list(sample(a, b, c).values()))
    job = job_id_of(run_once(run_cli, database_url, env={"ENABLE_ANALYTICS": "false"}))
    assert len(montages(database_url)) == 3
    assert type_counts(events(database_url)) == Counter({STARTED: 1, COMPLETED: 1, INVALIDATED: 2})
    assert {row["aggregate_id"] for row in events(database_url, job_id=job, type=INVALIDATED)} == {a, b}


def test_dry_run_writes_no_events(database_url: str, run_cli) -> None:
    a, b, c = users()
    load_checkins(database_url, list(sample(a, b, c).values()))
    result = run_once(run_cli, database_url, "--dry-run")
    assert result.log("Batch job completed")["general_montages"] == 2
    assert events(database_url) == []
    assert montages(database_url) == []
    assert runs(database_url) == []


def test_failed_run_writes_a_failed_event(database_url: str, run_cli) -> None:
    a, b, c = users()
    load_checkins(database_url, list(sample(a, b, c).values()))
    result = run_cli(
        "once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": database_url, "BATCH_PROCESSING_TIMEOUT": "1ms"}
    )
    assert result.exit_code == 124, result.stdout + result.stderr
    job = result.log("Batch job failed")["job_id"]
    written = events(database_url, job_id=job)
    assert type_counts(written) == Counter({STARTED: 1, FAILED: 1})
    (failed,) = [row for row in written if row["type"] == FAILED]
    assert failed["aggregate_id"] == job
    assert failed["id"] == expected_event_id(FAILED, job, job)
    assert failed["payload"]["status"] == "timeout"
    assert failed["payload"]["message"]
    assert [(r["job_id"], r["status"]) for r in runs(database_url)] == [(job, "timeout")]
    assert query(database_url, "SELECT count(*) AS n FROM montage_job_watermarks")["n"][0] == 0


def test_run_failing_while_planning_writes_a_failed_event(duckdb_url: str, run_cli) -> None:
    load_checkins(duckdb_url, [])
    result = run_cli(
        "once",
        env={"DATABASE_URL": duckdb_url, "CHECKIN_SOURCE": "http", "CHECKIN_SERVICE_URL": closed_port_url()},
    )
    assert result.exit_code == 1
    assert type_counts(events(duckdb_url)) == Counter({STARTED: 1, FAILED: 1})


POISON_TRIGGER = """
CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.checkin_id = '{poison}'::uuid THEN
        RAISE EXCEPTION 'poisoned check-in %', NEW.checkin_id;
    END IF;
    RETURN NEW;
END $$
---
CREATE TRIGGER reject_poison BEFORE INSERT ON montage_items FOR EACH ROW EXECUTE FUNCTION reject_poison();
"""


@pytest.mark.postgres
def test_events_commit_with_the_montages_they_describe(postgres_url: str, run_cli) -> None:
    good = [new_id() for _ in range(5)]
    poison_user = new_id()
    rows = [checkin(user, AS_OF - days(i + 1), tags=["tea"]) for user in good for i in range(3)]
    poison_rows = [checkin(poison_user, AS_OF - days(i + 1), tags=["tea"]) for i in range(3)]
    load_checkins(postgres_url, rows + poison_rows)
    for statement in POISON_TRIGGER.format(poison=poison_rows[0]["id"]).split("---"):
        execute(postgres_url, statement)

    first = run_once(run_cli, postgres_url, env={"MONTAGE_BATCH_SIZE": "100"})
    job = job_id_of(first)
    assert first.log("Batch job completed")["errors"] == 1
    written = events(postgres_url, job_id=job)
    users_with_events = {row["payload"]["user_id"] for row in written if row["type"] in (GENERATED, INVALIDATED)}
    assert users_with_events == set(good)
    assert type_counts(written) == Counter({STARTED: 1, COMPLETED: 1, GENERATED: 10, INVALIDATED: 5})
    assert {m["user_id"] for m in montages(postgres_url)} == set(good)
    retry = query(postgres_url, "SELECT user_id::VARCHAR AS user_id, error FROM montage_retry_users").to_dicts()
    assert [r["user_id"] for r in retry] == [poison_user]
    assert "P0001" in retry[0]["error"]
    assert "poisoned check-in" in retry[0]["error"]  # the trigger's own words, not just the SQL

    # Without the trigger the next run picks the user up from the retry list, events and all.
    execute(postgres_url, "DROP TRIGGER reject_poison ON montage_items")
    second = job_id_of(run_once(run_cli, postgres_url))
    later = events(postgres_url, job_id=second)
    assert type_counts(later) == Counter({STARTED: 1, COMPLETED: 1, GENERATED: 2, INVALIDATED: 1})
    assert {row["payload"]["user_id"] for row in later if row["type"] == INVALIDATED} == {poison_user}


FLAKY_TRIGGER = """
CREATE SEQUENCE flaky_attempts
---
CREATE FUNCTION fail_first_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('flaky_attempts') = 1 THEN
        RAISE EXCEPTION 'simulated serialization failure' USING ERRCODE = '40001';
    END IF;
    RETURN NEW;
END $$
---
CREATE TRIGGER fail_first_write BEFORE INSERT ON montage_items FOR EACH ROW EXECUTE FUNCTION fail_first_write()
"""


@pytest.mark.postgres
def test_a_chunk_retried_after_a_transient_error_writes_its_events_once(postgres_url: str, run_cli) -> None:
    a, b, c = users()
    load_checkins(postgres_url, list(sample(a, b, c).values()))
    for statement in FLAKY_TRIGGER.split("---"):
        execute(postgres_url, statement)
    result = run_once(run_cli, postgres_url)
    assert result.log("transient error; retrying the chunk on a new connection")["attempt"] == 1
    job = job_id_of(result)
    assert type_counts(events(postgres_url)) == Counter({STARTED: 1, COMPLETED: 1, GENERATED: 3, INVALIDATED: 2})
    assert {row["job_id"] for row in events(postgres_url)} == {job}
    assert len(montages(postgres_url)) == 3
