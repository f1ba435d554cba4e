"""Two writers of one user's montages on PostgreSQL: the job and a real third session (standing
in for the realtime regenerate, or a run of another shard) serialize, and the job's write
succeeds whoever came first; the user never lands on the retry list for it.

The third session holds its writes in an open transaction until one of the job's connections
provably waits for it (pg_locks), then commits; time appears only as a hang guard. A genuine
key conflict (a stranger's montage on the user's key) still sends the user to the retry list:
tests/job/test_fault_kinds.py::test_a_data_error_isolates_the_user_behind_it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import pytest

from montage_vec.config import load_settings
from montage_vec.runtime.realtime import regenerate_user
from montage_vec.stores import open_store
from tests.support.cli import CliResult, RunCli, run_once
from tests.support.data import (
    AS_OF,
    checkin,
    days,
    expected_montages,
    load_checkins,
    new_id,
    retry_list,
    stored_montages,
)
from tests.support.database import sql_literal
from tests.support.interference import HANG_GUARD, waiting_job_connections
from tests.support.processes import wait_until

pytestmark = pytest.mark.postgres


@contextmanager
def other_writer(url: str, statements: Sequence[str]) -> Iterator[Future[int]]:
    """Another writer: `statements` in one transaction on a connection of its own (a background
    thread), committed as soon as one of the job's connections waits for a lock.

    Enters once the statements ran, uncommitted; the block runs the job. The future gives how
    many of the job's connections waited; it fails (the transaction rolled back) when the run
    ended without waiting, or after the hang guard.
    """
    written = threading.Event()
    run_over = threading.Event()

    def write() -> int:
        with pg.connect(url) as connection, connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
            written.set()
            try:
                waited = wait_until(
                    lambda: -1 if run_over.is_set() else waiting_job_connections(url),
                    "one of the job's connections waiting for the other writer",
                    HANG_GUARD,
                )
            except BaseException:
                connection.rollback()
                raise
            if waited < 0:
                connection.rollback()
                raise AssertionError("the job's run ended without ever waiting for the other writer's transaction")
            connection.commit()
            return int(waited)

    with ThreadPoolExecutor(1, thread_name_prefix="other-writer") as pool:
        future = pool.submit(write)
        wait_until(lambda: written.is_set() or future.done(), "the other writer's statements ran", HANG_GUARD)
        if not written.is_set():
            future.result()  # raises the writer's own error
        try:
            yield future
        finally:
            run_over.set()


def user_with_checkins(url: str) -> tuple[str, list[dict[str, Any]]]:
    """A new user with three daily coffee check-ins, stored (no montages yet)."""
    user = new_id()
    rows = [checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for i in range(3)]
    load_checkins(url, rows)
    return user, rows


def run_user(run_cli: RunCli, url: str, user: str) -> CliResult:
    """`once --user-id USER`, whatever its exit code."""
    return run_cli("once", "--as-of", AS_OF.isoformat(), "--user-id", user, env={"DATABASE_URL": url})


def general_montage_id(user: str) -> str:
    """SQL for the id the job derives for the user's general montage (see chunk_sql)."""
    return f"md5({sql_literal(user)} || '/general/')::UUID"


def items_of(montage_id: str, rows: list[dict[str, Any]]) -> str:
    """An INSERT of montage items for these check-ins, unlike any the engine writes."""
    values = ", ".join(
        f"({montage_id}, {position}, {sql_literal(row['id'])}::UUID, {sql_literal(row['created_at'])}, "
        f"'written-elsewhere', '{{}}'::JSONB)"
        for position, row in enumerate(rows)
    )
    return (
        "INSERT INTO montage_items (montage_id, position, checkin_id, checkin_created_at, widget_type, "
        f"widget_metadata) VALUES {values}"
    )


