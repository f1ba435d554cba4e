"""Driver errors classified into StoreErrors, provoked for real on DuckDB and PostgreSQL (no mocks).

One section per FaultKind: data (a value that does not convert, a montage id already taken),
transient (a terminated PostgreSQL connection, a DuckDB write-write conflict), permission
(a role without privileges, a read-only PostgreSQL database, a read-only DuckDB file),
schema (a table or a column missing) and other (a syntax error). Each asserts the exact
StoreError subclass, that the message carries the database's own words, and where it
matters that the failed unit of work left nothing behind. One exception to "no mocks": a
write error without a SQLSTATE (the driver's failed COPY) is injected, since the job's own
extraction no longer lets a value provoke it; the connection it is judged on is real.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as pg
import duckdb
import polars as pl
import pytest

from montage_vec.config import load_settings
from montage_vec.engine import compute_montages
from montage_vec.errors import (
    DataStoreError,
    PermissionStoreError,
    SchemaStoreError,
    StoreError,
    TransientStoreError,
)
from montage_vec.stores import ChunkWrite, RunRecord, SqlSession, Store, open_store
from montage_vec.stores.faults import Fault, FaultKind, store_error
from tests.support.data import checkin, checkin_frame
from tests.support.database import admin_url

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
U1 = "6f9d6a52-2c1e-4f7b-8d0e-1a2b3c4d5e6f"
U2 = "0b7c1d7e-3a39-4f0e-9a52-5f0c8a1b2c3d"


# -- plumbing -------------------------------------------------------------------------------


def is_duckdb(url: str) -> bool:
    return url.startswith("duckdb:")


def store_for(url: str, read_only: bool = False) -> Store:
    return open_store(load_settings(database_url=url).database(), read_only=read_only)


@contextmanager
def session_for(url: str, read_only: bool = False) -> Iterator[SqlSession]:
    with store_for(url, read_only) as store, store.session() as session:
        yield session


def migrated(url: str) -> str:
    with session_for(url) as session:
        session.migrate()
    return url


def raw(url: str, sql: str) -> list[tuple[Any, ...]]:
    """A statement through the driver itself, committed (no store may hold a DuckDB file open)."""
    if is_duckdb(url):
        with duckdb.connect(url[len("duckdb:///") :]) as connection:
            return connection.execute(sql).fetchall()
    with pg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


def count(url: str, table: str) -> int:
    [(found,)] = raw(url, f'SELECT count(*) FROM "{table}"')
    return int(found)


def checkins(user_id: str, number: int, tags: list[str], **fields: Any) -> pl.DataFrame:
    """`number` daily check-ins of one user before AS_OF, newest first."""
    return checkin_frame(
        [
            checkin(user_id, AS_OF - timedelta(days=index + 1), tags=tags, text_content=f"check-in {index}", **fields)
            for index in range(number)
        ]
    )


def run_record(job_id: str = "job-1") -> RunRecord:
    return RunRecord(job_id, "0/1", "full", AS_OF, AS_OF)


def driver_error_fault(store: Store, sql: str) -> tuple[BaseException, Fault | None]:
    """Run `sql` on a raw backend connection; the driver's exception and the backend's reading of it."""
    connection = store._backend.connect()
    try:
        with connection.transaction(write=False):
            connection.execute(sql)
    except Exception as exc:
        return exc, connection.fault(exc)
    finally:
        connection.close()
    raise AssertionError(f"{sql!r} did not fail")


# -- the mapping itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error_class", "transient"),
    [
        (FaultKind.DATA, DataStoreError, False),
        (FaultKind.TRANSIENT, TransientStoreError, True),
        (FaultKind.PERMISSION, PermissionStoreError, False),
        (FaultKind.SCHEMA, SchemaStoreError, False),
        (FaultKind.OTHER, StoreError, False),
    ],
)
def test_each_fault_kind_has_its_store_error(kind: FaultKind, error_class: type[StoreError], transient: bool) -> None:
    """The class is exact (OTHER is the plain StoreError), the code and the database's words are kept."""
    error = store_error(Fault(kind, "the database's words", "XX123"))
    assert type(error) is error_class
    assert error.transient is transient
    assert "(XX123)" in str(error)
    assert str(error).endswith(": the database's words")


def test_errors_that_are_not_the_drivers_are_not_faults(database_url: str) -> None:
    """A bug in our own code must surface as itself, never disguised as a database error."""
    with store_for(database_url) as store:
        connection = store._backend.connect()
        try:
            assert connection.fault(ValueError("ours")) is None
            assert connection.fault(KeyError("ours")) is None
        finally:
            connection.close()


