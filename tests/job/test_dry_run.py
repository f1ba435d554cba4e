"""Dry runs tell what a real run would change (issue 12), on DuckDB and PostgreSQL.

A dry run reports `montages_would_write`, `montages_would_remove`, `items_would_write` and
`users_changed` from the write's own change detection (`SqlSession.diff_chunk`); the real run
right after reports the same numbers as `montages_written`, `montages_removed`,
`items_written` and `users_changed`, and the tables agree with them. The dry run leaves every
table as it was, works through a DuckDB file opened read-only (byte for byte unchanged), and
on PostgreSQL takes no row lock and writes no job table: it completes while another session
holds every job table in EXCLUSIVE mode, which a real run cannot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from montage_vec.config import load_settings
from montage_vec.datagen import SyntheticSpec, generate_checkins
from montage_vec.job.plan import RunOptions
from montage_vec.job.runner import run_job
from montage_vec.job.summary import RunSummary
from montage_vec.stores import open_store
from tests.support.cli import RunCli, job_id_of, run_once
from tests.support.data import (
    AS_OF,
    CHECKIN_FRAME_SCHEMA,
    Checkins,
    assert_matches_recompute,
    checkin,
    days,
    new_id,
)
from tests.support.database import duckdb_path, execute, query

DRY_COUNTS = ("montages_would_write", "montages_would_remove", "items_would_write", "users_changed")
REAL_COUNTS = ("montages_written", "montages_removed", "items_written", "users_changed")
# Far enough for interests the first run stored to age out (the window is 30 days).
LATER = AS_OF + days(20)
# Every base table of the job's schema (the check-ins and the capture table included).
BASE_TABLES = """
SELECT table_name AS name FROM information_schema.tables
WHERE table_schema IN ('main', 'public') AND table_type = 'BASE TABLE' ORDER BY 1
"""


def dry_counts(summary: dict[str, Any]) -> tuple[int, ...]:
    return tuple(summary[name] for name in DRY_COUNTS)


def real_counts(summary: dict[str, Any]) -> tuple[int, ...]:
    return tuple(summary[name] for name in REAL_COUNTS)


def everything(url: str) -> dict[str, list[str]]:
    """Every row of every table, as sorted text: equal before and after means nothing was written."""
    tables = query(url, BASE_TABLES)["name"].to_list()
    return {table: sorted(map(repr, query(url, f'SELECT * FROM "{table}"').rows())) for table in tables}


def written_by(url: str, job_id: str) -> tuple[int, int, int]:
    """What the tables say run `job_id` wrote: (montages it rewrote, their items, users it invalidated)."""
    rows = query(
        url,
        f"""
        SELECT (SELECT count(*) FROM montages WHERE job_id = '{job_id}') AS montages,
               (SELECT count(*) FROM montage_items i JOIN montages m ON m.id = i.montage_id
                WHERE m.job_id = '{job_id}') AS items,
               (SELECT count(*) FROM montage_events
                WHERE type = 'montage.cache.invalidated' AND job_id = '{job_id}') AS users
        """,
    ).rows()
    [(montages, items, users)] = rows
    return int(montages), int(items), int(users)


def montage_id_set(url: str) -> set[str]:
    return set(query(url, "SELECT id::VARCHAR AS id FROM montages")["id"].to_list())


def synthetic_rows(users: int, seed: int) -> list[dict[str, Any]]:
    """The synthetic generator's check-ins around AS_OF, as rows for `Checkins.put`."""
    spec = SyntheticSpec(users=users, seed=seed, as_of=AS_OF, mean_checkins_per_user=12)
    frame = pl.from_arrow(generate_checkins(spec))
    assert isinstance(frame, pl.DataFrame)
    return frame.select(list(CHECKIN_FRAME_SCHEMA)).to_dicts()


def coffees(user: str, how_many: int, start: float = 1) -> list[dict[str, Any]]:
    """`how_many` daily coffee check-ins of `user`, the newest `start` days before AS_OF."""
    return [checkin(user, AS_OF - days(start + i), tags=["coffee"]) for i in range(how_many)]


# -- one hand-made scenario, counted by hand -----------------------------------------------------


def test_a_dry_run_counts_what_the_real_run_then_writes(database_url: str, run_cli: RunCli) -> None:
    data = Checkins(database_url)
    edited, kept, gone = new_id(), new_id(), new_id()
    edits = data.add_many(coffees(edited, 3) + coffees(kept, 3, start=5) + [checkin(gone, AS_OF - days(2))])
    run_once(run_cli, database_url, as_of=AS_OF)

    newcomer = new_id()
    data.add_many(coffees(newcomer, 3))  # general and coffee montages, 3 items each
    data.edit(edits[0]["id"], tags=["tea"])  # coffee stops qualifying; the general montage shows the tea
    data.edit(edits[-1]["id"], deleted_at=AS_OF - days(1))  # `gone` has nothing left to show
    before = everything(database_url)

    dry = run_once(run_cli, database_url, "--dry-run", as_of=AS_OF).log("Batch job completed")
    # newcomer: 2 montages of 3 items; edited: its general montage again (3 items), its coffee
    # removed; gone: its general montage removed. `kept` is no candidate, or unchanged.
    assert dry_counts(dry) == (3, 2, 9, 3)
    assert (dry["montages_written"], dry["montages_removed"], dry["items_written"]) == (0, 0, 0)
    assert everything(database_url) == before, "the dry run wrote something"

    real = run_once(run_cli, database_url, as_of=AS_OF)
    assert real_counts(real.log("Batch job completed")) == (3, 2, 9, 3)
    assert written_by(database_url, job_id_of(real)) == (3, 9, 3)
    assert_matches_recompute(database_url, data.all(), AS_OF)


