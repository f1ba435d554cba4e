"""How a run on PostgreSQL copes with faults, provoked for real (no mocks): a user whose rows
the database rejects (isolation and the retry list), the run lock (held by a session, and by
a real running process), connections killed mid-chunk (with and without chunk retries), a
run that lost its lock, and odd check-in data.

Faults strike at a known point of the run: chunks are held mid-write at a WriteGate (a real
table lock), so "mid-run" and "in flight" never depend on the machine's speed. Everything
runs in this process except where a second process is the point.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from montage_vec.config import load_settings
from montage_vec.datagen import DEFAULT_AS_OF
from montage_vec.stores import open_store
from tests.support.cli import WATERMARK_MODE, RunCli, run_once
from tests.support.data import (
    AS_OF,
    CHECKIN_FRAME_SCHEMA,
    JOB_TABLES,
    Checkins,
    assert_matches_recompute,
    by_user,
    checkin,
    checkin_frame,
    days,
    expected_from_frame,
    expected_montages,
    expected_synthetic,
    load_checkins,
    load_frame,
    montages_by_user,
    new_id,
    restricted,
    retry_list,
    sorted_users,
    stored_montages,
    synthetic,
    watermark,
)
from tests.support.database import count, execute, query
from tests.support.interference import WriteGate, job_connections, terminate
from tests.support.processes import JobProcess, job_env, wait_until

pytestmark = pytest.mark.postgres

EXIT_LOCKED = 75


# -- a user whose rows the database rejects -----------------------------------------------------------

REJECTION = "poisoned check-in"


def reject_items_of(url: str, rows: list[dict[str, Any]], user_id: str) -> None:
    """A trigger refusing the items of `user_id`'s check-ins (SQLSTATE P0001, a data error).

    It fires on montage_items, after the user's montages rows went in within the same
    transaction, so a user left half-written would show up as a montage without its items."""
    poisoned = ", ".join(f"'{row['id']}'::uuid" for row in rows if row["user_id"] == user_id)
    execute(
        url,
        f"""CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.checkin_id IN ({poisoned}) THEN
                RAISE EXCEPTION '{REJECTION} %', NEW.checkin_id;
            END IF;
            RETURN NEW;
        END $$""",
        "CREATE TRIGGER reject_poison BEFORE INSERT OR UPDATE ON montage_items "
        "FOR EACH ROW EXECUTE FUNCTION reject_poison()",
    )


def test_rejected_user_is_isolated_and_retried(postgres_url: str, run_cli: RunCli) -> None:
    data = Checkins(postgres_url)
    users = sorted(new_id() for _ in range(6))
    bad = users[3]
    data.add_many(checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for user in users for i in range(3))
    reject_items_of(postgres_url, data.all(), bad)

    first = run_once(run_cli, postgres_url, "--batch-size", "6", env=WATERMARK_MODE)  # one chunk for everyone
    assert first.log("Batch job started")["candidates"] == 6
    summary = first.log("Batch job completed")
    assert (summary["processed"], summary["successful"], summary["errors"]) == (6, 5, 1)
    # The chunk's other users are written; the rejected user has nothing, not even a montage row.
    assert set(montages_by_user(postgres_url)) == set(users) - {bad}
    good_rows = [row for row in data.all() if row["user_id"] != bad]
    assert stored_montages(postgres_url) == expected_montages(good_rows, AS_OF)
    [retry] = retry_list(postgres_url)
    assert (retry["user_id"], retry["attempts"]) == (bad, 1)
    assert retry["error"].startswith("DataStoreError: database rejected the data (P0001)"), retry
    warnings = [entry for entry in first.logs if entry["level"] == "warn" and entry.get("user_id") == bad]
    assert warnings, first.stdout
    # The run completed, so the watermark moved; the retry list carries the user instead.
    assert watermark(postgres_url) is not None

    data.add(users[0], AS_OF - days(0.5))
    second = run_once(run_cli, postgres_url, env=WATERMARK_MODE)
    assert second.log("Batch job started")["mode"] == "incremental"
    summary = second.log("Batch job completed")
    # users[0] (changed), users[5] (its last row is inside the overlap) and the retried user.
    assert (summary["processed"], summary["successful"], summary["errors"]) == (3, 2, 1)
    assert [row["attempts"] for row in retry_list(postgres_url)] == [2]

    execute(postgres_url, "DROP TRIGGER reject_poison ON montage_items")
    third = run_once(run_cli, postgres_url, env=WATERMARK_MODE).log("Batch job completed")
    # The retried user, plus users[0] whose new row is inside the overlap.
    assert (third["processed"], third["successful"], third["errors"]) == (2, 2, 0)
    assert retry_list(postgres_url) == []
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


def test_retry_list_keeps_the_databases_reason(postgres_url: str, run_cli: RunCli) -> None:
    """Regression: the error used to be cut to the driver's first line ("IO: [libpq] Failed to
    execute query '"), because the job's statements start with a newline."""
    data = Checkins(postgres_url)
    user = new_id()
    data.add(user, AS_OF - days(1))
    reject_items_of(postgres_url, data.all(), user)

    result = run_once(run_cli, postgres_url)

    assert result.log("Batch job completed")["errors"] == 1
    [retry] = retry_list(postgres_url)
    assert retry["user_id"] == user
    assert REJECTION in retry["error"], retry
    warning = next(entry for entry in result.logs if entry["level"] == "warn" and entry.get("user_id") == user)
    assert REJECTION in warning["error"], warning


# -- the run lock ------------------------------------------------------------------------------------


def test_run_refused_while_another_session_holds_the_shards_lock(postgres_url: str, run_cli: RunCli) -> None:
    rows = [checkin(new_id(), AS_OF - days(i), tags=["coffee"]) for i in range(5)]
    load_checkins(postgres_url, rows)
    nothing_written = dict.fromkeys(JOB_TABLES, 0)
    with open_store(load_settings(database_url=postgres_url).database()) as store:
        holder = store.session()
        try:
            assert holder.try_lock_run("0/1")  # a run in progress on shard 0/1
            # Refused at once rather than waiting for the lock (a wait would never end here).
            locked = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": postgres_url})
            assert locked.exit_code == EXIT_LOCKED, locked.everything()
            assert "another run holds the lock" in locked.stderr
            assert "0/1" in locked.stderr
            assert {table: count(postgres_url, table) for table in JOB_TABLES} == nothing_written
            # The lock is per shard.
            other_shard = run_once(run_cli, postgres_url, env={"MONTAGE_SHARD": "1/2"})
            assert other_shard.log("Batch job completed")["status"] == "completed"
        finally:
            holder.close()

    # The locked-out run touched nothing: the only run recorded is the other shard's.
    assert query(postgres_url, "SELECT shard FROM montage_job_runs")["shard"].to_list() == ["1/2"]
    # Closing the holder's session releases the lock.
    run_once(run_cli, postgres_url, env={"MONTAGE_SHARD": "0/1"})
    assert stored_montages(postgres_url) == expected_montages(rows, AS_OF)


def test_second_run_is_refused_while_a_process_runs_and_the_killed_process_frees_the_lock(
    postgres_url: str, run_cli: RunCli, tmp_path: Path
) -> None:
    frame = synthetic(200)
    load_frame(postgres_url, frame)
    args = ("once", "--as-of", DEFAULT_AS_OF.isoformat(), "--batch-size", "50", "--concurrency", "1")

    env = job_env(DATABASE_URL=postgres_url, MONTAGE_SCRATCH_DIR=str(tmp_path))  # the killed run's spool stays

    with WriteGate(postgres_url) as gate, JobProcess(*args, env=env, cwd=tmp_path) as first:
        gate.wait_until_blocked()  # the first run holds its lock, its first chunk mid-write
        _, started = first.wait_for_log("Batch job started", timeout=60)

        second = run_cli("once", "--as-of", DEFAULT_AS_OF.isoformat(), env={"DATABASE_URL": postgres_url})

        assert second.exit_code == EXIT_LOCKED, second.everything()
        assert "another run holds the lock" in second.stderr
        assert first.running() and "Batch job completed" not in first.finished().messages()
        runs = query(postgres_url, "SELECT job_id FROM montage_job_runs")["job_id"].to_list()
        assert runs == [started["job_id"]], "the refused run must not write a run log row"
        first.kill()  # SIGKILL: the server notices the closed socket and frees the lock
    wait_until(lambda: job_connections(postgres_url) == 0, "the killed run's connections closed")

    # The killed holder's lock is gone: a new run completes (named users keep it short).
    run_once(run_cli, postgres_url, "--user-id", frame["user_id"][0], as_of=DEFAULT_AS_OF)


# -- connections killed mid-run ------------------------------------------------------------------------

SYNTHETIC_USERS = 500
BATCH = 100


def test_killed_connections_fail_the_run_without_partial_chunks(postgres_url: str, run_cli: RunCli) -> None:
    frame = synthetic(SYNTHETIC_USERS)
    load_frame(postgres_url, frame)
    candidates = sorted_users(frame)
    chunks = [candidates[i : i + BATCH] for i in range(0, len(candidates), BATCH)]
    assert len(chunks) >= 3

    def kill_mid_chunk(gate: WriteGate) -> tuple[int, int]:
        gate.let_one_through()  # chunk 1 commits
        gate.wait_until_blocked()  # chunk 2 waits mid-write
        # The lock holder first: the job notices nothing until its worker dies, so both
        # connections are gone by the time it fails and must record the run on a new one.
        return terminate(postgres_url, "lock holder"), terminate(postgres_url, "workers")

    # No retry budget at all: the lock holder reconnects, but the chunk may not try again.
    env = {"DATABASE_URL": postgres_url, "CHUNK_RETRY_ATTEMPTS": "0", "DB_RECONNECT_TIMEOUT": "0s"}
    args = ("--as-of", DEFAULT_AS_OF.isoformat(), "--batch-size", str(BATCH), "--concurrency", "1")
    with WriteGate(postgres_url) as gate, gate.meanwhile(kill_mid_chunk) as killing:
        result = run_cli("once", *args, env=env)
    assert killing.result() == (1, 1), "the lock holder and the chunk's worker"

    assert result.exit_code == 1, result.everything()
    assert "Batch job completed" not in result.messages()
    job_id = result.log("Batch job failed")["job_id"]
    assert result.stderr.strip(), "a failed run must say why on stderr"
    assert count(postgres_url, "montage_job_watermarks") == 0
    # The run log records the failed run, written on a new connection since its own died.
    runs = query(postgres_url, "SELECT job_id, status, finished_at FROM montage_job_runs").to_dicts()
    assert [(run["job_id"], run["status"]) for run in runs] == [(job_id, "failed")]
    assert runs[0]["finished_at"] is not None

    # Committed chunks are whole: per chunk of sorted candidates, either none of its users has
    # montages or every user has exactly its full-recompute montages (and items).
    stored = by_user(stored_montages(postgres_url))
    wanted = by_user(expected_synthetic(SYNTHETIC_USERS))
    committed = set()
    for number, chunk in enumerate(chunks, start=1):  # logs number chunks from 1
        present = {user for user in chunk if user in stored}
        if present:
            committed.add(number)
            assert present == {user for user in chunk if user in wanted}, f"chunk {number} is partial"
    for user, rows in stored.items():
        assert rows == wanted[user], f"user {user} has a partial or wrong set of montages"
    logged = {entry["chunk"] for entry in result.logs if entry["message"] == "chunk committed"}
    assert logged == committed == {1}, "chunk 1 committed; chunk 2 died mid-write; no other chunk started"

    # A new run (no watermark, so a full one) repairs everything.
    rerun = run_once(run_cli, postgres_url, as_of=DEFAULT_AS_OF)
    assert rerun.log("Batch job completed")["errors"] == 0
    assert stored_montages(postgres_url) == expected_synthetic(SYNTHETIC_USERS)
    assert count(postgres_url, "montage_job_watermarks") == 1


def test_killed_worker_connection_is_replaced_and_the_run_completes(postgres_url: str, run_cli: RunCli) -> None:
    frame = synthetic(SYNTHETIC_USERS)
    load_frame(postgres_url, frame)

    def kill_the_worker_mid_chunk(gate: WriteGate) -> int:
        gate.wait_until_blocked()  # chunk 1 waits mid-write
        return terminate(postgres_url, "workers")

    args = ("--as-of", DEFAULT_AS_OF.isoformat(), "--batch-size", str(BATCH), "--concurrency", "1")
    with WriteGate(postgres_url) as gate, gate.meanwhile(kill_the_worker_mid_chunk) as killing:
        result = run_cli("once", *args, env={"DATABASE_URL": postgres_url})  # default CHUNK_RETRY_ATTEMPTS
    assert killing.result() == 1, "exactly the one worker connection (the lock holder keeps its session)"

    assert result.exit_code == 0, result.everything()
    assert result.log("transient error; retrying the chunk on a new connection")["attempt"] == 1
    summary = result.log("Batch job completed")
    assert (summary["processed"], summary["errors"]) == (SYNTHETIC_USERS, 0)
    assert stored_montages(postgres_url) == expected_synthetic(SYNTHETIC_USERS)
    assert count(postgres_url, "montage_job_watermarks") == 1


def test_run_that_lost_its_lock_stops_writing(postgres_url: str, run_cli: RunCli) -> None:
    frame = synthetic(SYNTHETIC_USERS)
    load_frame(postgres_url, frame)
    candidates = sorted_users(frame)
    store = open_store(load_settings(database_url=postgres_url).database())
    other_run = store.session()

    def take_the_lock_mid_chunk(gate: WriteGate) -> int:
        gate.wait_until_blocked()  # chunk 1 waits mid-write
        killed = terminate(postgres_url, "lock holder")
        assert other_run.try_lock_run("0/1"), "the lost lock is free for another run"
        return killed

    args = ("--as-of", DEFAULT_AS_OF.isoformat(), "--batch-size", str(BATCH), "--concurrency", "1")
    try:
        with WriteGate(postgres_url) as gate, gate.meanwhile(take_the_lock_mid_chunk) as taking:
            result = run_cli("once", *args, env={"DATABASE_URL": postgres_url})
        assert taking.result() == 1
        assert other_run.holds_run_lock("0/1"), "the other run kept the shard throughout"
    finally:
        other_run.close()
        store.close()

    assert result.exit_code == 1, result.everything()
    assert "another run took shard 0/1's lock" in result.stderr, result.everything()
    assert result.logs[-1]["message"] == "Batch job failed"
    assert result.logs[-1]["error_type"] == "LeaseLostError"
    # The chunk in flight when the lock went may commit; no chunk starts after that.
    logged = [entry["chunk"] for entry in result.logs if entry["message"] == "chunk committed"]
    assert logged in ([], [1]), logged
    done = candidates[: BATCH * len(logged)]
    assert stored_montages(postgres_url) == restricted(expected_synthetic(SYNTHETIC_USERS), done)
    assert count(postgres_url, "montage_job_watermarks") == 0


# -- odd input ---------------------------------------------------------------------------------------

UNICODE_TAGS = [
    "cafe\u0301",  # e + combining acute
    "café",  # precomposed
    "☕",
    "🏳️‍🌈",  # ZWJ sequence with a variation selector
    "👩🏽‍💻",
    "קפה",  # Hebrew, RTL
    "مقهى",  # Arabic, RTL
    "\u200fRTL-mark",
    "İstanbul",  # dotted capital I: lower() gives 'i̇stanbul'
    "ΟΔΟΣ",  # final sigma on lowering
    "οδος",
    "ὈΔΥΣΣΕΎΣ",
    "ǅemal",  # titlecase digraph
    "ﬁsh",  # ligature (NFKC folds it)
    "ß",
]


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return "ARRAY[" + ",".join(sql_literal(v) for v in value) + "]::TEXT[]"
    if hasattr(value, "isoformat"):
        return f"TIMESTAMPTZ '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def insert_raw(url: str, rows: list[dict[str, Any]]) -> None:
    columns = list(CHECKIN_FRAME_SCHEMA)
    values = ",\n".join("(" + ", ".join(sql_literal(row[c]) for c in columns) + ")" for row in rows)
    execute(url, f"INSERT INTO checkins ({', '.join(columns)}) VALUES {values}")


def big_user_frame(user_id: str, size: int) -> pl.DataFrame:
    """`size` check-ins of one user, a minute apart, built column-wise with polars."""
    index = pl.int_range(0, size, eager=True)
    newest_first = pl.datetime_range(
        DEFAULT_AS_OF - timedelta(minutes=size),
        DEFAULT_AS_OF - timedelta(minutes=1),
        "1m",
        time_unit="us",
        time_zone="UTC",
        eager=True,
    ).reverse()
    tags = pl.Series(
        [["coffee"], ["Coffee", "hiking"], [], ["yoga", "COFFEE"], ["hiking"], ["  Yoga "], ["run"]],
        dtype=pl.List(pl.String),
    )
    return (
        pl.DataFrame(
            {
                "id": [str(uuid.uuid4()) for _ in range(size)],
                "user_id": [user_id] * size,
                "created_at": newest_first,
            }
        )
        .with_columns(
            updated_at=pl.col("created_at"),
            deleted_at=pl.when(index % 97 == 0).then(pl.col("created_at")).otherwise(None),
            privacy=pl.Series(["public", "friends", "private"]).gather(index % 3),
            text_content=pl.format("check-in {}", index),
            media_url=pl.when(index % 5 == 0).then(pl.format("https://m.example/{}.jpg", index)).otherwise(None),
            media_type=pl.when(index % 5 == 0).then(pl.lit("image")).otherwise(None),
            thumbnail_url=pl.lit(None, pl.String),
            location_name=pl.when(index % 7 == 0).then(pl.lit("Zürich HB")).otherwise(None),
            tags=tags.gather(index % tags.len()),
        )
        .select(pl.col(name).cast(dtype) for name, dtype in CHECKIN_FRAME_SCHEMA.items())
    )


def test_odd_input_is_processed_like_the_engine_does(postgres_url: str, run_cli: RunCli) -> None:
    as_of = DEFAULT_AS_OF
    null_tags_user, null_privacy_user, unicode_user, future_user, big_user = (new_id() for _ in range(5))
    normal = [checkin(null_tags_user, as_of - days(i), tags=["coffee"]) for i in range(1, 4)]
    normal += [checkin(null_privacy_user, as_of - days(i), tags=["tea"]) for i in range(1, 4)]
    normal += [
        checkin(unicode_user, as_of - days(1 + i) - timedelta(minutes=n), tags=[tag, tag.upper(), f" {tag.lower()} "])
        for n, tag in enumerate(UNICODE_TAGS)
        for i in range(3)
    ]
    normal += [checkin(future_user, as_of.replace(year=2200) + timedelta(days=i), tags=["future"]) for i in range(3)]
    normal += [checkin(future_user, as_of - days(2), tags=["future"], deleted_at=as_of.replace(year=2200))]
    normal += [checkin(future_user, as_of - days(3), tags=["future"])]
    raw = [checkin(null_tags_user, as_of - days(i) - timedelta(hours=1), tags=None) for i in range(0, 5)]
    raw += [checkin(null_privacy_user, as_of - days(i) - timedelta(hours=1), privacy=None) for i in range(0, 5)]
    raw += [checkin(null_privacy_user, as_of - days(i) - timedelta(hours=2), privacy=None, tags=None) for i in range(2)]
    big = big_user_frame(big_user, 50_000)

    load_frame(postgres_url, pl.concat([checkin_frame(normal), big]))
    execute(
        postgres_url,
        "ALTER TABLE checkins ALTER COLUMN tags DROP NOT NULL",
        "ALTER TABLE checkins ALTER COLUMN privacy DROP NOT NULL",
    )
    insert_raw(postgres_url, raw)
    nulls = query(
        postgres_url,
        "SELECT count(*) FILTER (WHERE tags IS NULL) AS t, count(*) FILTER (WHERE privacy IS NULL) AS p FROM checkins",
    )
    assert nulls.row(0) == (7, 7)
    expected = expected_from_frame(pl.concat([checkin_frame(normal + raw), big]), as_of)

    result = run_once(run_cli, postgres_url, as_of=as_of)

    summary = result.log("Batch job completed")
    assert (summary["processed"], summary["successful"], summary["errors"]) == (5, 5, 0)
    assert summary["checkins"] == len(normal) + len(raw) + 50_000
    stored = stored_montages(postgres_url)
    assert stored == expected
    users_with_montages = {row[0] for row in stored[0]}
    assert users_with_montages == {null_tags_user, null_privacy_user, unicode_user, future_user, big_user}
    interests = {row[2] for row in stored[0] if row[0] == unicode_user}
    assert len(interests) >= 10, interests
