"""DuckDB's writes on tables without keys (sql/duckdb/008, stores/backends/duckdb_sql.py).

Without ON CONFLICT, the DuckDB statements must still keep the contract the keys kept: a
re-run writes nothing new, a changed montage is updated in place (same id, one row per key),
an event already in the outbox is not written again (in a chunk and for a run's own events),
and the rows end up exactly as PostgreSQL's ON CONFLICT statements leave them.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest

from montage_vec.stores import SqlSession, migrations
from montage_vec.stores.backends.duckdb import DuckDBBackend
from tests.support.chunks import chunk_of, session_for
from tests.support.data import AS_OF

COFFEE = "00000000-0000-4000-8000-00000000c0ff"
PLAIN = "00000000-0000-4000-8000-0000000000aa"
MONTAGES = 'SELECT "id"::VARCHAR, "user_id"::VARCHAR, "kind", "interest", "item_count", "job_id" FROM {montages}'
ITEMS = 'SELECT "montage_id"::VARCHAR, "position", "checkin_id"::VARCHAR, "widget_type" FROM {montage_items}'
EVENTS = (
    'SELECT "id"::VARCHAR, "type", "aggregate_id", "job_id", "occurred_at", "payload"::VARCHAR FROM {montage_events}'
)


def rows(session: SqlSession, sql: str) -> list[tuple[Any, ...]]:
    with session.unit():
        found = session.run(sql)
    # JSON as values: DuckDB and PostgreSQL spell the same object differently.
    decoded = [tuple(json.loads(v) if isinstance(v, str) and v.startswith("{") else v for v in row) for row in found]
    return sorted(decoded, key=repr)


def contents(session: SqlSession) -> dict[str, list[tuple[Any, ...]]]:
    return {"montages": rows(session, MONTAGES), "items": rows(session, ITEMS), "events": rows(session, EVENTS)}


def keys_and_indexes(session: SqlSession) -> list[tuple[Any, ...]]:
    """The ART indexes (keys and plain indexes) on the tables a run writes."""
    with session.unit():
        return session.run(
            "SELECT table_name, constraint_type FROM duckdb_constraints() "
            "WHERE table_name IN ('montages', 'montage_items', 'montage_events') "
            "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE') "
            "UNION ALL SELECT table_name, index_name FROM duckdb_indexes() "
            "WHERE table_name IN ('montages', 'montage_items', 'montage_events')"
        )


def items_without_their_user(session: SqlSession) -> int:
    """Items whose user_id is not their montage's, or that have no montage."""
    with session.unit():
        [(count,)] = session.run(
            'SELECT count(*) FROM {montage_items} i LEFT JOIN {montages} m ON m."id" = i."montage_id" '
            'WHERE m."id" IS NULL OR i."user_id" IS DISTINCT FROM m."user_id"'
        )
    return int(count)


def record_job_event(session: SqlSession, job_id: str) -> None:
    with session.unit(write=True):
        session.run(session.dialect.record_job_event, ["montage.batch_job.started", job_id, AS_OF, '{"n": 1}'])


# The writes of a scenario, in order: (chunk, what its write reports as (montages written,
# montages removed, items written, users changed)).
SCENARIO = (
    (chunk_of({COFFEE: ["coffee"] * 3, PLAIN: [""] * 3}, "job-1"), (3, 0, 9, 2)),
    # A re-run by another job over the same data: nothing to write.
    (chunk_of({COFFEE: ["coffee"] * 3, PLAIN: [""] * 3}, "job-2"), (0, 0, 0, 0)),
    # COFFEE's general montage changes (updated) and its coffee interest goes (removed).
    (chunk_of({COFFEE: ["coffee", "tea", "coffee"], PLAIN: [""] * 3}, "job-3"), (1, 1, 3, 1)),
    # The same job writes COFFEE back: its general montage's generated event and COFFEE's
    # invalidation under job-3 are in the outbox already, the interest's generated event is new.
    (chunk_of({COFFEE: ["coffee"] * 3, PLAIN: [""] * 3}, "job-3"), (2, 0, 6, 1)),
)


