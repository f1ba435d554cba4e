"""Change capture on real databases: what the PostgreSQL capture triggers record, how a run
consumes exactly the change rows its snapshot saw (late commits, commits during a run,
failed, interrupted, dry and named-user runs, shards), how the mode is chosen, the
watermark's guard against open transactions, and reconciliation in both modes.

Nothing is mocked. Writers whose transactions matter are real PostgreSQL connections the
test begins and ends by hand (`Writer`); "during a run" is a RunObserver hook of a run
executed in this process, so every interleaving happens at a known point of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import polars as pl
import pytest

from montage_vec.config import Settings, load_settings
from montage_vec.config.shard import Shard
from montage_vec.job.chunks import ChunkResult
from montage_vec.job.control import RunControl
from montage_vec.job.plan import RunOptions
from montage_vec.job.runner import run_job
from montage_vec.job.summary import RunSummary
from montage_vec.stores import open_store
from tests.support.cli import WATERMARK_MODE, RunCli, run_once
from tests.support.data import (
    AS_OF,
    Checkins,
    assert_matches_recompute,
    by_user,
    checkin,
    days,
    expected_montages,
    montage_ids,
    montage_stamps,
    montages_by_user,
    new_id,
    run_rows,
    stored_montages,
    watermark,
)
from tests.support.database import count, execute, query

postgres = pytest.mark.postgres

TRIGGER_MODE = {"MONTAGE_CHANGE_CAPTURE": "trigger"}
# The default, spelled out: run_cli's variables stay set for the rest of the test.
AUTO_MODE = {"MONTAGE_CHANGE_CAPTURE": "auto"}
# Watermark mode without the overlap: a user is a candidate only when a rule says so, never
# because its newest row happens to lie inside the overlap window.
EXACT_WATERMARK = {**WATERMARK_MODE, "WATERMARK_OVERLAP": "0s"}
CAPTURE_TRIGGERS = ("montage_vec_capture_insert", "montage_vec_capture_update", "montage_vec_capture_delete")
EXIT_SCHEMA = 3
EXIT_PERMISSION = 77


# -- helpers -------------------------------------------------------------------------------------------


class Writer:
    """One PostgreSQL connection whose transactions the test begins and ends by hand."""

    def __init__(self, url: str) -> None:
        self._connection = pg.connect(url, autocommit=True)
        self._cursor = self._connection.cursor()
        self.pid = int(self.scalar("SELECT pg_backend_pid()"))

    def execute(self, sql: str) -> None:
        self._cursor.execute(sql)

    def scalar(self, sql: str) -> Any:
        self._cursor.execute(sql)
        row = self._cursor.fetchone()
        assert row is not None, sql
        return row[0]

    def begin(self) -> None:
        self.execute("BEGIN")

    def commit(self) -> None:
        self.execute("COMMIT")

    def xid(self) -> str:
        """The open transaction's id (assigning one if it has none yet)."""
        return str(self.scalar("SELECT pg_current_xact_id()::TEXT"))

    def close(self) -> None:
        try:
            self.execute("ROLLBACK")  # a no-op (with a warning) outside a transaction
        finally:
            self._cursor.close()
            self._connection.close()


@contextmanager
def writer(url: str) -> Iterator[Writer]:
    connection = Writer(url)
    try:
        yield connection
    finally:
        connection.close()


def committed(url: str, *statements: str) -> str:
    """Run `statements` in one transaction on a fresh connection; that transaction's id."""
    with writer(url) as connection:
        connection.begin()
        for sql in statements:
            connection.execute(sql)
        xid = connection.xid()
        connection.commit()
    return xid


def migrate(url: str) -> None:
    with open_store(load_settings(database_url=url).database()) as store, store.session() as session:
        session.migrate()


def literal(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.isoformat()}'"


def insert_sql(rows: list[dict[str, Any]], updated_at: str | None = None) -> str:
    """One INSERT statement for `rows`; `updated_at` is an SQL expression replacing theirs (e.g. `now()`)."""
    values = []
    for row in rows:
        tags = "ARRAY[" + ", ".join(f"'{tag}'" for tag in row["tags"]) + "]::TEXT[]"
        stamp = updated_at or literal(row["updated_at"])
        values.append(
            f"('{row['id']}', '{row['user_id']}', {literal(row['created_at'])}, {stamp}, '{row['privacy']}', {tags})"
        )
    return f"INSERT INTO checkins (id, user_id, created_at, updated_at, privacy, tags) VALUES {', '.join(values)}"


