"""What a chunk does with users it cannot process, on DuckDB and PostgreSQL (job.chunks).

A user whose check-ins carry a time the job cannot represent (`infinity`, `-infinity`,
a year past 9999) goes on the retry list, named with the column and the value, and the
run completes. Only classified data errors split a chunk: a bug (here an engine replaced
by one that raises) fails the run instead of filling the retry list, and so does a split
chunk whose every user failed, or a run in which more users failed than
MONTAGE_MAX_FAILED_FRACTION allows. Whenever a run fails, the watermark stays where it was.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pytest

from montage_vec.errors import InputDataError
from montage_vec.job import chunks
from montage_vec.job.summary import MIN_FAILED_USERS_TO_TRIP
from tests.support.cli import CliResult, RunCli, run_once
from tests.support.data import (
    AS_OF,
    by_user,
    checkin,
    days,
    expected_montages,
    load_checkins,
    montage_stamps,
    new_id,
    restricted,
    retry_list,
    run_rows,
    stored_montages,
    watermark,
)
from tests.support.database import execute, sql_literal

TRANSIENT_RETRY = "transient error; retrying the chunk on a new connection"
CHUNK_FAILED_WHOLE = "every user of a split chunk failed: a systematic error, not bad data"
MEMORY_WARNING = (
    "this chunk holds more check-ins than MONTAGE_MEMORY_BUDGET allows for (README, Memory); "
    "lower MONTAGE_BATCH_SIZE if the process runs out of memory"
)


def users_with_checkins(url: str, how_many: int, per_user: int = 3) -> tuple[list[str], list[dict[str, Any]]]:
    """`how_many` users (sorted, a run's candidate order), each with `per_user` daily coffee check-ins, stored."""
    users = sorted(new_id() for _ in range(how_many))
    rows = [checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for user in users for i in range(per_user)]
    load_checkins(url, rows)
    return users, rows


def set_checkin_time(url: str, checkin_id: str, column: str, value: str, updated_at: datetime) -> None:
    """Give one check-in a raw `column` value (SQL text, e.g. 'infinity'), stamped as changed at `updated_at`."""
    execute(
        url,
        f"UPDATE checkins SET {column} = TIMESTAMPTZ {sql_literal(value)}, updated_at = {sql_literal(updated_at)} "
        f"WHERE id = {sql_literal(checkin_id)}",
    )


def first_checkin_of(rows: list[dict[str, Any]], user: str) -> str:
    return next(row["id"] for row in rows if row["user_id"] == user)


def once(run_cli: RunCli, url: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
    """`once --as-of AS_OF ARGS`, whatever its exit code."""
    return run_cli("once", "--as-of", AS_OF.isoformat(), *args, env={"DATABASE_URL": url, **(env or {})})


def counting_engine(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[int]:
    """Replace the engine the chunks call by one that raises `error`; the list grows by one per call."""
    calls: list[int] = []
    lock = threading.Lock()  # chunks run on worker threads

    def broken(checkins: pl.DataFrame, *args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(checkins["user_id"].n_unique())
        raise error

    monkeypatch.setattr(chunks, "compute_montages", broken)
    return calls


def prepare_failing_run(url: str, run_cli: RunCli, users: int) -> tuple[list[str], datetime | None]:
    """`users` users processed by a completed run, then one more check-in that a completed run
    would move the watermark past: (the users, the watermark that a failed run must leave)."""
    ids, _ = users_with_checkins(url, users, per_user=1)
    run_once(run_cli, url)
    before = watermark(url)
    assert before is not None
    load_checkins(url, [checkin(ids[0], AS_OF - timedelta(hours=1), tags=["tea"])])
    return ids, before


def assert_failed(result: CliResult, error_type: str) -> dict[str, Any]:
    """The run exited 1 with a 'Batch job failed' line of this error type; that line."""
    assert result.exit_code == 1, result.everything()
    assert "Batch job completed" not in result.messages(), result.everything()
    failed = result.log("Batch job failed")
    assert (failed["status"], failed["error_type"]) == ("failed", error_type), failed
    return failed


# -- times the job cannot represent ----------------------------------------------------------------

UNSUPPORTED = [  # (column, value as SQL text, how the retry list names it)
    ("created_at", "infinity", "created_at infinity"),
    ("created_at", "-infinity", "created_at -infinity"),
    ("deleted_at", "infinity", "deleted_at infinity"),
    ("created_at", "10000-01-01 00:00:00+00", "created_at 10000-01-01"),
]


def test_unsupported_times_put_their_users_on_the_retry_list(database_url: str, run_cli: RunCli) -> None:
    """Regression: on PostgreSQL the driver read `infinity` as a wrapped integer and the montage
    COPY then failed without a SQLSTATE, taken for a lost connection: the chunk was retried,
    the run failed, every night, and the watermark never moved."""
    users, rows = users_with_checkins(database_url, 3 + len(UNSUPPORTED))
    good, bad = users[: -len(UNSUPPORTED)], users[-len(UNSUPPORTED) :]
    run_once(run_cli, database_url)
    first_watermark = watermark(database_url)
    before = by_user(stored_montages(database_url))
    stamps_before = {key: stamp for key, stamp in montage_stamps(database_url).items() if key[0] in bad}
    assert set(before) == set(users) and stamps_before

    changed_at = AS_OF - timedelta(hours=1)  # after every row so far: the next run sees the changes
    for user, (column, value, _) in zip(bad, UNSUPPORTED, strict=True):
        set_checkin_time(database_url, first_checkin_of(rows, user), column, value, changed_at)
    newer = checkin(good[0], AS_OF - timedelta(hours=2), tags=["coffee"])
    load_checkins(database_url, [newer])

    result = run_once(run_cli, database_url)

    summary = result.log("Batch job completed")
    assert summary["errors"] == len(bad) and summary["processed"] > len(bad), summary
    assert TRANSIENT_RETRY not in result.messages(), result.everything()
    retries = {entry["user_id"]: entry["error"] for entry in retry_list(database_url)}
    assert set(retries) == set(bad), retries
    for user, (_, _, named) in zip(bad, UNSUPPORTED, strict=True):
        assert named in retries[user], (named, retries[user])
        assert first_checkin_of(rows, user) in retries[user], retries[user]
    # The good users have their montages; the rejected users keep theirs, untouched.
    good_rows = [row for row in [*rows, newer] if row["user_id"] in good]
    assert restricted(stored_montages(database_url), good) == expected_montages(good_rows, AS_OF)
    after = by_user(stored_montages(database_url))
    assert {user: after.get(user) for user in bad} == {user: before[user] for user in bad}
    assert {key: stamp for key, stamp in montage_stamps(database_url).items() if key[0] in bad} == stamps_before
    # The run completed, so the watermark moved on.
    assert first_watermark is not None
    moved = watermark(database_url)
    assert moved is not None and moved > first_watermark, (first_watermark, moved)


# -- the breaker ---------------------------------------------------------------------------------


def test_a_bug_fails_the_run_instead_of_filling_the_retry_list(
    database_url: str, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: ValueError counted as bad data, so a bug split every chunk down to single users
    (~2n engine calls), put every user on the retry list, and the run reported success."""
    users, before = prepare_failing_run(database_url, run_cli, 20)
    calls = counting_engine(monkeypatch, ValueError("bug"))

    result = once(run_cli, database_url, "--full", "--batch-size", "5")

    failed = assert_failed(result, "ValueError")
    assert "bug" in failed["error"], failed
    chunk_count = len(users) // 5
    assert 1 <= len(calls) <= chunk_count, f"{len(calls)} engine calls for {chunk_count} chunks: chunks were split"
    assert retry_list(database_url) == [], "a bug is not bad data"
    assert watermark(database_url) == before
    assert run_rows(database_url)[-1]["status"] == "failed"


def test_a_split_chunk_whose_every_user_fails_fails_the_run(
    database_url: str, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad data does not strike every user of a chunk at once, a bug does: when every half of a
    split chunk fails down to single users, the run fails, logging the first error."""
    users, before = prepare_failing_run(database_url, run_cli, 12)
    calls = counting_engine(monkeypatch, InputDataError("x"))

    result = once(run_cli, database_url, "--full", "--concurrency", "1")  # one chunk of 12 users

    failed = assert_failed(result, "ChunkFailedWhole")
    assert "InputDataError: x" in failed["error"], failed
    assert calls[0] == len(users) and len(calls) > 1, "the chunk was split before the breaker decided"
    systematic = result.log(CHUNK_FAILED_WHOLE)
    assert (systematic["level"], systematic["users"]) == ("error", len(users)), systematic
    # The JSON line carries the exception logged with it (logging.json_line), traceback included.
    assert systematic["error"] == "InputDataError: x", systematic
    assert systematic["traceback"].startswith("Traceback"), systematic
    assert retry_list(database_url) == []
    assert watermark(database_url) == before
    assert run_rows(database_url)[-1]["status"] == "failed"


def test_a_small_split_chunk_whose_every_user_fails_only_lists_them(
    database_url: str, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk of a few users that all fail may just be a quiet night's retry-listed users: they
    go back on the retry list, and the run completes."""
    users, _ = prepare_failing_run(database_url, run_cli, 3)
    counting_engine(monkeypatch, InputDataError("x"))

    result = once(run_cli, database_url, "--full")

    assert result.exit_code == 0, result.everything()
    assert result.log("Batch job completed")["errors"] == len(users)
    assert {entry["user_id"] for entry in retry_list(database_url)} == set(users)


def infinite_users(url: str, users: int, bad_every: int, bad_count: int) -> tuple[list[str], list[str]]:
    """`users` users with one check-in each, `bad_count` of them (every `bad_every`-th in candidate
    order) with an `infinity` created_at: (all users, the bad ones)."""
    ids, rows = users_with_checkins(url, users, per_user=1)
    bad = ids[::bad_every][:bad_count]
    assert len(bad) == bad_count
    listed = ", ".join(sql_literal(first_checkin_of(rows, user)) for user in bad)
    execute(url, f"UPDATE checkins SET created_at = TIMESTAMPTZ 'infinity' WHERE id IN ({listed})")
    return ids, bad


def test_more_failed_users_than_the_allowed_fraction_fail_the_run(database_url: str, run_cli: RunCli) -> None:
    """12 of 100 users fail: more than the default 1 %, and enough failures for the breaker to
    apply. With a fraction of 20 % the same run completes."""
    users, bad = infinite_users(database_url, 100, bad_every=8, bad_count=12)
    env = {"MONTAGE_BATCH_SIZE": "10"}

    tripped = once(run_cli, database_url, env=env)

    failed = assert_failed(tripped, "TooManyFailedUsers")
    assert "MONTAGE_MAX_FAILED_FRACTION=0.01" in failed["error"], failed
    assert tripped.log("too many users failed; stopping the run")["candidates"] == len(users)
    assert TRANSIENT_RETRY not in tripped.messages()
    assert watermark(database_url) is None

    tolerant = once(run_cli, database_url, env={**env, "MONTAGE_MAX_FAILED_FRACTION": "0.2"})

    assert tolerant.exit_code == 0, tolerant.everything()
    summary = tolerant.log("Batch job completed")
    assert (summary["processed"], summary["successful"], summary["errors"]) == (100, 88, 12), summary
    assert {entry["user_id"] for entry in retry_list(database_url)} == set(bad)
    assert watermark(database_url) is not None


def test_a_dry_run_leaves_failing_users_out_of_its_counts_as_the_real_run_does(
    database_url: str, run_cli: RunCli
) -> None:
    """Users the job cannot process are counted as errors, not as changes, in a dry run too; the
    real run then writes what the dry run counted, and lists the users the dry run did not."""
    users, bad = infinite_users(database_url, 12, bad_every=4, bad_count=3)
    env = {"MONTAGE_BATCH_SIZE": "5"}

    dry = once(run_cli, database_url, "--dry-run", env=env)
    assert dry.exit_code == 0, dry.everything()
    assert retry_list(database_url) == []

    real = once(run_cli, database_url, env=env)
    assert real.exit_code == 0, real.everything()
    would, did = dry.log("Batch job completed"), real.log("Batch job completed")
    good = len(users) - len(bad)  # a general montage of one item each
    assert (would["errors"], would["montages_would_write"], would["items_would_write"]) == (3, good, good), would
    assert (did["errors"], did["montages_written"], did["items_written"]) == (3, good, good), did
    assert would["users_changed"] == did["users_changed"] == good
    assert {entry["user_id"] for entry in retry_list(database_url)} == set(bad)


def test_fewer_failures_than_the_minimum_never_trip_the_breaker(database_url: str, run_cli: RunCli) -> None:
    """9 of 20 users fail, far more than 1 %, but fewer than MIN_FAILED_USERS_TO_TRIP: one bad
    user must not hold the watermark back for a quiet night's few candidates."""
    bad_count = MIN_FAILED_USERS_TO_TRIP - 1
    users, bad = infinite_users(database_url, 20, bad_every=2, bad_count=bad_count)

    result = once(run_cli, database_url, env={"MONTAGE_BATCH_SIZE": "5"})

    assert result.exit_code == 0, result.everything()
    summary = result.log("Batch job completed")
    assert (summary["processed"], summary["errors"]) == (len(users), bad_count), summary
    retries = retry_list(database_url)
    assert {entry["user_id"] for entry in retries} == set(bad)
    assert all("created_at infinity" in entry["error"] for entry in retries), retries
    assert watermark(database_url) is not None


def test_a_chunk_beyond_the_memory_budget_says_so_before_it_is_computed(database_url: str, run_cli: RunCli) -> None:
    """An out-of-memory kill records nothing, so the chunk that may cause it logs its size first."""
    users_with_checkins(database_url, 30, per_user=20)
    tight = {"MONTAGE_MEMORY_BUDGET": "180MiB"}  # the model's base alone: no check-in fits

    roomy = once(run_cli, database_url, "--full", "--batch-size", "10")
    warned = once(run_cli, database_url, "--full", "--batch-size", "50", "--concurrency", "1", env=tight)

    assert MEMORY_WARNING not in roomy.messages()
    line = warned.log(MEMORY_WARNING)
    assert (line["users"], line["checkins"], line["checkin_budget"]) == (30, 600, 0), line
    assert warned.exit_code == 0, warned.everything()