def run_scenario(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with session_for(url) as session:
        session.migrate()
        for chunk, expected in SCENARIO:
            outcome = session.write_chunk(chunk)
            assert (outcome.montages_written, outcome.montages_removed, outcome.items_written) == expected[:3]
            assert outcome.users_changed == expected[3]
        record_job_event(session, "job-3")
        record_job_event(session, "job-3")
        return contents(session)


def test_a_rerun_writes_nothing_new(duckdb_url: str) -> None:
    chunk = SCENARIO[0][0]
    with session_for(duckdb_url) as session:
        session.migrate()
        session.write_chunk(chunk)
        before = contents(session)
        again = session.write_chunk(chunk)
        assert (again.montages_written, again.items_written, again.users_changed) == (0, 0, 0)
        assert contents(session) == before


def test_a_changed_montage_is_updated_not_duplicated(duckdb_url: str) -> None:
    with session_for(duckdb_url) as session:
        session.migrate()
        session.write_chunk(chunk_of({PLAIN: [""] * 3}, "job-1"))
        [(first_id, *_)] = rows(session, MONTAGES)
        session.write_chunk(chunk_of({PLAIN: [""] * 5}, "job-2"))

        assert rows(session, MONTAGES) == [(first_id, PLAIN, "general", "", 5, "job-2")]
        items = rows(session, ITEMS)
        assert [(montage, position) for montage, position, *_ in items] == [(first_id, n) for n in range(5)]


def test_events_already_in_the_outbox_are_not_written_again(duckdb_url: str) -> None:
    contents_after = run_scenario(duckdb_url)
    events = contents_after["events"]
    ids = [event[0] for event in events]
    assert len(ids) == len(set(ids)), "an event id was written twice"
    # job-1: 3 generated + 2 invalidated; job-3: 1 + 1 from its first write, 1 more generated
    # from its second (the coffee interest's); one job event.
    assert len(events) == 5 + 2 + 1 + 1
    assert [event[1:4] for event in events if event[1] == "montage.batch_job.started"] == [
        ("montage.batch_job.started", "job-3", "job-3")
    ]


def test_items_carry_their_montages_user(duckdb_url: str) -> None:
    """The user_id the chunk statements prune montage_items by (DuckDB only)."""
    run_scenario(duckdb_url)
    with session_for(duckdb_url) as session:
        assert items_without_their_user(session) == 0


@pytest.mark.postgres
def test_duckdb_leaves_the_rows_postgresql_leaves(duckdb_url: str, postgres_url: str) -> None:
    """The same writes on both backends: DuckDB's statements without keys write what
    PostgreSQL's ON CONFLICT statements do, row for row (ids, counts, jobs, every event)."""
    duck = run_scenario(duckdb_url)
    postgres = run_scenario(postgres_url)
    assert duck == postgres
    assert duck["montages"] and duck["items"] and duck["events"]


def test_keyed_tables_are_gone_on_duckdb(duckdb_url: str) -> None:
    """No ART index is left on the tables a run writes (DuckDB holds them whole in memory)."""
    with session_for(duckdb_url) as session:
        session.migrate()
        assert keys_and_indexes(session) == []


def test_migration_008_keeps_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file with keys (migrated before 008) keeps its montages, items and events, row for row;
    its items get their montage's user, the keys go, and the next write keeps the contract."""
    written, before_008 = f"duckdb:///{tmp_path}/written.duckdb", f"duckdb:///{tmp_path}/before_008.duckdb"
    with session_for(written) as session:  # the rows of the scenario's first three writes
        session.migrate()
        for chunk, _ in SCENARIO[:3]:
            session.write_chunk(chunk)
        record_job_event(session, "job-3")
        before = contents(session)
    assert before["montages"] and before["items"] and before["events"]

    original = migrations.sql_directory("duckdb")
    shutil.copytree(original.parent, tmp_path / "sql")
    (tmp_path / "sql" / "duckdb" / "008_unkeyed_montages.sql").unlink()
    monkeypatch.setattr(migrations, "_CHECKOUT_SQL", tmp_path / "sql")
    with session_for(before_008) as session:
        assert "008_unkeyed_montages" not in session.migrate()
        assert len(keys_and_indexes(session)) == 3, "the tables before 008 have their keys"
    # The same rows, copied by DuckDB itself (the statements of this version need 008's columns).
    with duckdb.connect(f"{tmp_path}/before_008.duckdb") as connection:
        connection.execute(f"ATTACH '{tmp_path}/written.duckdb' AS written (READ_ONLY)")
        connection.execute("INSERT INTO montages SELECT * FROM written.montages")
        connection.execute("INSERT INTO montage_items SELECT * EXCLUDE (user_id) FROM written.montage_items")
        connection.execute("INSERT INTO montage_events SELECT * FROM written.montage_events")

    monkeypatch.setattr(migrations, "_CHECKOUT_SQL", original.parent)
    with session_for(before_008) as session:
        assert contents(session) == before
        assert session.migrate() == ["008_unkeyed_montages"]
        session.ensure_migrated()
        assert contents(session) == before
        assert keys_and_indexes(session) == []
        assert items_without_their_user(session) == 0
        # The scenario's last write, on the migrated file: as on a file made after 008.
        chunk, expected = SCENARIO[3]
        outcome = session.write_chunk(chunk)
        assert (outcome.montages_written, outcome.montages_removed, outcome.items_written) == expected[:3]
        record_job_event(session, "job-3")
        after = contents(session)
    assert after == run_scenario(f"duckdb:///{tmp_path}/fresh.duckdb")


def test_writers_of_one_file_take_turns_across_backends(tmp_path: Path) -> None:
    """The scheduler opens a backend per run and per realtime regeneration: without keys, two
    write transactions on the file at once could each insert the same new montage, so a write
    on one backend waits for the other backend's write to end."""
    path = str(tmp_path / "shared.duckdb")
    first, second = DuckDBBackend(path), DuckDBBackend(path)
    holder, waiter = first.connect(), second.connect()
    entered = threading.Event()

    def write_on_second() -> None:
        with waiter.transaction(write=True):
            entered.set()

    try:
        with holder.transaction(write=True):
            thread = threading.Thread(target=write_on_second)
            thread.start()
            assert not entered.wait(0.5), "a second writer of the file got in while the first was writing"
        assert entered.wait(10), "the second writer never got in after the first committed"
        thread.join(10)
    finally:
        holder.close()
        waiter.close()
        first.close()
        second.close()
