"""Property: whatever check-ins change between incremental runs (inserts, tag edits, soft
deletes and restores, privacy changes, moved created_at) and however far as_of moves on, the
stored montages equal a full recompute at the run's as_of, for every user."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.cli import run_once
from tests.support.data import AS_OF, Checkins, assert_matches_recompute, checkin

USERS = 3
# Few distinct tags (coffee in several spellings) so that interests form, age and break often.
TAGS = ("coffee", " Coffee", "COFFEE ", "coffee", "tea", "Tea", "hiking")
PRIVACY = ("public", "friends", "private")
HOUR = timedelta(hours=1)

tag_lists = st.lists(st.sampled_from(TAGS), min_size=1, max_size=2) | st.just([])
# Hours relative to AS_OF: mostly the last 35 days (the 30-day window and its edge), some future.
created_hours = st.integers(-35 * 24, 2 * 24)
pick = st.integers(0, 10_000)  # which existing check-in an edit touches (modulo their number)

operations = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, USERS - 1), created_hours, tag_lists),
    st.tuples(st.just("tags"), pick, tag_lists),
    st.tuples(st.just("delete"), pick),
    st.tuples(st.just("restore"), pick),
    st.tuples(st.just("move"), pick, created_hours),
    st.tuples(st.just("privacy"), pick, st.sampled_from(PRIVACY)),
    # Advance as_of by 0 hours, a little, or far enough for interests to age out (27-31 days).
    st.tuples(st.just("run"), st.sampled_from([0, 1, 24, 24 * 5, 24 * 27, 24 * 31])),
)
# Every scenario starts with one qualifying interest (user 0: three coffees inside the window),
# so that the operations have an interest to break, age out or grow.
seeded_interest = st.lists(st.tuples(st.just(0), st.integers(-29 * 24, 0), st.just(["coffee"])), min_size=3, max_size=3)
initial_rows = st.builds(
    lambda seeded, random: seeded + random,
    seeded_interest,
    st.lists(st.tuples(st.integers(0, USERS - 1), created_hours, tag_lists), max_size=10),
)
# The last run may leap far enough for interests nobody touched to expire; WATERMARK_OVERLAP 0s
# leaves such users to the valid_until check alone, 10m re-processes the last-stamped one too.
scenarios = st.tuples(
    initial_rows,
    st.lists(operations, max_size=12),
    st.sampled_from([0, 24 * 28, 24 * 31]),
    st.sampled_from(["0s", "10m"]),
)

PROPERTY_SETTINGS = settings(
    deadline=None,
    # Every step runs the real CLI, so shrinking a failure would take minutes (and trip the
    # 300 s timeout); the unshrunk scenario is printed instead, and it is short enough to read.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Scenario:
    """Applies the operations to the database, running the job at each `run`."""

    url: str
    run_cli: Any
    # Ids are deterministic, so that a printed failing scenario replays exactly (created_at ties
    # are broken by id).
    users: list[str] = field(
        default_factory=lambda: [f"{u + 1:08x}-0000-4000-8000-00000000000{u}" for u in range(USERS)]
    )
    made: int = 0
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: int = 0
    overlap: str = "10m"

    def __post_init__(self) -> None:
        self.data = Checkins(self.url)
        self.as_of = AS_OF

    def new_checkin(self, user: int, hours: int, tags: list[str]) -> dict[str, Any]:
        self.made += 1
        return checkin(
            self.users[user], AS_OF + hours * HOUR, tags=list(tags), id=f"c0ffee00-0000-4000-a000-{self.made:012x}"
        )

    def play(
        self, initial: list[tuple[int, int, list[str]]], ops: list[tuple[Any, ...]], last_leap: int, overlap: str
    ) -> None:
        self.overlap = overlap
        self.data.add_many(self.new_checkin(u, h, t) for u, h, t in initial)
        self.run()
        for op in ops:
            getattr(self, f"do_{op[0]}")(*op[1:])
        self.do_run(last_leap)

    def do_insert(self, user: int, hours: int, tags: list[str]) -> None:
        self._stage(self.new_checkin(user, hours, tags))

    def do_tags(self, which: int, tags: list[str]) -> None:
        self._stage({**self._existing(which), "tags": list(tags)})

    def do_delete(self, which: int) -> None:
        row = self._existing(which)
        if row["deleted_at"] is None:
            self._stage({**row, "deleted_at": self.data.clock})

    def do_restore(self, which: int) -> None:
        self._stage({**self._existing(which), "deleted_at": None})

    def do_move(self, which: int, hours: int) -> None:
        """The app lets people correct when a check-in happened."""
        self._stage({**self._existing(which), "created_at": AS_OF + hours * HOUR})

    def do_privacy(self, which: int, privacy: str) -> None:
        self._stage({**self._existing(which), "privacy": privacy})

    def do_run(self, advance_hours: int) -> None:
        self.as_of += advance_hours * HOUR
        self.run()

    def run(self) -> None:
        if self.pending:
            self.data.put(list(self.pending.values()))
            self.pending.clear()
        result = run_once(self.run_cli, self.url, as_of=self.as_of, env={"WATERMARK_OVERLAP": self.overlap})
        expected_mode = "full" if self.runs == 0 else "incremental"
        assert result.log("Batch job started")["mode"] == expected_mode
        assert result.log("Batch job completed")["errors"] == 0
        self.runs += 1
        assert_matches_recompute(self.url, self.data.all(), self.as_of)

    def _existing(self, which: int) -> dict[str, Any]:
        rows = sorted({**self.data.rows, **self.pending}.values(), key=lambda row: row["id"])
        return rows[which % len(rows)]

    def _stage(self, row: dict[str, Any]) -> None:
        """Queue a new version of a check-in, stamped later than every earlier version."""
        if row["id"] not in self.data.rows and row["id"] not in self.pending:
            stamped = {**row, "updated_at": self.data.tick(not_before=row["created_at"])}
        else:
            stamped = {**row, "updated_at": self.data.tick()}
        self.pending[row["id"]] = stamped


@pytest.mark.slow
@settings(PROPERTY_SETTINGS, max_examples=12)
@given(scenario=scenarios)
def test_incremental_runs_equal_full_recompute_duckdb(run_cli, scenario) -> None:
    directory = tempfile.mkdtemp(prefix="montage-prop-")
    try:
        Scenario(f"duckdb:///{Path(directory) / 'montage.duckdb'}", run_cli).play(*scenario)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.postgres
@settings(PROPERTY_SETTINGS, max_examples=3)
@given(scenario=scenarios)
def test_incremental_runs_equal_full_recompute_postgresql(postgres_url: str, run_cli, scenario) -> None:
    # A fresh database per example is too slow; emptying every table is as good.
    with pg.connect(postgres_url, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [f'"{name}"' for (name,) in cursor.fetchall()]
        if tables:
            cursor.execute(f"TRUNCATE {', '.join(tables)}")
    Scenario(postgres_url, run_cli).play(*scenario)


def test_the_property_can_fail(duckdb_url: str, run_cli) -> None:
    """Guard against a vacuous property: a change the job has not seen yet must show up."""
    scenario = Scenario(duckdb_url, run_cli)
    scenario.data.add_many([checkin(scenario.users[0], AS_OF - HOUR * i, tags=["tea"]) for i in range(1, 4)])
    scenario.run()
    scenario.data.put([{**scenario.data.all()[0], "tags": [], "updated_at": scenario.data.tick()}])
    with pytest.raises(AssertionError, match="montages differ"):
        assert_matches_recompute(duckdb_url, scenario.data.all(), AS_OF)