# -- data -----------------------------------------------------------------------------------


def test_value_that_does_not_convert_is_a_data_error(database_url: str) -> None:
    """A check-in id that is no uuid: DataStoreError naming the value; none of the batch is stored."""
    migrated(database_url)
    batch = pl.concat([checkins(U1, 2, ["coffee"]), checkins(U2, 1, [], id="not-a-uuid")])

    with session_for(database_url) as session:
        with pytest.raises(DataStoreError) as raised:
            session.load_checkins(batch)
        session.ping()  # the session is still usable after the rolled-back unit
        assert session.load_checkins(checkins(U2, 1, [])) == 1

    message = str(raised.value)
    assert "not-a-uuid" in message
    assert "uuid" in message.lower()
    if not is_duckdb(database_url):
        assert "(22P02)" in message
    assert raised.value.transient is False
    assert count(database_url, "checkins") == 1


def derived_montage_id(user_id: str, kind: str, interest: str) -> str:
    """The id chunk_sql gives a new montage: md5 of `user/kind/interest` as a uuid."""
    return str(uuid.UUID(hashlib.md5(f"{user_id}/{kind}/{interest}".encode()).hexdigest()))


def test_montage_id_taken_by_another_montage_is_a_data_error(database_url: str) -> None:
    """A stored montage of another user already holds the id U1's general montage derives:
    write_chunk hits the primary key, raises DataStoreError, and writes nothing of the chunk."""
    migrated(database_url)
    computed = compute_montages(checkins(U1, 4, ["coffee"]).drop("updated_at"), AS_OF)
    assert "" in computed.montages.filter(pl.col("kind") == "general")["interest"].to_list()
    chunk = ChunkWrite(
        job_id="job-1",
        generated_at=AS_OF,
        cache_ttl=timedelta(hours=1),
        user_ids=pl.Series([U1]),
        montages=computed.montages,
        items=computed.items,
    )

    with store_for(database_url) as store:
        connection = store._backend.connect()
        try:
            with connection.transaction(write=True):
                connection.execute(
                    """INSERT INTO "montages" ("id", "user_id", "kind", "interest", "item_count", "generated_at",
                                               "cache_expires_at", "job_id")
                    VALUES ($1::UUID, $2::UUID, 'general', '', 1, $3, $3, 'squatter')""",
                    [derived_montage_id(U1, "general", ""), U2, AS_OF],
                )
        finally:
            connection.close()
        with store.session() as session:
            with pytest.raises(DataStoreError) as raised:
                session.write_chunk(chunk)
            session.ping()

    message = str(raised.value).lower()
    assert "duplicate" in message
    assert "key" in message
    if not is_duckdb(database_url):
        assert "(23505)" in message
        assert "montages_pkey" in message
    assert raw(database_url, 'SELECT "job_id" FROM "montages"') == [("squatter",)]
    assert count(database_url, "montage_items") == 0
    assert count(database_url, "montage_events") == 0


# -- transient ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_terminated_postgres_connection_is_transient(postgres_url: str) -> None:
    """The session's server process is terminated by an admin: its next reads and writes raise
    TransientStoreError (the job retries on a new connection), and a new session works."""
    migrated(postgres_url)
    with store_for(postgres_url) as store:
        connection = store._backend.connect()
        with connection.transaction(write=False):
            [(pid,)] = connection.execute("SELECT pg_backend_pid()")
        with SqlSession(connection) as session:
            session.ping()
            # With a timeout the call returns once the process is gone, so the next use cannot race it.
            assert raw(postgres_url, f"SELECT pg_terminate_backend({int(pid)}, 30000)") == [(True,)]

            with pytest.raises(TransientStoreError) as on_read:
                session.ping()
            with pytest.raises(TransientStoreError) as on_write:
                session.record_run(run_record())

        with store.session() as fresh:
            fresh.record_run(run_record())

    for raised in (on_read, on_write):
        assert "connection" in str(raised.value).lower(), raised.value
    assert on_read.value.transient and on_write.value.transient
    assert count(postgres_url, "montage_job_runs") == 1


