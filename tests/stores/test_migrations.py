"""Tracked migrations against real databases (DuckDB file and PostgreSQL), no mocks.

Covers: a fresh database migrated in order and recorded; a second `migrate` that applies
nothing; `ensure_migrated` on a database that is set up, not set up, or one file behind;
an applied file edited afterwards; a database migrated by a newer montage-vec; a database
set up by the pre-tracking code (DDL files run directly) adopted with its data; and two
concurrent `migrate` calls on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import duckdb
import pytest

from montage_vec.config import load_settings
from montage_vec.errors import MigrationError, SchemaNotMigratedError
from montage_vec.stores import SqlSession, open_store
from montage_vec.stores import migrations as migrations_module
from montage_vec.stores.setup import OWN_SOURCE_STEP

EXTRA_MIGRATION = "099_x"
EXTRA_TABLE = "montage_extra"
CHECKIN_ID = "0b7c1d7e-3a39-4f0e-9a52-5f0c8a1b2c3d"
USER_ID = "6f9d6a52-2c1e-4f7b-8d0e-1a2b3c4d5e6f"

Record = tuple[int, str, str]


# -- plumbing -------------------------------------------------------------------------------


def backend_of(url: str) -> str:
    return "duckdb" if url.startswith("duckdb:") else "postgresql"


@contextmanager
def session(url: str) -> Iterator[SqlSession]:
    """A session on a store of its own; both closed afterwards, so `raw` can open the file."""
    with open_store(load_settings(database_url=url).database()) as store, store.session() as opened:
        yield opened


def raw(url: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements through the driver itself (no montage-vec code), committed; the last one's rows."""
    rows: list[tuple[Any, ...]] = []
    if url.startswith("duckdb:"):
        with duckdb.connect(url[len("duckdb:///") :]) as connection:
            for statement in statements:
                rows = connection.execute(statement).fetchall()
        return rows
    with pg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
            rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    return rows


def recorded(url: str) -> list[Record]:
    """The migrations table's (version, name, checksum) rows, in version order."""
    rows = raw(url, f'SELECT "version", "name", "checksum" FROM "{migrations_module.MIGRATIONS_TABLE}" ORDER BY 1')
    return [(int(version), str(name), str(checksum)) for version, name, checksum in rows]


def table_exists(url: str, table: str) -> bool:
    [(found,)] = raw(url, f"SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'")
    return int(found) == 1


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.glob("[0-9][0-9][0-9]_*.sql"))


def expected_records(folder: Path) -> list[Record]:
    """What the migrations table should hold for these files: checksums computed here, from the bytes."""
    return [
        (int(path.name[:3]), path.stem, hashlib.sha256(path.read_text().replace("\r\n", "\n").encode()).hexdigest())
        for path in files_of(folder)
    ]


def ddl_statements(path: Path) -> list[str]:
    """A DDL file's statements (dollar-quoted function bodies kept whole)."""
    return migrations_module.split_statements(path.read_text())


def use_sql_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> Path:
    """Point the package at a copy of its sql folder; the copy's folder for `backend`."""
    original = migrations_module.sql_directory(backend)
    root = tmp_path / "sql-copy"
    shutil.copytree(original.parent, root)
    monkeypatch.setattr(migrations_module, "_CHECKOUT_SQL", root)
    assert migrations_module.sql_directory(backend) == root / backend
    return root / backend


def add_extra_migration(folder: Path) -> None:
    (folder / f"{EXTRA_MIGRATION}.sql").write_text(
        f'-- A later schema change.\nCREATE TABLE "{EXTRA_TABLE}" ("id" INTEGER);\n'
    )


# -- a fresh database -------------------------------------------------------------------------


def test_fresh_database_gets_every_migration_in_order_and_recorded(database_url: str) -> None:
    """migrate applies all files in version order and records version, name and checksum of each."""
    folder = migrations_module.sql_directory(backend_of(database_url))
    names = [path.stem for path in files_of(folder)]
    assert names[:4] == ["001_checkins", "002_montages", "003_job_state", "004_events"]

    with session(database_url) as opened:
        applied = opened.migrate()

    # Then the job's own check-ins table, since no relation of the source's name existed.
    assert applied == [*names, OWN_SOURCE_STEP]
    assert recorded(database_url) == expected_records(folder)
    [(stamped,)] = raw(database_url, 'SELECT count("applied_at") FROM "montage_schema_migrations"')
    assert stamped == len(names)
    for table in ("checkins", "montages", "montage_items", "montage_job_runs", "montage_events"):
        assert table_exists(database_url, table), table