def adopt(data: Checkins, row: dict[str, Any]) -> None:
    """Mirror a row written behind `data`'s back, with the updated_at the database gave it."""
    stored = query(data.url, f"SELECT updated_at FROM checkins WHERE id = '{row['id']}'")
    data.rows[row["id"]] = {**row, "updated_at": stored["updated_at"][0]}


def changes(url: str) -> list[tuple[str, str]]:
    """Every row of montage_changes as (xid, user_id), sorted."""
    frame = query(url, "SELECT xid::TEXT AS xid, user_id::TEXT AS user_id FROM montage_changes")
    return sorted((row["xid"], row["user_id"]) for row in frame.iter_rows(named=True))


def changes_of(url: str, xid: str) -> list[str]:
    """The users recorded for transaction `xid`, one entry per change row, sorted."""
    return sorted(user for row_xid, user in changes(url) if row_xid == xid)


def changed_users(url: str) -> set[str]:
    return {user for _, user in changes(url)}


def tagged(data: Checkins, user: str, tag: str, how_many: int, start: float = 1) -> list[dict[str, Any]]:
    """`how_many` check-ins of `user` tagged `tag`, one a day from `start` days before AS_OF, stored."""
    return data.add_many(checkin(user, AS_OF - days(start + i), tags=[tag]) for i in range(how_many))


def coffee_and_tea_users(data: Checkins) -> tuple[str, str]:
    """Two users in id order, stored with three coffee and three tea check-ins: one interest each."""
    coffee, tea = sorted(new_id() for _ in range(2))
    tagged(data, coffee, "coffee", 3)
    tagged(data, tea, "tea", 3)
    return coffee, tea


def started(result: Any) -> dict[str, Any]:
    line: dict[str, Any] = result.log("Batch job started")
    return line


def completed(result: Any) -> dict[str, Any]:
    line: dict[str, Any] = result.log("Batch job completed")
    return line