def test_duckdb_write_conflict_is_transient(duckdb_url: str) -> None:
    """Another cursor's open transaction updated the same row: the session's write conflicts,
    raises TransientStoreError, and succeeds once that transaction is gone."""
    migrated(duckdb_url)
    with store_for(duckdb_url) as store, store.session() as session:
        session.save_watermark("0/1", AS_OF, "job-1")
        other = store._backend.connect()
        try:
            other.execute("BEGIN TRANSACTION")
            other.execute('UPDATE "montage_job_watermarks" SET "job_id" = $1', ["other"])

            with pytest.raises(TransientStoreError) as raised:
                session.save_watermark("0/1", AS_OF + timedelta(hours=1), "job-2")

            other.execute("ROLLBACK")
        finally:
            other.close()
        session.save_watermark("0/1", AS_OF + timedelta(hours=1), "job-2")  # the retry succeeds
        assert session.read_watermark("0/1") == AS_OF + timedelta(hours=1)

    assert "conflict" in str(raised.value).lower()
    assert raised.value.transient is True


# -- permission -----------------------------------------------------------------------------


@pytest.fixture
def unprivileged_url(postgres_url: str) -> Iterator[str]:
    """A URL for a login role with no privileges on the test database's tables."""
    role = f"montage_noaccess_{uuid.uuid4().hex[:10]}"
    raw(admin_url(), f'CREATE ROLE "{role}" LOGIN')
    try:
        yield postgres_url.replace("postgresql://root@", f"postgresql://{role}@", 1)
    finally:
        raw(admin_url(), f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        raw(admin_url(), f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.postgres
def test_role_without_privileges_gets_permission_errors(postgres_url: str, unprivileged_url: str) -> None:
    """Writes and reads by a role lacking table privileges raise PermissionStoreError (exit 77)."""
    migrated(postgres_url)
    with session_for(postgres_url) as admin:
        admin.load_checkins(checkins(U1, 2, ["coffee"]))
    assert unprivileged_url != postgres_url

    with session_for(unprivileged_url) as session:
        with pytest.raises(PermissionStoreError) as on_write:
            session.record_run(run_record())
        with pytest.raises(PermissionStoreError) as on_load:
            session.load_checkins(checkins(U2, 1, []))
        with pytest.raises(PermissionStoreError) as on_read:
            session.extract_checkins(pl.Series([U1]))

    for raised, table in ((on_write, "montage_job_runs"), (on_load, "checkins"), (on_read, "checkins")):
        assert "(42501)" in str(raised.value)
        assert "permission denied" in str(raised.value)
        assert table in str(raised.value)
        assert raised.value.exit_code == 77
    assert count(postgres_url, "montage_job_runs") == 0
    assert count(postgres_url, "checkins") == 2


@pytest.mark.postgres
def test_read_only_postgres_database_gets_permission_errors(postgres_url: str) -> None:
    """A database whose transactions are read-only (as on a standby): writes raise
    PermissionStoreError (25006), reads still work."""
    migrated(postgres_url)
    database = postgres_url.rsplit("/", 1)[1]
    raw(admin_url(), f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')

    with session_for(postgres_url) as session:
        with pytest.raises(PermissionStoreError) as raised:
            session.record_run(run_record())
        session.ensure_migrated()
        assert session.all_users().to_list() == []

    assert "(25006)" in str(raised.value)
    assert "read-only" in str(raised.value)


@pytest.mark.postgres
def test_unknown_role_is_a_permission_error_not_a_transient_one(postgres_url: str) -> None:
    """The server refuses the login (SQLSTATE 28000, `role ... does not exist`): retrying cannot help,
    so it must be a PermissionStoreError (exit 77), as PERMISSION_CLASSES ("28") intends.

    BUG (left failing on purpose): stores.backends.postgres.fault() classifies every driver error
    without a `sqlstate` as TRANSIENT ("connection problem"), and the ADBC driver reports connect
    failures as OperationalError with no sqlstate, so authentication failures come out as
    TransientStoreError and the job would retry them like a dropped connection.
    """
    role = f"montage_absent_{uuid.uuid4().hex[:10]}"
    url = postgres_url.replace("postgresql://root@", f"postgresql://{role}@", 1)

    with store_for(url) as store, pytest.raises(StoreError) as raised:
        store.session()

    assert role in str(raised.value)
    assert type(raised.value) is PermissionStoreError, f"{type(raised.value).__name__}: {raised.value}"


def test_read_only_duckdb_file_gets_permission_errors(duckdb_url: str) -> None:
    """A DuckDB file opened read-only: record_run and load_checkins raise PermissionStoreError; reads work."""
    migrated(duckdb_url)

    with session_for(duckdb_url, read_only=True) as session:
        with pytest.raises(PermissionStoreError) as on_run:
            session.record_run(run_record())
        with pytest.raises(PermissionStoreError) as on_load:
            session.load_checkins(checkins(U1, 1, []))
        session.ensure_migrated()
        assert session.all_users().to_list() == []

    for raised in (on_run, on_load):
        assert "read-only" in str(raised.value)
        assert raised.value.exit_code == 77
    assert count(duckdb_url, "montage_job_runs") == 0
    assert count(duckdb_url, "checkins") == 0


# -- schema ---------------------------------------------------------------------------------


def test_extract_on_an_unmigrated_database_is_a_schema_error(database_url: str) -> None:
    """No tables at all: SchemaStoreError naming the missing table, not the driver's exception."""
    with session_for(database_url) as session, pytest.raises(StoreError) as raised:
        session.extract_checkins(pl.Series([U1]))

    assert type(raised.value) is SchemaStoreError
    assert "checkins" in str(raised.value)
    if not is_duckdb(database_url):
        assert "(42P01)" in str(raised.value)
    assert raised.value.exit_code == 3


def test_missing_column_is_a_schema_error(database_url: str) -> None:
    """A check-in column the job reads was dropped: SchemaStoreError naming it."""
    migrated(database_url)
    for statement in (  # DuckDB alters no table that has indexes
        'DROP INDEX "checkins_updated_at_idx"',
        'DROP INDEX "checkins_user_created_idx"',
        'ALTER TABLE "checkins" DROP COLUMN "location_name"',
    ):
        raw(database_url, statement)

    with session_for(database_url) as session, pytest.raises(StoreError) as raised:
        session.extract_checkins(pl.Series([U1]))

    assert type(raised.value) is SchemaStoreError
    assert "location_name" in str(raised.value)
    if not is_duckdb(database_url):
        assert "(42703)" in str(raised.value)


# -- other ----------------------------------------------------------------------------------


def test_syntax_error_is_a_plain_store_error(database_url: str) -> None:
    """Neither data, transient, permission nor schema: the plain StoreError with the parser's words."""
    with store_for(database_url) as store:
        exc, fault = driver_error_fault(store, "SELEC 1")

    assert fault is not None
    assert fault.kind is FaultKind.OTHER
    error = store_error(fault)
    assert type(error) is StoreError
    assert "syntax error" in str(error)
    assert "SELEC" in str(error)
    if is_duckdb(database_url):
        assert isinstance(exc, duckdb.ParserException)
    else:
        assert "(42601)" in str(error)


# -- a write error without a SQLSTATE -------------------------------------------------------


@pytest.mark.postgres
def test_write_error_without_sqlstate_is_data_on_a_live_connection_and_transient_on_a_dead_one(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver reports a value it cannot encode for COPY (e.g. an `infinity` it read as a
    wrapped integer) as "Error occurred writing COPY data", with no SQLSTATE, like a dropped
    connection. On a connection that still answers, it is the rows' fault: DataStoreError,
    which splits the chunk. Only on a dead connection is it transient.

    Regression: it was TransientStoreError on a live connection too, so the chunk was retried
    on the same rows until the run failed."""
    migrated(postgres_url)
    copy_failed = adbc_driver_manager.OperationalError(
        "Error occurred writing COPY data", status_code=adbc_driver_manager.AdbcStatusCode.IO
    )
    assert copy_failed.sqlstate is None

    def failing_stage(name: str, frame: pl.DataFrame) -> None:
        raise copy_failed

    with store_for(postgres_url) as store:
        connection = store._backend.connect()
        with connection.transaction(write=False):
            [(pid,)] = connection.execute("SELECT pg_backend_pid()")
        with SqlSession(connection) as session:
            monkeypatch.setattr(connection, "stage", failing_stage)
            with pytest.raises(StoreError) as on_live:
                session.load_checkins(checkins(U1, 1, ["coffee"]))
            session.ping()  # it was alive, and still is

            assert raw(postgres_url, f"SELECT pg_terminate_backend({int(pid)}, 30000)") == [(True,)]
            with pytest.raises(StoreError) as on_dead:
                session.load_checkins(checkins(U1, 1, ["coffee"]))

    assert type(on_live.value) is DataStoreError, f"{type(on_live.value).__name__}: {on_live.value}"
    assert on_live.value.transient is False
    assert "Error occurred writing COPY data" in str(on_live.value)
    assert type(on_dead.value) is TransientStoreError, f"{type(on_dead.value).__name__}: {on_dead.value}"
    assert "Error occurred writing COPY data" in str(on_dead.value)
    assert count(postgres_url, "checkins") == 0
