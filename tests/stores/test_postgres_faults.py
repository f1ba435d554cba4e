"""Fault behaviour of the PostgreSQL store and the runner against a real server (no mocks).

Covers: a trigger that rejects one user's rows (isolation + retry list), the run lock
(held by a session, and two real processes), connections killed mid-run (with and without
chunk retries), a no-op re-run that must not touch a row, odd check-in data, the query
plans of the bulk paths, and secrets kept out of the output of failed connections.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import polars as pl
import pytest

from montage_vec.config import load_settings
from montage_vec.datagen import DEFAULT_AS_OF, SyntheticSpec, generate_checkins
from montage_vec.engine import compute_montages
from montage_vec.stores import Tables, open_store, statements
from montage_vec.stores.render import SqlValue, Timestamp, UuidArray, render
from tests.helpers import (
    CHECKIN_FRAME_SCHEMA,
    _as_rows,
    checkin,
    checkin_frame,
    days,
    expected_montages,
    load_checkins,
    load_frame,
    new_id,
    query,
    stored_montages,
)

pytestmark = pytest.mark.postgres

AS_OF = DEFAULT_AS_OF  # 2026-01-01T00:00:00Z, the synthetic data's reference time
JOB_TABLES = ("montages", "montage_items", "montage_job_runs", "montage_job_watermarks", "montage_retry_users")
EXIT_LOCKED = 75

Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


# -- plumbing -------------------------------------------------------------------------------


def pg_execute(url: str, *statements: str) -> list[Any]:
    """Run statements on an autocommit connection; the first column of each one's first row."""
    results: list[Any] = []
    with pg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
            try:
                row = cursor.fetchone()
            except pg.Error:
                row = None
            results.append(row[0] if row else None)
    return results


def count(url: str, table: str) -> int:
    return int(query(url, f'SELECT count(*) AS n FROM "{table}"')["n"][0])


def synthetic(users: int, seed: int = 42) -> pl.DataFrame:
    frame = pl.from_arrow(generate_checkins(SyntheticSpec(users=users, seed=seed, as_of=AS_OF)))
    assert isinstance(frame, pl.DataFrame)
    return frame


def expected_from_frame(frame: pl.DataFrame) -> Rows:
    """The engine's full recompute at AS_OF, in stored_montages' form."""
    result = compute_montages(frame.select(list(CHECKIN_FRAME_SCHEMA)), AS_OF)
    return _as_rows(result.montages, result.items)


def by_user(rows: Rows) -> dict[str, Rows]:
    grouped: dict[str, Rows] = defaultdict(lambda: ([], []))
    for montage in rows[0]:
        grouped[montage[0]][0].append(montage)
    for item in rows[1]:
        grouped[item[0]][1].append(item)
    return dict(grouped)


def without_user(rows: Rows, user_id: str) -> Rows:
    return [r for r in rows[0] if r[0] != user_id], [r for r in rows[1] if r[0] != user_id]


def assert_ok(result: Any) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def job_env(url: str | None = None, **extra: str) -> dict[str, str]:
    """The subprocess environment: this test's (job variables already cleared) plus the given ones."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    if url is not None:
        env["DATABASE_URL"] = url
    return env


class JobProcess:
    """`python -m montage_vec ARGS` as a real subprocess, its output collected by reader threads."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "montage_vec", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, self.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: Any, sink: list[str], announce: bool) -> None:
        for line in stream:
            sink.append(line)
            if announce:
                self._lines.put(line)

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.stdout) if line.startswith("{")]

    def output(self) -> str:
        return f"exit {self.process.poll()}\nstdout:\n{''.join(self.stdout)}\nstderr:\n{''.join(self.stderr)}"

    def wait_for(self, message: str, timeout: float = 30.0) -> dict[str, Any]:
        """Block until a JSON log line with this message appears on stdout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.05)
            except queue.Empty:
                if self.process.poll() is not None and self._lines.empty():
                    for reader in self._readers:
                        reader.join(timeout=1)
                    if self._lines.empty():
                        raise AssertionError(f"exited before logging {message!r}\n{self.output()}") from None
                continue
            if line.startswith("{") and json.loads(line).get("message") == message:
                return dict(json.loads(line))
        raise AssertionError(f"no {message!r} within {timeout}s\n{self.output()}")

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)


@contextmanager
def job_process(*args: str, env: dict[str, str]) -> Iterator[JobProcess]:
    job = JobProcess(*args, env=env)
    try:
        yield job
    finally:
        job.kill()


# Only this test's database: other test runs may share the server (and the application name).
TERMINATE_JOB_CONNECTIONS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = 'montage-vec' AND pid <> pg_backend_pid() AND datname = current_database()
"""
# Worker sessions: the job's connections that do not hold the run's advisory lock.
TERMINATE_WORKER_CONNECTIONS = """
SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a
WHERE a.application_name = 'montage-vec' AND a.pid <> pg_backend_pid() AND a.datname = current_database()
  AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
"""