def user_rows(url: str, user: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return by_user(stored_montages(url)).get(user, ([], []))


def expected_rows(data: Checkins, user: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return by_user(expected_montages(data.all(), AS_OF)).get(user, ([], []))


class Hooks:
    """A RunObserver calling the given functions at run start and after the first chunk.

    The runner swallows observers' exceptions (a broken observer must not break a run), so
    this one records them and `check` raises the first: a hook that failed fails the test."""

    def __init__(
        self, on_start: Callable[[], None] | None = None, after_first_chunk: Callable[[], None] | None = None
    ) -> None:
        self._on_start = on_start
        self._after_first_chunk = after_first_chunk
        self.calls: list[str] = []
        self.errors: list[BaseException] = []

    def _call(self, name: str, hook: Callable[[], None] | None) -> None:
        self.calls.append(name)
        if hook is None:
            return
        try:
            hook()
        except BaseException as exc:
            self.errors.append(exc)
            raise

    def run_started(self, summary: RunSummary) -> None:
        self._call("run_started", self._on_start)

    def chunk_finished(self, summary: RunSummary, result: ChunkResult) -> None:
        first = "chunk_finished" not in self.calls
        self._call("chunk_finished", self._after_first_chunk if first else None)

    def run_finished(self, summary: RunSummary) -> None:
        self.calls.append("run_finished")

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]


def run_in_process(url: str, observer: Hooks, control: RunControl | None = None, **settings: Any) -> RunSummary:
    """One run of the job in this process (an incremental one when a watermark exists), with `observer`."""
    configured: Settings = load_settings(database_url=url, **settings)
    with open_store(configured.database()) as store:
        summary = run_job(store, configured, RunOptions(as_of=AS_OF), control, [observer])
    observer.check()
    return summary


# -- 1. what the triggers record ------------------------------------------------------------------------


@postgres
def test_triggers_record_each_statements_users_with_the_writing_transactions_id(postgres_url: str) -> None:
    migrate(postgres_url)
    a, b = sorted(new_id() for _ in range(2))
    rows = [checkin(a, AS_OF - days(1)), checkin(a, AS_OF - days(2)), checkin(b, AS_OF - days(3))]

    # INSERT of 3 rows for 2 users: one change row per user, stamped with the inserting transaction.
    with writer(postgres_url) as connection:
        connection.begin()
        connection.execute(insert_sql(rows))
        inserting = connection.xid()
        connection.commit()
    assert changes(postgres_url) == sorted([(inserting, a), (inserting, b)])

    # A check-in moved from a to b: both owners, old and new.
    moving = committed(postgres_url, f"UPDATE checkins SET user_id = '{b}' WHERE id = '{rows[0]['id']}'")
    assert changes_of(postgres_url, moving) == sorted([a, b])

    # A hard delete: the owner.
    deleting = committed(postgres_url, f"DELETE FROM checkins WHERE id = '{rows[1]['id']}'")
    assert changes_of(postgres_url, deleting) == [a]

    # A statement touching nothing records nothing; nor does a rolled-back one.
    idle = committed(postgres_url, "UPDATE checkins SET privacy = privacy WHERE false")
    assert changes_of(postgres_url, idle) == []
    with writer(postgres_url) as connection:
        connection.begin()
        connection.execute(f"DELETE FROM checkins WHERE user_id = '{b}'")
        rolled_back = connection.xid()
        connection.execute("ROLLBACK")
    assert changes_of(postgres_url, rolled_back) == []
    assert len(changes(postgres_url)) == 5


@postgres
def test_one_statement_over_a_thousand_rows_records_each_user_once(postgres_url: str) -> None:
    """Set-based capture: a statement adds at most one row per distinct user it touched."""
    migrate(postgres_url)
    users = sorted(new_id() for _ in range(7))
    array = "ARRAY[" + ", ".join(f"'{user}'::UUID" for user in users) + "]"
    insert = f"""INSERT INTO checkins (id, user_id, created_at, updated_at, tags)
        SELECT gen_random_uuid(), ({array})[1 + n % 7], {literal(AS_OF)} - n * INTERVAL '1 minute',
               {literal(AS_OF)}, ARRAY['coffee']
        FROM generate_series(1, 1000) n"""

    inserting = committed(postgres_url, insert)
    assert count(postgres_url, "checkins") == 1000
    assert changes_of(postgres_url, inserting) == users
    updating = committed(postgres_url, "UPDATE checkins SET tags = ARRAY['tea']")
    assert changes_of(postgres_url, updating) == users
    deleting = committed(postgres_url, "DELETE FROM checkins")
    assert changes_of(postgres_url, deleting) == users
    assert count(postgres_url, "montage_changes") == 3 * len(users)


@postgres
def test_truncate_is_not_captured_and_reconciliation_repairs_it(postgres_url: str, run_cli: RunCli) -> None:
    data = Checkins(postgres_url)
    users = sorted(new_id() for _ in range(2))
    for user in users:
        tagged(data, user, "coffee", 3)
    run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    assert changes(postgres_url) == []
    assert count(postgres_url, "montages") == 4

    execute(postgres_url, "TRUNCATE checkins")
    assert changes(postgres_url) == [], "TRUNCATE fires no row or statement trigger of the three"

    # Trigger mode reconciles every 7th run by default; this run is asked to.
    after = run_once(run_cli, postgres_url, env={**TRIGGER_MODE, "MONTAGE_RECONCILE_EVERY": "1"})
    assert (started(after)["mode"], started(after)["change_capture"]) == ("incremental", "trigger")
    assert started(after)["reconciled"] is True
    # Reconciliation (montages but no eligible check-in) finds both users.
    assert started(after)["candidates"] == 2
    assert completed(after)["montages_removed"] == 4
    assert count(postgres_url, "montages") == count(postgres_url, "montage_items") == 0


# -- 2. a check-in moved to another user without an updated_at bump -------------------------------------


def _move_setup(data: Checkins) -> tuple[str, str, dict[str, Any]]:
    """Users a (4 coffee check-ins) and b (3 tea check-ins); a's newest check-in is the one to move."""
    a, b = sorted(new_id() for _ in range(2))
    moved = tagged(data, a, "coffee", 4)[0]
    tagged(data, b, "tea", 3)
    return a, b, moved


def _move(data: Checkins, moved: dict[str, Any], to: str) -> None:
    """UPDATE user_id alone, as a careless application might: updated_at stays as it was."""
    execute(data.url, f"UPDATE checkins SET user_id = '{to}' WHERE id = '{moved['id']}'")
    data.rows[moved["id"]] = {**data.rows[moved["id"]], "user_id": to}


@postgres
def test_trigger_mode_repairs_both_sides_of_a_move_without_updated_at_bump(postgres_url: str, run_cli: RunCli) -> None:
    data = Checkins(postgres_url)
    a, b, moved = _move_setup(data)
    run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    _move(data, moved, b)
    assert changed_users(postgres_url) == {a, b}

    result = run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    assert (started(result)["mode"], started(result)["change_capture"]) == ("incremental", "trigger")
    assert started(result)["candidates"] == 2
    assert_matches_recompute(postgres_url, data.all(), AS_OF)
    items_of_b = [item[4] for item in user_rows(postgres_url, b)[1]]
    assert moved["id"] in items_of_b, "b gained the moved check-in"
    assert moved["id"] not in [item[4] for item in user_rows(postgres_url, a)[1]]
    assert changes(postgres_url) == []


@postgres
def test_watermark_mode_repairs_the_old_owner_and_needs_the_bump_for_the_new_one(
    postgres_url: str, run_cli: RunCli
) -> None:
    data = Checkins(postgres_url)
    a, b, moved = _move_setup(data)
    # A source without capture triggers (with them, even watermark mode reads the captured users).
    execute(postgres_url, *(f"DROP TRIGGER {name} ON checkins" for name in CAPTURE_TRIGGERS))
    run_once(run_cli, postgres_url, env=EXACT_WATERMARK)
    b_before = user_rows(postgres_url, b)
    _move(data, moved, b)

    result = run_once(run_cli, postgres_url, env=EXACT_WATERMARK)
    assert (started(result)["mode"], started(result)["change_capture"]) == ("incremental", "watermark")
    # Reconciliation finds a: one of its items now shows another user's check-in.
    assert started(result)["candidates"] == 1
    assert user_rows(postgres_url, a) == expected_rows(data, a)
    # b is not repaired: nothing in the database says b changed except the check-in's
    # updated_at, which the move did not bump. The README's contract for watermark mode is
    # that the application bumps updated_at on every change, moves included.
    assert user_rows(postgres_url, b) == b_before != expected_rows(data, b)

    data.edit(moved["id"])  # the bump the contract asks for
    bumped = run_once(run_cli, postgres_url, env=EXACT_WATERMARK)
    assert started(bumped)["candidates"] == 1
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


# -- 3. exact consumption: late commits and commits during a run ----------------------------------------


@postgres
def test_a_transaction_open_at_the_snapshot_is_left_for_the_next_run(postgres_url: str, run_cli: RunCli) -> None:
    data = Checkins(postgres_url)
    late_user, _other = coffee_and_tea_users(data)
    run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    before = montage_stamps(postgres_url)
    late = checkin(late_user, AS_OF - days(0.5), tags=["coffee"])

    with writer(postgres_url) as application:
        application.begin()
        application.execute(insert_sql([late], updated_at="now()"))
        run = run_once(run_cli, postgres_url, env=TRIGGER_MODE)
        assert (started(run)["mode"], started(run)["change_capture"]) == ("incremental", "trigger")
        assert started(run)["candidates"] == 0, "the open transaction's change row is invisible to the run"
        assert montage_stamps(postgres_url) == before
        # The run's prune left the open transaction's change row alone.
        assert application.scalar(f"SELECT count(*) FROM montage_changes WHERE user_id = '{late_user}'") == 1
        application.commit()
    adopt(data, late)
    assert changed_users(postgres_url) == {late_user}

    next_run = run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    assert started(next_run)["candidates"] == 1
    assert completed(next_run)["processed"] == 1
    assert changes(postgres_url) == []
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


@postgres
def test_changes_committed_during_a_run_survive_its_prune(postgres_url: str, run_cli: RunCli) -> None:
    """Three change rows commit while a run is under way, none visible in its snapshot:

    - `straggler`'s transaction was open when the run took its snapshot and commits right
      after (in run_started, before the run reads its candidates);
    - after the first chunk committed, one new transaction records a change for `busy` (a
      user this very run processes and whose older change row it consumes) and one for
      `newcomer`.
    The prune deletes only `busy`'s older row; the next run processes all three users."""
    data = Checkins(postgres_url)
    busy, newcomer, straggler = sorted(new_id() for _ in range(3))
    for user in (busy, newcomer, straggler):
        tagged(data, user, "coffee", 3)
    run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    data.add(busy, AS_OF - days(0.5), tags=["tea"])
    [(consumed_xid, _)] = changes(postgres_url)

    straggling = checkin(straggler, AS_OF - days(0.4), tags=["coffee"])
    during = [checkin(busy, AS_OF - days(0.3), tags=["tea"]), checkin(newcomer, AS_OF - days(0.3), tags=["coffee"])]
    during_xid: list[str] = []
    with writer(postgres_url) as application:
        application.begin()
        application.execute(insert_sql([straggling], updated_at="now()"))
        straggler_xid = application.xid()

        summary = run_in_process(
            postgres_url,
            Hooks(
                on_start=application.commit,
                after_first_chunk=lambda: during_xid.append(committed(postgres_url, insert_sql(during))),
            ),
            montage_change_capture="trigger",
        )
    assert summary.status == "completed", summary.error
    assert (summary.mode, summary.candidates, summary.totals.users) == ("incremental", 1, 1)
    remaining = changes(postgres_url)
    assert consumed_xid not in {xid for xid, _ in remaining}, "the run consumed what its snapshot saw"
    assert remaining == sorted([(straggler_xid, straggler), (during_xid[0], busy), (during_xid[0], newcomer)])

    for row in (straggling, *during):
        adopt(data, row)
    next_run = run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    assert started(next_run)["candidates"] == 3
    assert changes(postgres_url) == []
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


# -- 4. runs that prune nothing -------------------------------------------------------------------------


@postgres
def test_dry_runs_and_named_user_runs_prune_nothing(postgres_url: str, run_cli: RunCli) -> None:
    data = Checkins(postgres_url)
    first, second = coffee_and_tea_users(data)
    run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    saved = watermark(postgres_url)
    data.add(first, AS_OF - days(0.5), tags=["coffee"])
    data.add(second, AS_OF - days(0.5), tags=["tea"])
    pending = changes(postgres_url)
    assert {user for _, user in pending} == {first, second}

    dry = run_once(run_cli, postgres_url, "--dry-run", env=TRIGGER_MODE)
    assert (started(dry)["candidates"], completed(dry)["processed"]) == (2, 2)
    assert changes(postgres_url) == pending
    assert watermark(postgres_url) == saved

    named = run_once(run_cli, postgres_url, "--user-id", first, env=TRIGGER_MODE)
    assert (started(named)["mode"], completed(named)["processed"]) == ("users", 1)
    assert user_rows(postgres_url, first) == expected_rows(data, first)
    assert changes(postgres_url) == pending, "a named-user run consumes nothing, not even its users' rows"
    assert watermark(postgres_url) == saved

    last = run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    assert started(last)["candidates"] == 2
    assert changes(postgres_url) == []
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


@postgres
def test_a_failed_run_prunes_nothing_even_for_chunks_that_committed(postgres_url: str, run_cli: RunCli) -> None:
    """The last user's chunk is refused with SQLSTATE 42501 (insufficient privilege) by a
    trigger on montage_items. Unlike a data error (P0001, which isolates the user and lets
    the run complete), a permission error ends the run: exit 77, after the first chunks
    (one user each, one at a time) committed."""
    data = Checkins(postgres_url)
    users = sorted(new_id() for _ in range(3))
    for user in users:
        tagged(data, user, "coffee", 3)
    run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    saved = watermark(postgres_url)
    for user in users:
        data.add(user, AS_OF - days(0.5), tags=["coffee"])
    pending = changes(postgres_url)
    refused = ", ".join(f"'{row['id']}'::UUID" for row in data.of_user(users[-1]))
    execute(
        postgres_url,
        f"""CREATE FUNCTION refuse_items() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.checkin_id IN ({refused}) THEN
                RAISE EXCEPTION 'refused' USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END $$""",
        "CREATE TRIGGER refuse_items BEFORE INSERT ON montage_items FOR EACH ROW EXECUTE FUNCTION refuse_items()",
    )

    failed = run_cli(
        "once", "--as-of", AS_OF.isoformat(), "--batch-size", "1", "--concurrency", "1",
        env={"DATABASE_URL": postgres_url, **TRIGGER_MODE},
    )  # fmt: skip
    assert failed.exit_code == EXIT_PERMISSION, failed.everything()
    assert failed.log("Batch job failed")["error_type"] == "PermissionStoreError"
    assert [entry["users"] for entry in failed.logs if entry["message"] == "chunk committed"] == [1, 1]
    assert user_rows(postgres_url, users[0]) == expected_rows(data, users[0]), "the first chunks committed"
    assert changes(postgres_url) == pending
    assert watermark(postgres_url) == saved
    assert run_rows(postgres_url)[-1]["status"] == "failed"

    execute(postgres_url, "DROP TRIGGER refuse_items ON montage_items")
    again = run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    assert started(again)["candidates"] == 3
    assert changes(postgres_url) == []
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


@postgres
def test_an_interrupted_run_prunes_nothing(postgres_url: str, run_cli: RunCli) -> None:
    """A stop requested after the first chunk (as SIGTERM would): committed chunks stay, nothing is consumed."""
    data = Checkins(postgres_url)
    users = sorted(new_id() for _ in range(3))
    for user in users:
        tagged(data, user, "coffee", 3)
    run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    for user in users:
        data.add(user, AS_OF - days(0.5), tags=["coffee"])
    pending = changes(postgres_url)

    control = RunControl()
    summary = run_in_process(
        postgres_url,
        Hooks(after_first_chunk=lambda: control.request_stop("interrupted", exit_code=130)),
        control,
        montage_change_capture="trigger",
        montage_batch_size=1,
        max_concurrent_generations=1,
    )
    assert (summary.status, summary.chunks, summary.candidates) == ("interrupted", 1, 3)
    assert changes(postgres_url) == pending


# -- 5. shards -------------------------------------------------------------------------------------------


@postgres
def test_each_shard_prunes_only_its_own_users_change_rows(postgres_url: str, run_cli: RunCli) -> None:
    data = Checkins(postgres_url)
    users = sorted(new_id()[:-1] + digit for digit in "02468ace13579bdf"[::2])
    zero = set(Shard.parse("0/2").owns(pl.Series(users)).to_list())
    one = set(users) - zero
    assert len(zero) == len(one) == 4
    for user in users:
        tagged(data, user, "coffee", 3)
    shard = {key: {"MONTAGE_SHARD": key, **TRIGGER_MODE} for key in ("0/2", "1/2")}

    first = run_once(run_cli, postgres_url, env=shard["0/2"])
    assert (started(first)["mode"], completed(first)["processed"]) == ("full", 4)
    assert changed_users(postgres_url) == one
    run_once(run_cli, postgres_url, env=shard["1/2"])
    assert changes(postgres_url) == []
    assert_matches_recompute(postgres_url, data.all(), AS_OF)

    # Changes on both sides, and a check-in moved from shard 0 to shard 1 without a bump.
    giver, taker = min(zero), min(one)
    data.edit(data.of_user(max(zero))[0]["id"], tags=["tea"])
    data.edit(data.of_user(max(one))[0]["id"], tags=["tea"])
    _move(data, data.of_user(giver)[0], taker)
    assert changed_users(postgres_url) == {giver, taker, max(zero), max(one)}

    zero_run = run_once(run_cli, postgres_url, env=shard["0/2"])
    assert started(zero_run)["candidates"] == 2
    assert changed_users(postgres_url) == {taker, max(one)}
    one_run = run_once(run_cli, postgres_url, env=shard["1/2"])
    assert started(one_run)["candidates"] == 2
    assert changes(postgres_url) == []
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


# -- 6. choosing the mode --------------------------------------------------------------------------------


@postgres
def test_the_mode_follows_the_installed_triggers(postgres_url: str, run_cli: RunCli) -> None:
    data = Checkins(postgres_url)
    user = new_id()
    tagged(data, user, "coffee", 3)

    auto = started(run_once(run_cli, postgres_url, env=AUTO_MODE))
    assert (auto["change_capture"], auto["change_capture_reason"]) == (
        "trigger",
        "the capture triggers are installed on the source",
    )

    # One trigger of three dropped: the source is no longer fully captured.
    execute(postgres_url, 'DROP TRIGGER "montage_vec_capture_update" ON checkins')
    dropped = started(run_once(run_cli, postgres_url, env=AUTO_MODE))
    assert dropped["change_capture"] == "watermark"
    assert "capture triggers" in dropped["change_capture_reason"], dropped

    forced = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": postgres_url, **TRIGGER_MODE})
    assert forced.exit_code == EXIT_SCHEMA, forced.everything()
    assert "migrate --capture-triggers" in forced.stderr, forced.everything()
    assert "migrate --capture-triggers" in forced.log("Batch job failed")["error"]

    # Reinstalled: the saved watermarks are forgotten, so the next run is a full one, in trigger mode.
    migrated = run_cli("migrate", "--capture-triggers", env={"DATABASE_URL": postgres_url, **AUTO_MODE})
    assert migrated.exit_code == 0, migrated.everything()
    assert any(message.startswith("installed the capture triggers") for message in migrated.messages())
    reinstalled = started(run_once(run_cli, postgres_url, env=AUTO_MODE))
    assert (reinstalled["mode"], reinstalled["change_capture"]) == ("full", "trigger")

    # A disabled trigger counts as missing.
    execute(postgres_url, 'ALTER TABLE checkins DISABLE TRIGGER "montage_vec_capture_delete"')
    disabled = started(run_once(run_cli, postgres_url, env=AUTO_MODE))
    assert disabled["change_capture"] == "watermark"


@postgres
def test_forced_watermark_mode_still_prunes_what_its_snapshot_saw(postgres_url: str, run_cli: RunCli) -> None:
    data = Checkins(postgres_url)
    user, _other = coffee_and_tea_users(data)
    run_once(run_cli, postgres_url, env=EXACT_WATERMARK)
    assert changes(postgres_url) == []
    data.add(user, AS_OF - days(0.5), tags=["coffee"])
    assert changed_users(postgres_url) == {user}

    result = run_once(run_cli, postgres_url, env=EXACT_WATERMARK)
    line = started(result)
    assert (line["change_capture"], line["change_capture_reason"]) == ("watermark", "MONTAGE_CHANGE_CAPTURE=watermark")
    assert line["candidates"] == 1
    assert changes(postgres_url) == [], "the change table does not grow in watermark mode"
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


def test_duckdb_always_uses_the_watermark(duckdb_url: str, run_cli: RunCli) -> None:
    data = Checkins(duckdb_url)
    tagged(data, new_id(), "coffee", 3)
    line = started(run_once(run_cli, duckdb_url))
    assert line["change_capture"] == "watermark"
    assert "no capture triggers" in line["change_capture_reason"]
    # Asking for triggers where there can be none is refused, as on PostgreSQL without them.
    forced = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": duckdb_url, **TRIGGER_MODE})
    assert forced.exit_code == EXIT_SCHEMA, forced.everything()


# -- 7. the watermark waits for open transactions ------------------------------------------------------


@postgres
@pytest.mark.parametrize("writes", [False, True], ids=["idle", "writing"])
def test_the_watermark_does_not_pass_an_open_transaction(postgres_url: str, run_cli: RunCli, writes: bool) -> None:
    data = Checkins(postgres_url)
    slow, other = coffee_and_tea_users(data)
    run_once(run_cli, postgres_url, env=EXACT_WATERMARK)
    late = checkin(slow, AS_OF - days(0.5), tags=["coffee"])
    fresh = checkin(other, AS_OF - days(0.4), tags=["tea"])

    with writer(postgres_url) as application:
        application.begin()
        began = application.scalar("SELECT now()")
        if writes:
            application.execute(insert_sql([late], updated_at="now()"))  # stamped with its start
        xact_start = query(postgres_url, f"SELECT xact_start FROM pg_stat_activity WHERE pid = {application.pid}")
        held_since = xact_start["xact_start"][0]
        assert held_since == began
        # Committed after the open transaction began, so stamped later than its start.
        execute(postgres_url, insert_sql([fresh], updated_at="now()"))
        adopt(data, fresh)
        assert data.rows[fresh["id"]]["updated_at"] > held_since

        run = run_once(run_cli, postgres_url, env=EXACT_WATERMARK)
        assert started(run)["candidates"] == 1
        assert "watermark held back by an open transaction" in run.messages()
        held_back = watermark(postgres_url)
        assert held_back is not None
        assert held_back <= held_since
        application.commit()
    if writes:
        adopt(data, late)

    after = run_once(run_cli, postgres_url, env=EXACT_WATERMARK)
    if writes:
        # The late row is stamped with the transaction's now(), which is its xact_start.
        stamp = data.rows[late["id"]]["updated_at"]
        assert user_rows(postgres_url, slow) == expected_rows(data, slow), (
            f"the late row (updated_at {stamp}) was missed; the watermark held back for it was {held_back} "
            f"(xact_start {held_since}), and the next run read updated_at > watermark - WATERMARK_OVERLAP (0s)"
        )
    # `other` again (its row is newer than the held-back watermark), and `slow` if it wrote.
    assert started(after)["candidates"] == (2 if writes else 1)
    moved_on = watermark(postgres_url)
    assert moved_on is not None
    assert moved_on > held_since
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


# -- 8. reconciliation --------------------------------------------------------------------------------


@postgres
@pytest.mark.parametrize("mode", [TRIGGER_MODE, EXACT_WATERMARK], ids=["trigger", "watermark"])
def test_montages_deleted_by_an_operator_are_rewritten(
    postgres_url: str, run_cli: RunCli, mode: dict[str, str]
) -> None:
    data = Checkins(postgres_url)
    wiped, _other = coffee_and_tea_users(data)
    run_once(run_cli, postgres_url, env=mode)
    ids = montage_ids(postgres_url)
    execute(postgres_url, f"DELETE FROM montages WHERE user_id = '{wiped}'")
    assert user_rows(postgres_url, wiped) == ([], [])

    result = run_once(run_cli, postgres_url, env=mode)
    assert started(result)["mode"] == "incremental"
    assert started(result)["candidates"] == 1
    assert_matches_recompute(postgres_url, data.all(), AS_OF)
    assert montage_ids(postgres_url) == ids, "rewritten under the same ids"


@postgres
def test_items_deleted_behind_the_jobs_back_are_rewritten_by_the_next_run(postgres_url: str, run_cli: RunCli) -> None:
    """The job's own montage tables capture deletes by anyone but the job (README, Reconciliation):
    a general montage whose items an operator deleted is rewritten by the next incremental run,
    and only that user is processed."""
    data = Checkins(postgres_url)
    user, _other = coffee_and_tea_users(data)
    run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    general = montage_ids(postgres_url)[(user, "general", "")]
    execute(postgres_url, f"DELETE FROM montage_items WHERE montage_id = '{general}'")
    assert changes(postgres_url) != []

    incremental = run_once(run_cli, postgres_url, env=TRIGGER_MODE)
    assert started(incremental)["candidates"] == 1
    assert completed(incremental)["montages_written"] == 1
    assert_matches_recompute(postgres_url, data.all(), AS_OF)
    assert changes(postgres_url) == []


@postgres
@pytest.mark.parametrize("mode", [TRIGGER_MODE, EXACT_WATERMARK], ids=["trigger", "watermark"])
def test_a_shown_check_in_made_private_without_a_bump_is_repaired(
    postgres_url: str, run_cli: RunCli, mode: dict[str, str]
) -> None:
    data = Checkins(postgres_url)
    user, other = sorted(new_id() for _ in range(2))
    hidden = tagged(data, user, "coffee", 4)[0]
    tagged(data, other, "tea", 3)
    run_once(run_cli, postgres_url, env=mode)
    assert hidden["id"] in [item[4] for item in user_rows(postgres_url, user)[1]]

    execute(postgres_url, f"UPDATE checkins SET privacy = 'private' WHERE id = '{hidden['id']}'")
    data.rows[hidden["id"]] = {**data.rows[hidden["id"]], "privacy": "private"}

    result = run_once(run_cli, postgres_url, env=mode)
    # Trigger mode: the UPDATE was captured. Watermark mode: reconciliation (an item shows a
    # check-in that is no longer eligible).
    assert started(result)["candidates"] == 1
    assert hidden["id"] not in [item[4] for item in user_rows(postgres_url, user)[1]]
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


# -- 9. MONTAGE_RECONCILE_EVERY ------------------------------------------------------------------------


def test_reconciliation_runs_on_every_nth_incremental_run(database_url: str, run_cli: RunCli) -> None:
    """With MONTAGE_RECONCILE_EVERY=3 the query runs on every third incremental run after the
    last reconciled (or full) one; a hard delete waits for it in watermark mode."""
    data = Checkins(database_url)
    gone, _keeps = coffee_and_tea_users(data)
    if database_url.startswith("postgresql:"):  # a source without capture triggers
        execute(database_url, *(f"DROP TRIGGER {name} ON checkins" for name in CAPTURE_TRIGGERS))
    env = {**EXACT_WATERMARK, "MONTAGE_RECONCILE_EVERY": "3"}
    assert started(run_once(run_cli, database_url, env=env))["mode"] == "full"
    execute(database_url, f"DELETE FROM checkins WHERE user_id = '{gone}'")

    flags = []
    for _ in range(4):
        result = run_once(run_cli, database_url, env=env)
        flags.append(started(result)["reconciled"])
        reconciled_yet = any(flags)
        assert (gone in montages_by_user(database_url)) is not reconciled_yet, "only reconciliation sees it"
    assert flags == [False, False, True, False]
    assert gone not in montages_by_user(database_url)
    recorded = query(database_url, "SELECT mode, reconciled FROM montage_job_runs ORDER BY started_at")
    assert recorded["reconciled"].to_list()[1:] == flags