def test_a_real_run_reports_no_would_counts(duckdb_url: str, run_cli: RunCli) -> None:
    Checkins(duckdb_url).add_many(coffees(new_id(), 3))
    done = run_once(run_cli, duckdb_url, as_of=AS_OF).log("Batch job completed")
    assert real_counts(done) == (2, 0, 6, 1)
    assert not set(DRY_COUNTS[:3]) & set(done), "a real run reports what it did, not what it would do"


# -- generated data with every kind of change --------------------------------------------------------


@dataclass
class Population:
    """Synthetic users after a first run, then changed in every way the job must notice."""

    data: Checkins

    @classmethod
    def stored(cls, url: str, run_cli: RunCli) -> Population:
        population = cls(Checkins(url))
        population.data.put(synthetic_rows(users=40, seed=12))
        population.data.clock = max(population.data.clock, population.data.latest_update())
        run_once(run_cli, url, as_of=AS_OF)
        return population

    def change(self) -> None:
        """New users; edited tags, privacy, soft and hard deletes of others' check-ins."""
        data = self.data
        data.add_many(synthetic_rows(users=8, seed=99) + coffees(new_id(), 4) + coffees(new_id(), 2))  # new users
        rows = sorted(data.all(), key=lambda row: row["id"])
        edits: dict[str, dict[str, Any]] = {}
        for n, row in enumerate(rows[:60]):
            edits[row["id"]] = [{"tags": ["museum", "Art"]}, {"tags": []}, {"privacy": "private"},
                                {"deleted_at": AS_OF - days(1)}][n % 4]  # fmt: skip
        data.edit_many(edits)
        for row in rows[60:70]:
            execute(data.url, f"DELETE FROM checkins WHERE id = '{row['id']}'")
            del data.rows[row["id"]]


def test_dry_run_counts_equal_the_next_real_runs_on_generated_data(database_url: str, run_cli: RunCli) -> None:
    population = Population.stored(database_url, run_cli)
    population.change()
    url = database_url
    before, ids_before = everything(url), montage_id_set(url)

    dry = run_once(run_cli, url, "--dry-run", as_of=LATER).log("Batch job completed")
    assert everything(url) == before, "the dry run wrote something"
    assert all(count > 0 for count in dry_counts(dry)), f"a scenario that changes every kind of thing: {dry}"

    real = run_once(run_cli, url, as_of=LATER)
    done = real.log("Batch job completed")
    assert real_counts(done) == dry_counts(dry)
    assert (done["processed"], done["errors"]) == (dry["processed"], dry["errors"])
    montages, items, users = written_by(url, job_id_of(real))
    assert (montages, items, users) == (done["montages_written"], done["items_written"], done["users_changed"])
    assert len(ids_before - montage_id_set(url)) == done["montages_removed"]
    assert_matches_recompute(url, population.data.all(), LATER)

    # Nothing left to change: dry runs now report zeros, incremental and full alike.
    settled = everything(url)
    again = run_once(run_cli, url, "--dry-run", as_of=LATER).log("Batch job completed")
    assert dry_counts(again) == (0, 0, 0, 0)
    full = run_once(run_cli, url, "--dry-run", "--full", as_of=LATER).log("Batch job completed")
    assert dry_counts(full) == (0, 0, 0, 0)
    assert full["processed"] >= len({row["user_id"] for row in population.data.all()}), "every user was compared"
    assert everything(url) == settled


# -- the dry run's own guarantees -----------------------------------------------------------------------


def dry_run_in_process(url: str, as_of: datetime, *, read_only: bool, **overrides: Any) -> RunSummary:
    """A full dry run through `run_job`, on a store opened read-only if asked."""
    configured = load_settings(database_url=url, **overrides)
    with open_store(configured.database(), read_only=read_only) as store:
        return run_job(store, configured, RunOptions(full=True, dry_run=True, as_of=as_of))


def file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_dry_run_works_on_a_duckdb_file_opened_read_only(duckdb_url: str, run_cli: RunCli) -> None:
    population = Population.stored(duckdb_url, run_cli)
    population.change()
    path = duckdb_path(duckdb_url)
    digest = file_digest(path)

    summary = dry_run_in_process(duckdb_url, LATER, read_only=True, montage_batch_size=7)
    fields = summary.fields()
    assert summary.status == "completed", fields
    assert summary.chunks > 1 and all(count > 0 for count in dry_counts(fields)), fields
    assert file_digest(path) == digest, "the read-only dry run changed the file"

    real = run_once(run_cli, duckdb_url, "--full", as_of=LATER).log("Batch job completed")
    assert real_counts(real) == dry_counts(fields)