def test_second_migrate_applies_nothing(database_url: str) -> None:
    """Re-running migrate on an up-to-date database changes nothing, not even applied_at."""
    with session(database_url) as opened:
        assert opened.migrate()
    before = raw(database_url, 'SELECT * FROM "montage_schema_migrations" ORDER BY 1')

    with session(database_url) as opened:
        assert opened.migrate() == []
        opened.ensure_migrated()

    assert raw(database_url, 'SELECT * FROM "montage_schema_migrations" ORDER BY 1') == before


def test_ensure_migrated_passes_on_a_migrated_database(database_url: str) -> None:
    """The check the job runs before work accepts a database at the package's latest migration."""
    with session(database_url) as opened:
        opened.migrate()
    with session(database_url) as opened:
        opened.ensure_migrated()  # no exception
        opened.ping()


def test_ensure_migrated_on_a_database_without_the_migrations_table(database_url: str) -> None:
    """A database never migrated: ensure_migrated says the tables are not set up and to run migrate."""
    with session(database_url) as opened, pytest.raises(SchemaNotMigratedError) as raised:
        opened.ensure_migrated()

    message = str(raised.value)
    assert "not set up" in message
    assert "montage-vec migrate" in message
    assert not table_exists(database_url, "montage_schema_migrations"), "the check must not create anything"


# -- the files change after a migrate --------------------------------------------------------


def test_pending_migration_is_named_and_applied_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file after a migrate: ensure_migrated names it as pending; migrate applies only it."""
    with session(database_url) as opened:
        opened.migrate()
    before = recorded(database_url)
    folder = use_sql_copy(tmp_path, monkeypatch, backend_of(database_url))
    add_extra_migration(folder)

    with session(database_url) as opened, pytest.raises(SchemaNotMigratedError) as raised:
        opened.ensure_migrated()
    assert "1 migration(s) pending" in str(raised.value)
    assert EXTRA_MIGRATION in str(raised.value)
    assert "002_montages" not in str(raised.value)

    with session(database_url) as opened:
        assert opened.migrate() == [EXTRA_MIGRATION]
        opened.ensure_migrated()

    assert recorded(database_url) == expected_records(folder)
    assert recorded(database_url)[:-1] == before
    assert recorded(database_url)[-1][:2] == (99, EXTRA_MIGRATION)
    assert table_exists(database_url, EXTRA_TABLE)


def test_edited_applied_migration_is_refused(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An applied file whose text changed: migrate raises MigrationError naming it and applies nothing new."""
    with session(database_url) as opened:
        opened.migrate()
    before = recorded(database_url)
    folder = use_sql_copy(tmp_path, monkeypatch, backend_of(database_url))
    edited = folder / "002_montages.sql"
    edited.write_text(
        edited.read_text() + '\nCREATE INDEX IF NOT EXISTS "montages_job_idx" ON "montages" ("job_id");\n'
    )
    add_extra_migration(folder)

    with session(database_url) as opened:
        with pytest.raises(MigrationError) as raised:
            opened.migrate()
        with pytest.raises(MigrationError):
            opened.ensure_migrated()

    assert "002_montages" in str(raised.value)
    assert "changed" in str(raised.value)
    assert recorded(database_url) == before
    assert not table_exists(database_url, EXTRA_TABLE), "a later migration must not run past an edited one"