# -- 1. a trigger rejecting one user's rows -----------------------------------------------------


POISON_MESSAGE = "poisoned check-in"


def poisoned_data(url: str, user_count: int) -> tuple[list[dict[str, Any]], str]:
    """Users with a few tagged check-ins, and a trigger rejecting one user's newest check-in as an item."""
    users = [new_id() for _ in range(user_count)]
    tag_cycle = [["Coffee"], ["coffee", "Hiking"], ["hiking"], ["Coffee", "hiking"], []]
    rows = [
        checkin(user, AS_OF - days(index + 1) - timedelta(minutes=position), tags=tag_cycle[index % 5])
        for position, user in enumerate(users)
        for index in range(6)
    ]
    poison_user = users[user_count // 3]
    poison_checkin = next(r["id"] for r in rows if r["user_id"] == poison_user)  # its newest: general item 0
    load_checkins(url, rows)
    assert any(item[4] == poison_checkin for item in expected_montages(rows, AS_OF)[1])
    pg_execute(
        url,
        f"""CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.checkin_id = '{poison_checkin}'::uuid THEN
                RAISE EXCEPTION '{POISON_MESSAGE} %', NEW.checkin_id;
            END IF;
            RETURN NEW;
        END $$""",
        "CREATE TRIGGER reject_poison BEFORE INSERT ON montage_items FOR EACH ROW EXECUTE FUNCTION reject_poison()",
    )
    return rows, poison_user


def retry_list(url: str) -> pl.DataFrame:
    return query(url, 'SELECT user_id::VARCHAR AS user_id, error, attempts FROM "montage_retry_users" ORDER BY 1')


def test_poison_user_is_isolated_and_retried(postgres_url: str, run_cli: Any) -> None:
    rows, poison_user = poisoned_data(postgres_url, 50)
    expected = expected_montages(rows, AS_OF)
    env = {"DATABASE_URL": postgres_url}

    first = run_cli("once", "--batch-size", "50", "--as-of", AS_OF.isoformat(), env=env)

    assert_ok(first)
    assert first.log("Batch job started")["candidates"] == 50  # one chunk
    summary = first.log("Batch job completed")
    assert (summary["processed"], summary["successful"], summary["errors"]) == (50, 49, 1)
    assert stored_montages(postgres_url) == without_user(expected, poison_user)
    assert count(postgres_url, "montages") > 0
    retry = retry_list(postgres_url)
    assert retry["user_id"].to_list() == [poison_user]
    assert retry["attempts"].to_list() == [1]
    assert "P0001" in retry["error"][0]  # the trigger's SQLSTATE; its text: see the next test
    warnings = [e for e in first.logs if e.get("level") == "warn" and e.get("user_id") == poison_user]
    assert warnings, first.stdout
    assert count(postgres_url, "montage_job_watermarks") == 1  # a user on the retry list does not hold it back

    pg_execute(postgres_url, "DROP TRIGGER reject_poison ON montage_items")
    second = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)

    assert_ok(second)
    assert second.log("Batch job started")["mode"] == "incremental"
    summary = second.log("Batch job completed")
    assert summary["errors"] == 0
    assert summary["processed"] < 50, "an incremental run revisits only changed and retried users"
    assert stored_montages(postgres_url) == expected
    assert count(postgres_url, "montage_retry_users") == 0


def test_retry_list_error_carries_the_trigger_message(postgres_url: str, run_cli: Any) -> None:
    _, poison_user = poisoned_data(postgres_url, 3)

    result = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": postgres_url})

    assert_ok(result)
    retry = retry_list(postgres_url)
    assert retry["user_id"].to_list() == [poison_user]
    warning = next(e for e in result.logs if e.get("level") == "warn" and e.get("user_id") == poison_user)
    assert POISON_MESSAGE in warning["error"], warning
    assert POISON_MESSAGE in retry["error"][0], retry["error"][0]