JOB_TABLES_LOCKED = """
LOCK TABLE montages, montage_items, montage_events, montage_retry_users, montage_job_runs,
           montage_job_watermarks, montage_job_leases IN EXCLUSIVE MODE
"""


@pytest.mark.postgres
def test_a_postgresql_dry_run_takes_no_row_lock_and_writes_no_job_table(postgres_url: str, run_cli: RunCli) -> None:
    """EXCLUSIVE mode lets plain reads through and stops every row lock and write: the dry run
    completes under it, the real run waits (and, with a lock_timeout, fails)."""
    population = Population.stored(postgres_url, run_cli)
    population.change()
    before = everything(postgres_url)
    no_waiting = {"PGOPTIONS": "-c lock_timeout=2s", "CHUNK_RETRY_ATTEMPTS": "0", "DB_RECONNECT_TIMEOUT": "1s"}
    holder = pg.connect(postgres_url, autocommit=False)
    try:
        with holder.cursor() as cursor:
            cursor.execute(JOB_TABLES_LOCKED)
        dry = run_once(run_cli, postgres_url, "--dry-run", as_of=LATER, env=no_waiting).log("Batch job completed")
        assert all(count > 0 for count in dry_counts(dry)), dry
        real = run_cli("once", "--as-of", LATER.isoformat(), env={"DATABASE_URL": postgres_url, **no_waiting})
        assert real.exit_code != 0, "the lock did not stop the real run: the test proves nothing"
        assert "lock timeout" in real.stdout + real.stderr, real.everything()
    finally:
        holder.rollback()
        holder.close()
    assert everything(postgres_url) == before
    done = run_once(run_cli, postgres_url, as_of=LATER).log("Batch job completed")
    assert real_counts(done) == dry_counts(dry)


# -- a property over random edits -----------------------------------------------------------------------

USERS = [f"{n + 1:08x}-0000-4000-8000-000000000000" for n in range(4)]
TAGS = ("coffee", "Coffee ", "tea", "hiking")
edit = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, len(USERS) - 1), st.integers(0, 40), st.sampled_from(TAGS)),
    st.tuples(st.just("tags"), st.integers(0, 1000), st.lists(st.sampled_from(TAGS), max_size=2)),
    st.tuples(st.just("delete"), st.integers(0, 1000)),
    st.tuples(st.just("hard_delete"), st.integers(0, 1000)),
    st.tuples(st.just("privacy"), st.integers(0, 1000), st.sampled_from(["public", "friends", "private"])),
)
rounds = st.lists(st.tuples(st.lists(edit, min_size=1, max_size=5), st.sampled_from([0, 1, 10, 29])), max_size=3)


def apply(data: Checkins, operation: tuple[Any, ...]) -> None:
    kind, *arguments = operation
    if kind == "insert":
        user, days_back, tag = arguments
        data.add(USERS[user], AS_OF - days(days_back), tags=[tag])
        return
    rows = sorted(data.all(), key=lambda row: row["id"])
    if not rows:
        return
    row = rows[arguments[0] % len(rows)]
    if kind == "tags":
        data.edit(row["id"], tags=arguments[1])
    elif kind == "delete":
        data.edit(row["id"], deleted_at=AS_OF - days(1))
    elif kind == "privacy":
        data.edit(row["id"], privacy=arguments[1])
    else:
        execute(data.url, f"DELETE FROM checkins WHERE id = '{row['id']}'")
        del data.rows[row["id"]]


@settings(
    max_examples=8,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),  # each step runs the job: no shrinking
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(initial=st.lists(edit, min_size=3, max_size=8), steps=rounds)
def test_any_edits_a_dry_run_counts_are_the_real_runs(
    tmp_path_factory: pytest.TempPathFactory, initial: list[tuple[Any, ...]], steps: list[tuple[Any, int]]
) -> None:
    url = f"duckdb:///{tmp_path_factory.mktemp('dry') / 'montage.duckdb'}"
    data = Checkins(url)
    data.add_many(coffees(USERS[0], 3))
    for operation in initial:
        apply(data, operation)
    as_of = AS_OF
    for operations, advance in [([], 0), *steps]:
        for operation in operations:
            apply(data, operation)
        as_of += timedelta(days=advance)
        dry = dry_run_in_process(url, as_of, read_only=True)
        configured = load_settings(database_url=url)
        with open_store(configured.database()) as store:
            real = run_job(store, configured, RunOptions(full=True, as_of=as_of))
        assert (dry.status, real.status) == ("completed", "completed")
        assert dry_counts(dry.fields()) == real_counts(real.fields())
        assert dry_counts(dry_run_in_process(url, as_of, read_only=True).fields()) == (0, 0, 0, 0)