def check_outcome(run_cli: RunCli, result: CliResult, url: str, user: str, rows: list[dict[str, Any]]) -> None:
    """The run completed with the user written, not on the retry list, and what is stored is
    exactly the job's computation: a second run has nothing to write."""
    assert result.exit_code == 0, result.everything()
    assert retry_list(url) == []
    summary = result.log("Batch job completed")
    assert (summary["processed"], summary["successful"], summary["errors"]) == (1, 1, 0), summary
    assert stored_montages(url) == expected_montages(rows, AS_OF)
    again = run_once(run_cli, url, "--user-id", user).log("Batch job completed")
    assert (again["errors"], again["montages_written"], again["montages_removed"]) == (0, 0, 0), again


def test_a_third_session_creating_a_new_users_montages_meanwhile(postgres_url: str, run_cli: RunCli) -> None:
    """Regression: the job found no montage of a brand-new user to lock, its insert waited for a
    third session inserting the same montage and items, and once that committed, the job's
    items hit `23505 duplicate key ... montage_items_pkey`: the user went to the retry list."""
    user, rows = user_with_checkins(postgres_url)
    montage_id = general_montage_id(user)
    regenerate = [
        "INSERT INTO montages (id, user_id, kind, interest, item_count, generated_at, cache_expires_at, job_id) "
        f"VALUES ({montage_id}, {sql_literal(user)}::UUID, 'general', '', {len(rows)}, now(), "
        "now() + INTERVAL '1 hour', 'realtime')",
        items_of(montage_id, rows),
    ]

    with other_writer(postgres_url, regenerate) as writer:
        result = run_user(run_cli, postgres_url, user)

    assert writer.result() > 0, "the job waited for the third session"
    check_outcome(run_cli, result, postgres_url, user, rows)


def test_a_third_session_holding_an_existing_users_montages(postgres_url: str, run_cli: RunCli) -> None:
    """The third session locks the user's montage rows as the job does, then replaces their items:
    the job's write waits for it, then sees its rows and rewrites them to the job's computation."""
    user, rows = user_with_checkins(postgres_url)
    first = run_once(run_cli, postgres_url, "--user-id", user)
    assert first.log("Batch job completed")["montages_written"] > 0
    montages = f"SELECT id FROM montages WHERE user_id = {sql_literal(user)}::UUID"
    regenerate = [
        f"{montages} ORDER BY id FOR NO KEY UPDATE",
        f"UPDATE montages SET job_id = 'realtime' WHERE user_id = {sql_literal(user)}::UUID",
        f"DELETE FROM montage_items WHERE montage_id IN ({montages})",
        items_of(general_montage_id(user), rows[:1]),
    ]

    with other_writer(postgres_url, regenerate) as writer:
        result = run_user(run_cli, postgres_url, user)

    assert writer.result() > 0, "the job waited for the third session"
    check_outcome(run_cli, result, postgres_url, user, rows)


def test_the_realtime_regenerate_waits_for_a_third_session_too(postgres_url: str) -> None:
    """`POST /montages/{user_id}/regenerate` writes through the same chunk path: it too waits for
    the third session's new montage, then writes the user's montages over it."""
    user, rows = user_with_checkins(postgres_url)
    montage_id = general_montage_id(user)
    regenerate = [
        "INSERT INTO montages (id, user_id, kind, interest, item_count, generated_at, cache_expires_at, job_id) "
        f"VALUES ({montage_id}, {sql_literal(user)}::UUID, 'general', '', {len(rows)}, now(), "
        "now() + INTERVAL '1 hour', 'another writer')",
        items_of(montage_id, rows),
    ]
    settings = load_settings(database_url=postgres_url)

    with open_store(settings.database()) as store, other_writer(postgres_url, regenerate) as writer:
        answer = regenerate_user(store, settings, user)

    assert writer.result() > 0, "the regenerate waited for the third session"
    assert answer["items"], answer
    assert {item["widget_type"] for item in answer["items"]}.isdisjoint({"written-elsewhere"}), answer
    assert retry_list(postgres_url) == []
