"""`SqlSession.diff_chunk`: what `write_chunk` would change, by the same detection, on DuckDB
and PostgreSQL (issue 12, dry runs).

A diff counts what the write then reports (montages written and removed, the items inserted,
the users touched), checks no lease (a dry run holds none), and leaves nothing behind: not a
row, not a TEMP table, not a staged relation, and the temporary work tables of an earlier
write on the same session are still there.
"""

from __future__ import annotations

from dataclasses import asdict

from montage_vec.stores import SqlSession
from montage_vec.stores.records import ChunkDiff, Lease
from tests.support.chunks import chunk_of, session_for
from tests.support.data import new_id

# The session's own TEMP tables, however the backend lists them.
OWN_TEMP_TABLES = {
    "duckdb": "SELECT table_name FROM duckdb_tables() WHERE temporary ORDER BY 1",
    "postgresql": "SELECT relname::TEXT FROM pg_class WHERE relnamespace = pg_my_temp_schema() AND relkind = 'r' "
    "ORDER BY 1",
}
STAGED = ("stage_users", "stage_montages", "stage_items")
WRITTEN = ("montages", "montage_items", "montage_events", "montage_retry_users")


def temp_tables(session: SqlSession) -> list[str]:
    with session.unit():
        return [name for (name,) in session.connection.execute(OWN_TEMP_TABLES[session.dialect.name])]


def stored(session: SqlSession) -> dict[str, list[str]]:
    """The rows of the tables a chunk write touches, read on the session itself (DuckDB lets
    no other connection open the file meanwhile)."""
    with session.unit():
        return {table: sorted(map(repr, session.run(f"SELECT * FROM {{{table}}}"))) for table in WRITTEN}


def counts_of(outcome: ChunkDiff) -> ChunkDiff:
    """The diff part of a WriteOutcome."""
    return ChunkDiff(**{name: value for name, value in asdict(outcome).items() if name != "changed_users"})


def test_a_diff_counts_what_the_write_then_does_and_leaves_nothing(database_url: str) -> None:
    coffee, plain = new_id(), new_id()
    with session_for(database_url) as session:
        session.migrate()
        first = chunk_of({coffee: ["coffee"] * 3, plain: [""] * 3})
        diff = session.diff_chunk(first)
        assert diff == ChunkDiff(montages_written=3, montages_removed=0, items_written=9, users_changed=2)
        assert temp_tables(session) == [], "the diff left TEMP tables"
        assert stored(session) == {table: [] for table in WRITTEN}, "the diff wrote rows"
        assert counts_of(session.write_chunk(first)) == diff

        # coffee loses its interest (one check-in now says tea) and its general montage changes;
        # plain is unchanged.
        second = chunk_of({coffee: ["coffee", "tea", "coffee"], plain: [""] * 3}, job_id="job-2")
        after_write = temp_tables(session)
        before = stored(session)
        diff = session.diff_chunk(second)
        assert diff == ChunkDiff(montages_written=1, montages_removed=1, items_written=3, users_changed=1)
        assert temp_tables(session) == after_write, "the diff changed the earlier write's work tables"
        assert stored(session) == before
        assert counts_of(session.write_chunk(second)) == diff
        assert session.diff_chunk(second) == ChunkDiff(0, 0, 0, 0), "written: nothing left to change"


def test_a_diff_checks_no_lease_and_stages_nothing_that_outlives_it(database_url: str) -> None:
    """A dry run takes no lease: a diff under a lease nobody holds still counts."""
    user = new_id()
    with session_for(database_url) as session:
        session.migrate()
        lost = Lease("0/1", token=41, job_id="job-gone")
        assert session.diff_chunk(chunk_of({user: ["coffee"] * 3}, lease=lost)).montages_written == 2
        with session.unit():
            for name in STAGED:
                assert not _relation_exists(session, name), f"{name} outlived the diff"


def _relation_exists(session: SqlSession, name: str) -> bool:
    if session.dialect.name == "duckdb":
        sql = f"SELECT count(*) FROM duckdb_views() WHERE view_name = '{name}'"
        views = session.connection.execute(sql)[0][0]
        tables = session.connection.execute(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{name}'")[0][0]
        return bool(views or tables)
    sql = f"SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema() AND relname = '{name}'"
    return bool(session.connection.execute(sql)[0][0])
