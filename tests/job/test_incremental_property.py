"""Property: whatever check-ins change between incremental runs (inserts, tag edits with or without
an `updated_at` bump, soft deletes and restores, privacy changes, moved created_at, hard deletes,
check-ins moved to another user, montages deleted behind the job's back, writer transactions that
commit only after a run) and however far as_of moves on, the stored montages equal a full
recompute at the run's as_of, for every user; on DuckDB (watermark) and on PostgreSQL in both
change capture modes (README, "Change capture").

The late-commit tests below pin the one scenario the property can only reach by chance: a
transaction open while a run completes, stamped before data the run saw, committed after it."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from tests.support.cli import RunCli, run_once
from tests.support.data import (
    AS_OF,
    Checkins,
    assert_matches_recompute,
    checkin,
    montage_stamps,
    same_instant,
    watermark,
)
from tests.support.database import count, execute, is_duckdb, sql_literal

USERS = 3
# Few distinct tags (coffee in several spellings) so that interests form, age and break often.
TAGS = ("coffee", " Coffee", "COFFEE ", "coffee", "tea", "Tea", "hiking")
PRIVACY = ("public", "friends", "private")
HOUR = timedelta(hours=1)
CAPTURES = ("trigger", "watermark")

tag_lists: st.SearchStrategy[list[str]] = st.lists(st.sampled_from(TAGS), min_size=1, max_size=2) | st.just([])
# Hours relative to AS_OF: mostly the last 35 days (the 30-day window and its edge), some future.
created_hours = st.integers(-35 * 24, 2 * 24)
pick = st.integers(0, 10_000)  # which existing check-in an edit touches (modulo their number)
user = st.integers(0, USERS - 1)
# Whether the app bumps updated_at with an edit. Only trigger mode must see edits without a
# bump; in watermark mode the README's contract requires it, so the Scenario always bumps there.
bump = st.booleans()

common_operations = [
    st.tuples(st.just("insert"), user, created_hours, tag_lists),
    st.tuples(st.just("tags"), pick, tag_lists, bump),
    st.tuples(st.just("delete"), pick),
    st.tuples(st.just("restore"), pick),
    st.tuples(st.just("move"), pick, created_hours),
    st.tuples(st.just("privacy"), pick, st.sampled_from(PRIVACY)),
    st.tuples(st.just("hard_delete"), pick),
    # To another user (the next one when the drawn user already owns it).
    st.tuples(st.just("reassign"), pick, user, bump),
    st.tuples(st.just("drop_montages"), user),
    # Advance as_of by 0 hours, a little, or far enough for interests to age out (27-31 days).
    st.tuples(st.just("run"), st.sampled_from([0, 1, 24, 24 * 5, 24 * 27, 24 * 31])),
]
# PostgreSQL: a second connection writes in a transaction left open until the next run completed.
late_operation = st.tuples(
    st.just("late"),
    st.sampled_from(["insert", "update", "delete"]),
    pick,
    user,
    created_hours,
    tag_lists,
    st.booleans(),  # trigger mode: stamp updated_at long before the transaction (watermark: now())
)
# Every scenario starts with one qualifying interest (user 0: three coffees inside the window),
# so that the operations have an interest to break, age out or grow.
seeded_interest = st.lists(st.tuples(st.just(0), st.integers(-29 * 24, 0), st.just(["coffee"])), min_size=3, max_size=3)
initial_rows = st.builds(
    lambda seeded, random: seeded + random,
    seeded_interest,
    st.lists(st.tuples(user, created_hours, tag_lists), max_size=10),
)


def scenarios(*, late: bool) -> st.SearchStrategy[tuple[Any, ...]]:
    # The last run may leap far enough for interests nobody touched to expire; WATERMARK_OVERLAP 0s
    # leaves such users to the valid_until check alone, 10m re-processes the last-stamped one too.
    # Late writes first: hypothesis draws the first branches of one_of more often.
    operations = st.one_of(*([late_operation] if late else []), *common_operations)
    return st.tuples(
        initial_rows,
        st.lists(operations, min_size=2, max_size=12),
        st.sampled_from([0, 24 * 28, 24 * 31]),
        st.sampled_from(["0s", "10m"]),
    )


# The late-commit tests' scenario as property steps: user 0's first coffee loses its tag in a
# transaction left open across a run, while user 1's check-in is edited and committed after
# that transaction began; WATERMARK_OVERLAP 0s.
LATE_COMMIT_EXAMPLE = (
    [(0, -1, ["coffee"]), (0, -2, ["coffee"]), (0, -3, ["coffee"]), (1, -1, ["tea"])],
    [("late", "update", 0, 0, -1, ["tea"], False), ("tags", 2, ["hiking"], True), ("run", 0)],
    0,
    "0s",
)

# Trigger mode: a coffee moves to user 1 and user 1's check-in gains a tag, neither bumping
# updated_at (watermark mode bumps them), then user 1's montages are deleted by hand.
SILENT_EDITS_EXAMPLE = (
    [(0, -1, ["coffee"]), (0, -2, ["coffee"]), (0, -3, ["coffee"]), (1, -4, ["tea"])],
    [("reassign", 0, 1, False), ("tags", 3, ["coffee"], False), ("run", 1), ("drop_montages", 1), ("hard_delete", 1)],
    0,
    "0s",
)

PROPERTY_SETTINGS = settings(
    deadline=None,
    # Every step runs the real CLI, so shrinking a failure would take minutes (and trip the
    # 300 s timeout); the unshrunk scenario is printed instead, and it is short enough to read.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def note(what: str) -> None:
    """Count what the examples did (`pytest --hypothesis-show-statistics`)."""
    if currently_in_test_context():
        event(what)


@dataclass
class LateWrite:
    """A write on a second connection whose transaction stays open across one run."""

    connection: Any
    started: datetime  # the transaction's start, = now() in it = pg_stat_activity.xact_start
    checkin_id: str
    row: dict[str, Any] | None  # the check-in's version once committed; None when deleted


@dataclass
class Scenario:
    """Applies the operations to the database, running the job at each `run`."""

    url: str
    run_cli: RunCli
    capture: str | None = None  # MONTAGE_CHANGE_CAPTURE; None: the default (auto)
    # Ids are deterministic, so that a printed failing scenario replays exactly (created_at ties
    # are broken by id).
    users: list[str] = field(
        default_factory=lambda: [f"{u + 1:08x}-0000-4000-8000-00000000000{u}" for u in range(USERS)]
    )
    made: int = 0
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    late: list[LateWrite] = field(default_factory=list)
    runs: int = 0
    overlap: str = "10m"
    # From a late write on, edits are stamped from the wall clock, as the database's now() is:
    # later than the open transaction's start, so the watermark's guard is what must hold.
    wall_clock: bool = False

    def __post_init__(self) -> None:
        self.data = Checkins(self.url)
        self.as_of = AS_OF

    @property
    def must_bump(self) -> bool:
        """Watermark mode (also DuckDB's only mode): the app must bump updated_at on every edit."""
        return self.capture != "trigger"

    def new_checkin(self, user: int, hours: int, tags: list[str]) -> dict[str, Any]:
        self.made += 1
        return checkin(
            self.users[user], AS_OF + hours * HOUR, tags=list(tags), id=f"c0ffee00-0000-4000-a000-{self.made:012x}"
        )

    def play(
        self, initial: list[tuple[int, int, list[str]]], ops: list[tuple[Any, ...]], last_leap: int, overlap: str
    ) -> None:
        self.overlap = overlap
        try:
            self.data.add_many(self.new_checkin(u, h, t) for u, h, t in initial)
            self.run()
            for op in ops:
                note(op[0] if op[0] != "late" else f"late {op[1]}")
                getattr(self, f"do_{op[0]}")(*op[1:])
            self.do_run(last_leap)
        finally:
            for late in self.late:  # only after a failure (a run commits them): closing rolls back
                late.connection.close()

    def do_insert(self, user: int, hours: int, tags: list[str]) -> None:
        self._stage(self.new_checkin(user, hours, tags))

    def do_tags(self, which: int, tags: list[str], bump: bool) -> None:
        if row := self._existing(which):
            self._stage({**row, "tags": list(tags)}, bump=bump)

    def do_delete(self, which: int) -> None:
        row = self._existing(which)
        if row and row["deleted_at"] is None:
            self._stage({**row, "deleted_at": self.data.clock})

    def do_restore(self, which: int) -> None:
        if row := self._existing(which):
            self._stage({**row, "deleted_at": None})

    def do_move(self, which: int, hours: int) -> None:
        """The app lets people correct when a check-in happened."""
        if row := self._existing(which):
            self._stage({**row, "created_at": AS_OF + hours * HOUR})

    def do_privacy(self, which: int, privacy: str) -> None:
        if row := self._existing(which):
            self._stage({**row, "privacy": privacy})

    def do_hard_delete(self, which: int) -> None:
        self._flush()
        if row := self._existing(which):
            execute(self.url, f"DELETE FROM checkins WHERE id = '{row['id']}'")
            del self.data.rows[row["id"]]

    def do_reassign(self, which: int, user: int, bump: bool) -> None:
        """UPDATE checkins SET user_id: the check-in now belongs to another user."""
        self._flush()
        if not (row := self._existing(which)):
            return
        owner = self.users.index(row["user_id"])
        target = self.users[user if user != owner else (owner + 1) % USERS]
        moved = {**row, "user_id": target}
        assignments = f"user_id = '{target}'"
        if bump or self.must_bump:
            moved["updated_at"] = self._tick()
            assignments += f", updated_at = {sql_literal(moved['updated_at'])}"
        else:
            note("reassign without an updated_at bump")
        execute(self.url, f"UPDATE checkins SET {assignments} WHERE id = '{row['id']}'")
        self.data.rows[row["id"]] = moved

    def do_drop_montages(self, user: int) -> None:
        """An operator deletes a user's montages behind the job's back (items go with them)."""
        montages = f"SELECT id FROM montages WHERE user_id = '{self.users[user]}'"
        if is_duckdb(self.url):  # no ON DELETE CASCADE there: the operator deletes the items too
            execute(self.url, f"DELETE FROM montage_items WHERE montage_id IN ({montages})")
        execute(self.url, f"DELETE FROM montages WHERE id IN ({montages})")

    def do_late(self, kind: str, which: int, user: int, hours: int, tags: list[str], old_stamp: bool) -> None:
        """A writer's transaction, open until the next run completed, then committed.

        In watermark mode it stamps updated_at with now() (the transaction's start), as the
        README's contract says; in trigger mode also with a time long before it.
        """
        self._flush()
        self.wall_clock = True  # edits before the run are stamped after the transaction's start
        row = self._existing(which)
        if kind == "insert" or row is None:
            row = {**self.new_checkin(user, hours, tags), "updated_at": None}
            kind = "insert"
        else:
            row = {**row, "user_id": self.users[user], "tags": list(tags)}
        stamp = sql_literal(row["created_at"]) if old_stamp and not self.must_bump else "now()"
        connection = pg.connect(self.url, autocommit=False)
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            [(started,)] = cursor.fetchall()
            if kind == "delete":
                cursor.execute(f"DELETE FROM checkins WHERE id = '{row['id']}'")
                self.late.append(LateWrite(connection, started, row["id"], None))
                return
            if kind == "insert":
                columns = [column for column in row if column != "updated_at"]
                values = ", ".join(sql_literal(row[column]) for column in columns)
                cursor.execute(
                    f"INSERT INTO checkins ({', '.join(columns)}, updated_at) VALUES ({values}, {stamp}) "
                    "RETURNING updated_at"
                )
            else:
                cursor.execute(
                    f"UPDATE checkins SET user_id = '{row['user_id']}', tags = {sql_literal(row['tags'])}, "
                    f"updated_at = {stamp} WHERE id = '{row['id']}' RETURNING updated_at"
                )
            [(updated_at,)] = cursor.fetchall()
        self.late.append(LateWrite(connection, started, row["id"], {**row, "updated_at": updated_at}))

    def do_run(self, advance_hours: int) -> None:
        self.as_of += advance_hours * HOUR
        self.run()

    def run(self) -> None:
        self._flush()
        env = {"WATERMARK_OVERLAP": self.overlap}
        if self.capture:
            env["MONTAGE_CHANGE_CAPTURE"] = self.capture
        result = run_once(self.run_cli, self.url, as_of=self.as_of, env=env)
        started = result.log("Batch job started")
        assert started["mode"] == ("full" if self.runs == 0 else "incremental")
        if self.capture:
            assert started["change_capture"] == self.capture
        assert result.log("Batch job completed")["errors"] == 0
        if "watermark held back by an open transaction" in result.messages():
            note("watermark held back")
        self.runs += 1
        # The late writes are not committed yet: the montages show what the run could see.
        assert_matches_recompute(self.url, self.data.all(), self.as_of)
        if self.late and self.capture == "watermark":
            saved = watermark(self.url)
            oldest = min(late.started for late in self.late)
            assert saved is not None and saved <= oldest, "the watermark passed an open transaction's start"
        self._commit_late()

    def _commit_late(self) -> None:
        while self.late:
            late = self.late.pop(0)
            late.connection.commit()
            late.connection.close()
            if late.row is None:
                del self.data.rows[late.checkin_id]
            else:
                self.data.rows[late.checkin_id] = late.row
                self.data.clock = max(self.data.clock, late.row["updated_at"])

    def _flush(self) -> None:
        if self.pending:
            self.data.put(list(self.pending.values()))
            self.pending.clear()

    def _existing(self, which: int) -> dict[str, Any] | None:
        """One current check-in (None when there is none), never one an open transaction wrote."""
        locked = {late.checkin_id for late in self.late}
        rows = sorted(
            (row for row in {**self.data.rows, **self.pending}.values() if row["id"] not in locked),
            key=lambda row: row["id"],
        )
        return rows[which % len(rows)] if rows else None

    def _tick(self, not_before: datetime | None = None) -> datetime:
        if not self.wall_clock:
            return self.data.tick(not_before=not_before)
        self.data.clock = max(self.data.clock + timedelta(microseconds=1), datetime.now(UTC))
        return self.data.clock

    def _stage(self, row: dict[str, Any], bump: bool = True) -> None:
        """Queue a new version of a check-in, stamped later than every earlier version (unless the
        app does not bump updated_at with this edit, which only trigger mode must see)."""
        if row["id"] not in self.data.rows and row["id"] not in self.pending:
            stamped = {**row, "updated_at": self._tick(not_before=row["created_at"])}
        elif bump or self.must_bump:
            stamped = {**row, "updated_at": self._tick()}
        else:
            note("edit without an updated_at bump")
            stamped = row
        self.pending[row["id"]] = stamped


@pytest.mark.slow
@settings(PROPERTY_SETTINGS, max_examples=15)
@given(scenario=scenarios(late=False))
def test_incremental_runs_equal_full_recompute_duckdb(run_cli: RunCli, scenario: tuple[Any, ...]) -> None:
    directory = tempfile.mkdtemp(prefix="montage-prop-")
    try:
        Scenario(f"duckdb:///{Path(directory) / 'montage.duckdb'}", run_cli).play(*scenario)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("capture", CAPTURES)
@settings(PROPERTY_SETTINGS, max_examples=12)
@given(scenario=scenarios(late=True))
# A late write stamped now() while a later-stamped edit commits; WATERMARK_OVERLAP 0s.
@example(scenario=LATE_COMMIT_EXAMPLE)
@example(scenario=SILENT_EDITS_EXAMPLE)
def test_incremental_runs_equal_full_recompute_postgresql(
    postgres_url: str, run_cli: RunCli, capture: str, scenario: tuple[Any, ...]
) -> None:
    # A fresh database per example is too slow; emptying every table is as good.
    with pg.connect(postgres_url, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [f'"{name}"' for (name,) in cursor.fetchall()]
        if tables:
            cursor.execute(f"TRUNCATE {', '.join(tables)}")
    Scenario(postgres_url, run_cli, capture=capture).play(*scenario)


def test_the_property_can_fail(duckdb_url: str, run_cli: RunCli) -> None:
    """Guard against a vacuous property: a change the job has not seen yet must show up."""
    scenario = Scenario(duckdb_url, run_cli)
    scenario.data.add_many([checkin(scenario.users[0], AS_OF - HOUR * i, tags=["tea"]) for i in range(1, 4)])
    scenario.run()
    scenario.data.put([{**scenario.data.all()[0], "tags": [], "updated_at": scenario.data.tick()}])
    with pytest.raises(AssertionError, match="montages differ"):
        assert_matches_recompute(duckdb_url, scenario.data.all(), AS_OF)


@pytest.mark.parametrize("operation", [("hard_delete", 0), ("reassign", 0, 1, False), ("drop_montages", 0)])
def test_the_new_operations_change_what_the_job_must_show(
    duckdb_url: str, run_cli: RunCli, operation: tuple[Any, ...]
) -> None:
    """Each operation the property added, applied after a run, leaves the montages stale until the next run."""
    scenario = Scenario(duckdb_url, run_cli)
    scenario.data.add_many([checkin(scenario.users[0], AS_OF - HOUR * i, tags=["tea"]) for i in range(1, 4)])
    scenario.run()
    getattr(scenario, f"do_{operation[0]}")(*operation[1:])
    with pytest.raises(AssertionError, match="differ from a full recompute"):
        assert_matches_recompute(duckdb_url, scenario.data.all(), AS_OF)
    scenario.run()


# -- a transaction that commits after a run ----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("capture", "write", "stamp"),
    [
        ("watermark", "insert", "now()"),
        ("watermark", "update", "now()"),
        ("trigger", "insert", "now()"),
        ("trigger", "update", "now()"),
        # Trigger mode does not read updated_at at all: a row stamped long ago is still found.
        ("trigger", "insert", "old"),
        ("trigger", "update", "old"),
    ],
)
def test_a_transaction_committed_after_a_run_is_seen_by_the_next(
    postgres_url: str, run_cli: RunCli, capture: str, write: str, stamp: str
) -> None:
    """A writer's transaction is open while an incremental run completes and commits after it;
    the next run shows its change. Its rows are stamped before data the first run saw, and
    WATERMARK_OVERLAP is 0s, so in watermark mode only the guard on open transactions can save it."""
    env = {"MONTAGE_CHANGE_CAPTURE": capture, "WATERMARK_OVERLAP": "0s"}
    scenario = Scenario(postgres_url, run_cli, capture=capture, overlap="0s")
    writer, other = scenario.users[0], scenario.users[1]
    coffees = [checkin(writer, AS_OF - HOUR * i, tags=["coffee"]) for i in range(1, 4)]
    scenario.data.add_many([*coffees, checkin(other, AS_OF - HOUR, tags=["tea"])])
    first = run_once(run_cli, postgres_url, as_of=AS_OF, env=env)
    assert first.log("Batch job started")["mode"] == "full"
    assert_matches_recompute(postgres_url, scenario.data.all(), AS_OF)

    with pg.connect(postgres_url, autocommit=False) as connection, connection.cursor() as cursor:
        cursor.execute("SET idle_in_transaction_session_timeout = '120s'")  # a hang guard only
        cursor.execute("SELECT now()")
        [(opened,)] = cursor.fetchall()
        updated_at = "now()" if stamp == "now()" else sql_literal(AS_OF - timedelta(days=90))
        if write == "insert":  # a newer check-in: it becomes the first item of the writer's montage
            row = checkin(writer, AS_OF - HOUR / 2, tags=["tea"])
            columns = [column for column in row if column != "updated_at"]
            values = ", ".join(sql_literal(row[column]) for column in columns)
            cursor.execute(
                f"INSERT INTO checkins ({', '.join(columns)}, updated_at) VALUES ({values}, {updated_at}) "
                "RETURNING updated_at"
            )
        else:  # a coffee loses its tag: the coffee interest no longer qualifies
            row = {**coffees[0], "tags": ["tea"]}
            cursor.execute(
                f"UPDATE checkins SET tags = {sql_literal(row['tags'])}, updated_at = {updated_at} "
                f"WHERE id = '{row['id']}' RETURNING updated_at"
            )
        [(late_stamp,)] = cursor.fetchall()
        if stamp == "now()":
            assert same_instant(late_stamp, opened)
        # Committed while it is open, stamped after its start (the database's clock, as now() is).
        scenario.data.put([{**scenario.data.of_user(other)[0], "tags": ["hiking"], "updated_at": datetime.now(UTC)}])
        assert scenario.data.latest_update() > late_stamp

        during = run_once(run_cli, postgres_url, as_of=AS_OF, env=env)
        assert during.log("Batch job started")["mode"] == "incremental"
        assert during.log("Batch job started")["change_capture"] == capture
        assert_matches_recompute(postgres_url, scenario.data.all(), AS_OF)  # the late row is invisible
        if capture == "watermark":
            assert "watermark held back by an open transaction" in during.messages()
            saved = watermark(postgres_url)
            assert saved is not None and saved <= opened, f"watermark {saved} passed the open transaction ({opened})"
        connection.commit()
    scenario.data.rows[row["id"]] = {**row, "updated_at": late_stamp}

    after = run_once(run_cli, postgres_url, as_of=AS_OF, env=env)
    assert after.log("Batch job started")["mode"] == "incremental"
    assert_matches_recompute(postgres_url, scenario.data.all(), AS_OF)
    # The writer's general montage changed in either write: it was rewritten by this run.
    after_job = after.log("Batch job completed")["job_id"]
    assert montage_stamps(postgres_url)[(writer, "general", "")][2] == after_job
    if capture == "trigger":
        assert count(postgres_url, "montage_changes") == 0, "the run consumed every committed change"