def test_database_migrated_by_a_newer_version_is_refused(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An applied migration this package does not have: migrate and ensure_migrated raise MigrationError."""
    original = migrations_module._CHECKOUT_SQL
    add_extra_migration(use_sql_copy(tmp_path, monkeypatch, backend_of(database_url)))
    with session(database_url) as opened:
        opened.migrate()
    monkeypatch.setattr(migrations_module, "_CHECKOUT_SQL", original)
    before = recorded(database_url)
    assert len(before) == len(migrations_module.package_migrations(backend_of(database_url))) + 1

    with session(database_url) as opened:
        with pytest.raises(MigrationError) as raised:
            opened.migrate()
        with pytest.raises(MigrationError):
            opened.ensure_migrated()

    assert EXTRA_MIGRATION in str(raised.value)
    assert "newer" in str(raised.value)
    assert recorded(database_url) == before


# -- adopting a database set up before migrations were tracked --------------------------------


def test_database_set_up_by_pre_tracking_code_is_adopted(database_url: str) -> None:
    """Tables created by running the DDL files directly (no migrations table): migrate records every
    file without complaint, and the rows already in those tables survive."""
    folder = migrations_module.sql_directory(backend_of(database_url))
    # Before 0.9, migration 001 created the check-ins table; the job's own table looks the same.
    own_checkins = migrations_module.source_ddl(backend_of(database_url), "own_checkins")
    raw(database_url, *(statement.replace("{checkins}", '"checkins"') for statement in own_checkins))
    raw(database_url, *(statement for path in files_of(folder) for statement in ddl_statements(path)))
    raw(
        database_url,
        f"""INSERT INTO "checkins" ("id", "user_id", "created_at", "updated_at", "tags")
        VALUES ('{CHECKIN_ID}', '{USER_ID}', TIMESTAMPTZ '2025-12-01 10:00:00+00',
                TIMESTAMPTZ '2025-12-01 10:00:00+00', ARRAY['coffee'])""",
        """INSERT INTO "montage_job_runs" ("job_id", "shard", "mode", "as_of", "started_at", "status")
        VALUES ('old-run', '0/1', 'full', TIMESTAMPTZ '2025-12-02 00:00:00+00',
                TIMESTAMPTZ '2025-12-02 00:00:00+00', 'completed')""",
    )
    assert not table_exists(database_url, "montage_schema_migrations")

    with session(database_url) as opened:
        with pytest.raises(SchemaNotMigratedError):
            opened.ensure_migrated()
        applied = opened.migrate()
        opened.ensure_migrated()

    assert applied == [path.stem for path in files_of(folder)]
    assert recorded(database_url) == expected_records(folder)
    assert raw(database_url, 'SELECT "id"::VARCHAR, "user_id"::VARCHAR, "tags" FROM "checkins"') == [
        (CHECKIN_ID, USER_ID, ["coffee"])
    ]
    assert raw(database_url, 'SELECT "job_id", "status" FROM "montage_job_runs"') == [("old-run", "completed")]


# -- concurrency (PostgreSQL: several job pods may start at once) ------------------------------


@pytest.mark.postgres
def test_concurrent_migrates_both_succeed_and_record_each_migration_once(postgres_url: str) -> None:
    """Two threads call migrate on a fresh database at the same moment: neither fails, and between
    them every migration is applied exactly once."""
    names = [path.stem for path in files_of(migrations_module.sql_directory("postgresql"))]
    start = threading.Barrier(2, timeout=30)
    outcomes: dict[int, list[str] | BaseException] = {}

    with open_store(load_settings(database_url=postgres_url).database()) as store:

        def migrate(index: int) -> None:
            try:
                with store.session() as opened:
                    start.wait()
                    outcomes[index] = opened.migrate()
            except BaseException as exc:
                outcomes[index] = exc

        threads = [threading.Thread(target=migrate, args=(index,), daemon=True) for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)  # hang guard only
        assert not any(thread.is_alive() for thread in threads), "a migrate did not finish"

    failures = {index: outcome for index, outcome in outcomes.items() if isinstance(outcome, BaseException)}
    assert not failures, failures
    applied = [name for outcome in outcomes.values() if isinstance(outcome, list) for name in outcome]
    assert sorted(applied) == sorted([*names, OWN_SOURCE_STEP]), outcomes
    assert len(applied) == len(set(applied)), outcomes
    assert recorded(postgres_url) == expected_records(migrations_module.sql_directory("postgresql"))


def test_database_that_applied_the_old_001_is_accepted(database_url: str) -> None:
    """Migration 001 created the check-ins table until 0.9 and is now empty: a database that
    recorded the old text's checksum is migrated, and a third text still is not."""
    backend = backend_of(database_url)
    with session(database_url) as opened:
        opened.migrate()
    old = migrations_module.SUPERSEDED_CHECKSUMS[(backend, 1)]
    raw(database_url, f'UPDATE "montage_schema_migrations" SET "checksum" = \'{old}\' WHERE "version" = 1')

    with session(database_url) as opened:
        opened.ensure_migrated()
        assert opened.migrate() == []

    raw(database_url, 'UPDATE "montage_schema_migrations" SET "checksum" = \'other\' WHERE "version" = 1')
    with session(database_url) as opened, pytest.raises(MigrationError, match="001_checkins"):
        opened.ensure_migrated()