# -- 2. the run lock ------------------------------------------------------------------------


def test_run_refused_while_another_session_holds_the_lock(postgres_url: str, run_cli: Any) -> None:
    rows = [checkin(new_id(), AS_OF - days(i), tags=["coffee"]) for i in range(5)]
    load_checkins(postgres_url, rows)
    with open_store(load_settings(database_url=postgres_url).database()) as store:
        holder = store.session()
        try:
            assert holder.try_lock_run("0/1")
            started = time.monotonic()
            result = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": postgres_url})
            elapsed = time.monotonic() - started
        finally:
            holder.close()

    assert result.exit_code == EXIT_LOCKED, result.stderr + result.stdout
    assert elapsed < 5, f"took {elapsed:.1f}s to give up"
    assert "another run holds the lock" in result.stderr
    assert "0/1" in result.stderr
    assert {table: count(postgres_url, table) for table in JOB_TABLES} == dict.fromkeys(JOB_TABLES, 0)

    # Closing the holder's session releases the lock.
    assert_ok(run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": postgres_url}))
    assert stored_montages(postgres_url) == expected_montages(rows, AS_OF)


def test_second_process_is_refused_while_a_run_is_in_progress(postgres_url: str, run_cli: Any) -> None:
    frame = synthetic(5000)
    load_frame(postgres_url, frame)
    args = ("once", "--as-of", AS_OF.isoformat(), "--batch-size", "20", "--concurrency", "1")

    with job_process(*args, env=job_env(postgres_url)) as first:
        first.wait_for("chunk committed")
        with job_process(*args, env=job_env(postgres_url)) as second:
            started = time.monotonic()
            code = second.wait(timeout=30)
            elapsed = time.monotonic() - started
        assert first.process.poll() is None, "the first run must still be running for this test to mean anything"
        assert code == EXIT_LOCKED, second.output()
        assert elapsed < 10, second.output()
        assert "another run holds the lock" in "".join(second.stderr)
        runs = query(postgres_url, 'SELECT job_id FROM "montage_job_runs"')["job_id"].to_list()
        assert runs == [first.logs[0]["job_id"]], "the refused run must not write a run log row"
        first.kill()  # SIGKILL: the server notices the closed socket and frees the lock

    # The killed holder's lock is gone: a new run completes (named users keep it short).
    user = frame["user_id"][0]
    retried = run_cli("once", "--as-of", AS_OF.isoformat(), "--user-id", user, env={"DATABASE_URL": postgres_url})
    assert_ok(retried)


# -- 3. connections killed mid-run ----------------------------------------------------------


def test_killed_connections_fail_the_run_without_partial_chunks(postgres_url: str, run_cli: Any) -> None:
    frame = synthetic(3000)
    load_frame(postgres_url, frame)
    expected = expected_from_frame(frame)
    args = ("once", "--as-of", AS_OF.isoformat(), "--batch-size", "100", "--concurrency", "1")

    with job_process(*args, env=job_env(postgres_url, CHUNK_RETRY_ATTEMPTS="0")) as job:
        job.wait_for("chunk committed")
        killed = pg_execute(postgres_url, TERMINATE_JOB_CONNECTIONS)[0]
        code = job.wait(timeout=60)
    assert killed >= 2, "the lock holder and the worker should both have been connected"
    assert code != 0, job.output()
    messages = [entry["message"] for entry in job.logs]
    assert "Batch job completed" not in messages
    assert "Batch job failed" in messages, job.output()
    assert "".join(job.stderr).strip(), "a failed run must say why on stderr"
    assert count(postgres_url, "montage_job_watermarks") == 0

    # Committed chunks are whole: per chunk of sorted candidates, either none of its users has
    # montages or every user has exactly its full-recompute montages (and items).
    stored = by_user(stored_montages(postgres_url))
    wanted = by_user(expected)
    candidates = frame["user_id"].unique().sort().to_list()
    chunks = [candidates[i : i + 100] for i in range(0, len(candidates), 100)]
    committed = set()
    for number, chunk in enumerate(chunks, start=1):  # logs number chunks from 1
        present = {user for user in chunk if user in stored}
        if present:
            committed.add(number)
            assert present == {user for user in chunk if user in wanted}, f"chunk {number} is partial"
    for user, rows in stored.items():
        assert rows == wanted[user], f"user {user} has a partial or wrong set of montages"
    logged = {entry["chunk"] for entry in job.logs if entry["message"] == "chunk committed"}
    assert 1 in logged
    # Every logged chunk is there; at most one more (its COMMIT went through as the connection died).
    assert logged <= committed and len(committed - logged) <= 1, (logged, committed)
    assert len(committed) < len(chunks), "the kill should stop the run before its end"

    # A new run (no watermark, so a full one) repairs everything.
    rerun = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": postgres_url})
    assert_ok(rerun)
    assert rerun.log("Batch job completed")["errors"] == 0
    assert stored_montages(postgres_url) == expected
    assert count(postgres_url, "montage_job_watermarks") == 1


def test_killed_worker_connection_is_replaced_and_the_run_completes(postgres_url: str) -> None:
    frame = synthetic(1500)
    load_frame(postgres_url, frame)
    args = ("once", "--as-of", AS_OF.isoformat(), "--batch-size", "100", "--concurrency", "1")

    with job_process(*args, env=job_env(postgres_url)) as job:  # default CHUNK_RETRY_ATTEMPTS
        job.wait_for("chunk committed")
        killed = pg_execute(postgres_url, TERMINATE_WORKER_CONNECTIONS)[0]
        code = job.wait(timeout=60)

    assert killed == 1, "exactly the one worker connection (the lock holder keeps its session)"
    assert code == 0, job.output()
    retries = [e for e in job.logs if "retrying the chunk" in e["message"]]
    assert retries, job.output()
    summary = next(e for e in job.logs if e["message"] == "Batch job completed")
    assert (summary["processed"], summary["errors"]) == (1500, 0)
    assert stored_montages(postgres_url) == expected_from_frame(frame)
    assert count(postgres_url, "montage_job_watermarks") == 1


TERMINATE_LOCK_HOLDER = """
SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a
WHERE a.application_name = 'montage-vec' AND a.pid <> pg_backend_pid() AND a.datname = current_database()
  AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
"""


def log_time(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["timestamp"])


def test_run_that_lost_its_lock_stops_writing(postgres_url: str, run_cli: Any) -> None:
    frame = synthetic(3000)
    load_frame(postgres_url, frame)
    args = ("once", "--as-of", AS_OF.isoformat(), "--batch-size", "50", "--concurrency", "1")

    with job_process(*args, env=job_env(postgres_url)) as job:
        job.wait_for("chunk committed")
        assert pg_execute(postgres_url, TERMINATE_LOCK_HOLDER)[0] == 1
        user = frame["user_id"][-1]
        other = run_cli("once", "--as-of", AS_OF.isoformat(), "--user-id", user, env={"DATABASE_URL": postgres_url})
        time.sleep(1.0)  # give the first run time to show whether it goes on writing
        job.kill()

    if other.exit_code == EXIT_LOCKED:
        return  # the first run kept (or took back) the lock: fine
    assert_ok(other)
    other_started = log_time(other.log("Batch job started"))
    late = [e for e in job.logs if e["message"] == "chunk committed" and log_time(e) > other_started]
    # One chunk may have been in flight; after that a run without its lock must stop.
    assert len(late) <= 1, f"{len(late)} chunks committed while another run held the lock"


def test_run_log_records_a_run_that_failed_on_a_lost_connection(postgres_url: str) -> None:
    frame = synthetic(1000)
    load_frame(postgres_url, frame)
    args = ("once", "--as-of", AS_OF.isoformat(), "--batch-size", "50", "--concurrency", "1")

    with job_process(*args, env=job_env(postgres_url, CHUNK_RETRY_ATTEMPTS="0")) as job:
        job_id = job.wait_for("chunk committed")["job_id"]
        pg_execute(postgres_url, TERMINATE_JOB_CONNECTIONS)
        code = job.wait(timeout=60)

    assert code != 0, job.output()
    runs = query(postgres_url, "SELECT job_id, status, finished_at FROM montage_job_runs")
    assert runs["job_id"].to_list() == [job_id]
    assert runs["status"][0] == "failed", runs
    assert runs["finished_at"][0] is not None


# -- 4. a re-run over unchanged data writes nothing -----------------------------------------


WRITE_COUNTERS = """
SELECT coalesce(sum(n_tup_upd + n_tup_ins + n_tup_del), 0)::BIGINT AS n FROM pg_stat_user_tables
WHERE relname IN ('montages', 'montage_items')
"""


def settled_write_counters(url: str) -> int:
    """The tables' write counters, read on fresh connections until two reads agree (stats lag)."""
    previous = None
    for _ in range(25):
        current = int(query(url, WRITE_COUNTERS)["n"][0])
        if current == previous:
            return current
        previous = current
        time.sleep(0.2)
    raise AssertionError("the statistics did not settle")


def test_rerun_over_unchanged_data_writes_nothing(postgres_url: str, run_cli: Any) -> None:
    frame = synthetic(400)
    load_frame(postgres_url, frame)
    env = {"DATABASE_URL": postgres_url}
    first = run_cli("once", "--as-of", AS_OF.isoformat(), "--batch-size", "100", env=env)
    assert_ok(first)
    assert first.log("Batch job completed")["montages_written"] > 0
    versions_sql = {
        "montages": 'SELECT id::VARCHAR AS k, xmin::TEXT AS v FROM "montages" ORDER BY 1',
        "items": "SELECT montage_id::VARCHAR || '/' || position AS k, xmin::TEXT AS v FROM montage_items ORDER BY 1",
    }
    before = {name: query(postgres_url, sql) for name, sql in versions_sql.items()}
    counters_before = settled_write_counters(postgres_url)
    assert counters_before > 0

    again = run_cli("once", "--full", "--as-of", AS_OF.isoformat(), "--batch-size", "100", env=env)

    assert_ok(again)
    summary = again.log("Batch job completed")
    assert (summary["montages_written"], summary["montages_removed"]) == (0, 0)
    assert summary["processed"] == first.log("Batch job completed")["processed"]
    for name, sql in versions_sql.items():
        after = query(postgres_url, sql)
        assert after.height == before[name].height > 0
        assert after.equals(before[name]), f"{name}: rows were rewritten (xmin changed)"
    assert settled_write_counters(postgres_url) == counters_before


# -- 5. odd input ---------------------------------------------------------------------------


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
    pg_execute(url, f"INSERT INTO checkins ({', '.join(columns)}) VALUES {values}")


def big_user_frame(user_id: str, size: int) -> pl.DataFrame:
    """`size` check-ins of one user, a minute apart, built column-wise with polars."""
    index = pl.int_range(0, size, eager=True)
    newest_first = pl.datetime_range(
        AS_OF - timedelta(minutes=size), AS_OF - timedelta(minutes=1), "1m", time_unit="us", time_zone="UTC", eager=True
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


def test_odd_input_is_processed_like_the_engine_does(postgres_url: str, run_cli: Any) -> None:
    null_tags_user, null_privacy_user, unicode_user, future_user, big_user = (new_id() for _ in range(5))
    normal = [checkin(null_tags_user, AS_OF - days(i), tags=["coffee"]) for i in range(1, 4)]
    normal += [checkin(null_privacy_user, AS_OF - days(i), tags=["tea"]) for i in range(1, 4)]
    normal += [
        checkin(unicode_user, AS_OF - days(1 + i) - timedelta(minutes=n), tags=[tag, tag.upper(), f" {tag.lower()} "])
        for n, tag in enumerate(UNICODE_TAGS)
        for i in range(3)
    ]
    normal += [checkin(future_user, AS_OF.replace(year=2200) + timedelta(days=i), tags=["future"]) for i in range(3)]
    normal += [checkin(future_user, AS_OF - days(2), tags=["future"], deleted_at=AS_OF.replace(year=2200))]
    normal += [checkin(future_user, AS_OF - days(3), tags=["future"])]
    raw = [checkin(null_tags_user, AS_OF - days(i) - timedelta(hours=1), tags=None) for i in range(0, 5)]
    raw += [checkin(null_privacy_user, AS_OF - days(i) - timedelta(hours=1), privacy=None) for i in range(0, 5)]
    raw += [checkin(null_privacy_user, AS_OF - days(i) - timedelta(hours=2), privacy=None, tags=None) for i in range(2)]
    big = big_user_frame(big_user, 50_000)

    load_frame(postgres_url, pl.concat([checkin_frame(normal), big]))
    pg_execute(
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
    expected = expected_from_frame(pl.concat([checkin_frame(normal + raw), big]))

    result = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": postgres_url})

    assert_ok(result)
    summary = result.log("Batch job completed")
    assert (summary["processed"], summary["successful"], summary["errors"]) == (5, 5, 0)
    assert summary["checkins"] == len(normal) + len(raw) + 50_000
    stored = stored_montages(postgres_url)
    assert stored == expected
    users_with_montages = {row[0] for row in stored[0]}
    assert users_with_montages == {null_tags_user, null_privacy_user, unicode_user, future_user, big_user}
    interests = {row[2] for row in stored[0] if row[0] == unicode_user}
    assert len(interests) >= 10, interests


# -- 6. query plans of the bulk paths --------------------------------------------------------


def explain(url: str, sql: str) -> str:
    with pg.connect(url) as connection:
        # EXPLAIN cannot be wrapped in the driver's COPY, so ask for the plain protocol.
        with connection.cursor(adbc_stmt_kwargs={"adbc.postgresql.use_copy": "false"}) as cursor:
            cursor.execute(f"EXPLAIN (FORMAT TEXT) {sql}")
            lines = [row[0] for row in cursor.fetchall()]
        connection.rollback()
    return "\n".join(lines)


def incremental_candidates_sql(since: datetime) -> str:
    """The check-in half of an incremental run's candidates, as the store renders it.

    (The montage and retry halves are statements.REVISIT_USERS, on the job's own small tables.)
    """
    return rendered(statements.CHANGED_USERS, since=Timestamp(since))


def extraction_sql(user_ids: pl.Series) -> str:
    """A chunk's extraction query, exactly as SqlSession.extract_checkins renders it."""
    return rendered(statements.EXTRACT_CHECKINS_OF_ARRAY, user_ids=UuidArray.of(user_ids))


def rendered(template: str, **values: SqlValue) -> str:
    return render(template, "postgresql", {**Tables().placeholders(), **values})


def test_bulk_paths_use_their_indexes(postgres_url: str) -> None:
    frame = synthetic(10_200)
    assert 190_000 < frame.height < 215_000
    load_frame(postgres_url, frame)
    pg_execute(postgres_url, "ANALYZE checkins", "ANALYZE montages", "ANALYZE montage_retry_users")
    watermark = frame.filter(pl.col("updated_at") <= AS_OF)["updated_at"].max()
    assert watermark is not None

    candidates_plan = explain(postgres_url, incremental_candidates_sql(watermark - timedelta(minutes=10)))
    users = frame["user_id"].unique().sort().head(100)
    extraction_plan = explain(postgres_url, extraction_sql(users))
    print(f"\n-- incremental candidates --\n{candidates_plan}\n-- extraction, 100 users --\n{extraction_plan}")

    assert "checkins_updated_at_idx" in candidates_plan, candidates_plan
    assert "Seq Scan on checkins" not in candidates_plan, candidates_plan
    assert "checkins_user_created_idx" in extraction_plan, extraction_plan
    assert "Seq Scan on checkins" not in extraction_plan, extraction_plan


# -- 7. secrets stay out of the output ------------------------------------------------------


SECRET = "hunter2-secret"


@pytest.mark.parametrize("debug", [False, True], ids=["info", "debug"])
@pytest.mark.parametrize("target", ["db-variables-missing-database", "url-refused-port"])
def test_connection_failure_is_clear_and_keeps_the_password_secret(target: str, debug: bool) -> None:
    missing = f"montage_absent_{uuid.uuid4().hex[:8]}"
    if target == "db-variables-missing-database":
        env = job_env(DB_HOST="127.0.0.1", DB_USER="root", DB_PASSWORD=SECRET, DB_NAME=missing, DB_CONNECT_TIMEOUT="5s")
        clue = missing
    else:
        env = job_env(f"postgresql://root:{SECRET}@127.0.0.1:1/x")
        clue = "refused"
    if debug:
        env.update(DEBUG="true", LOG_LEVEL="debug")

    with job_process("once", env=env) as job:
        code = job.wait(timeout=30)

    stdout, stderr = "".join(job.stdout), "".join(job.stderr)
    assert code not in (0, EXIT_LOCKED), job.output()
    assert clue in stderr, job.output()
    assert "connection" in stderr.lower(), job.output()
    assert "Traceback" not in stderr, job.output()
    assert SECRET not in stdout, job.output()
    assert SECRET not in stderr, job.output()
