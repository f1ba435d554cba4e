"""The one SQL session over either backend, and the Store that hands sessions out.

Every statement the two databases share is run from here once (units of work and rendering
in sql_core.py, a run's bookkeeping in bookkeeping.py); the backend's `Connection` only runs
SQL, stages frames and reads its own errors.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import asdict
from datetime import datetime
from types import TracebackType

import polars as pl
from loguru import logger

from montage_vec.engine.schema import CHECKIN_SCHEMA
from montage_vec.errors import DataStoreError
from montage_vec.stores import change_sql, checks, chunk_sql, setup, source, statements
from montage_vec.stores.backends.base import Backend, Dialect
from montage_vec.stores.bookkeeping import RunBookkeeping
from montage_vec.stores.records import ChunkDiff, ChunkWrite, WriteOutcome
from montage_vec.stores.render import Snapshot, Timestamp, UuidArray
from montage_vec.stores.tables import Tables

UNIQUE_VIOLATION = "23505"
CONCURRENT_WRITE_ATTEMPTS = 3

# `show` reads timestamps as the database's text: 'infinity' and years past 9999 are valid
# timestamps that no Python datetime (and, for infinity, no polars datetime) can hold.
SHOWN_MONTAGES = f"""
SELECT "id", "kind", "interest", "item_count", "generated_at"::VARCHAR AS "generated_at",
       "cache_expires_at"::VARCHAR AS "cache_expires_at", "valid_until"::VARCHAR AS "valid_until", "job_id"
FROM ({statements.USER_MONTAGES}) AS "shown"
ORDER BY "kind", "interest"
"""  # noqa: S608 - built once from constants
SHOWN_ITEMS = f"""
SELECT "kind", "interest", "position", "checkin_id", "checkin_created_at"::VARCHAR AS "checkin_created_at",
       "widget_type", "widget_metadata"
FROM ({statements.USER_ITEMS}) AS "shown"
ORDER BY "kind", "interest", "position"
"""  # noqa: S608 - built once from constants


def detection_statements(dialect: Dialect) -> tuple[str, ...]:
    """After staging, what finds the montages a chunk changes: TEMP tables only, no locks.

    A write and a dry run's diff both run exactly these, so a diff counts what the write does.
    """
    return (
        *dialect.prepare_staged_chunk,
        *chunk_sql.DROP_CHUNK_TABLES,
        chunk_sql.CREATE_CHUNK_MONTAGES,
        dialect.mark_changed_items,
        dialect.create_chunk_stale,
        chunk_sql.CREATE_CHUNK_CHANGED_USERS,
    )


def chunk_statements(dialect: Dialect, analytics: bool) -> tuple[str, ...]:
    """A chunk write's statements after staging, in order; `analytics` adds `montage.generated` events."""
    return (
        *dialect.prepare_chunk_write,
        *detection_statements(dialect),
        *dialect.analyze_chunk_tables,
        dialect.delete_replaced_items,
        dialect.delete_stale_montages,
        *dialect.upsert_changed_montages,
        dialect.insert_changed_items,
        *((dialect.insert_generated_events,) if analytics else ()),
        dialect.insert_invalidated_events,
        chunk_sql.CLEAR_RETRIES,
    )


def _with_engine_tags(extracted: pl.DataFrame) -> pl.DataFrame:
    """Extracted check-ins with `tags` as the engine's List(String), whatever list type the driver returned."""
    return extracted.with_columns(pl.col("tags").cast(CHECKIN_SCHEMA["tags"]))


class _Discarded(Exception):
    """Ends a diff's unit in a rollback, so that not even its TEMP tables outlive it."""


class SqlSession(RunBookkeeping):
    """A JobStore, AdminStore and CheckinSource on one connection; use from one thread, as a context manager."""

    # -- schema -------------------------------------------------------------------

    def ping(self) -> None:
        with self.unit():
            self.run(statements.PING)

    def migrate(self) -> list[str]:
        """Apply pending migrations (see `setup.migrate`); the names of those applied now."""
        return setup.migrate(self)

    def ensure_migrated(self) -> None:
        """SchemaStoreError naming what is wrong, unless the job's tables and the source are usable."""
        checks.check_schema(self)

    def install_capture_triggers(self) -> str:
        """Install the change-capture triggers on a table source; what was done."""
        return setup.install_capture_triggers(self)

    def create_source_indexes(self) -> list[str]:
        """Create the recommended indexes on a table source, CONCURRENTLY; what was done."""
        return setup.create_source_indexes(self)

    def tables_with_rows(self) -> list[str]:
        """The tables holding any row, besides the migration history: `demo` needs an empty database."""
        return checks.tables_with_rows(self)

    def schema_warnings(self) -> list[str]:
        """Problems that do not stop a run (checked after `ensure_migrated` passed)."""
        found = source.resolve_source(self)
        return checks.source_warnings(self, found) if found is not None else []

    # -- planning -----------------------------------------------------------------------------

    def latest_data_time(self, not_after: datetime) -> datetime | None:
        return self.scalar(statements.LATEST_DATA_TIME, [not_after])  # type: ignore[no-any-return]

    def changed_users(self, since: datetime) -> pl.Series:
        return self.users(statements.CHANGED_USERS, since=Timestamp(since))

    def all_users(self) -> pl.Series:
        return self.users(statements.CHECKIN_USERS)

    def revisit_users(self, as_of: datetime) -> pl.Series:
        return self.users(statements.REVISIT_USERS, as_of=Timestamp(as_of))

    def montage_users(self) -> pl.Series:
        return self.users(statements.MONTAGE_USERS)

    # -- change capture (README, "Change capture") ----------------------------------------------

    def capture_installed(self) -> bool:
        return source.capture_installed(self)

    def capture_snapshot(self) -> Snapshot | None:
        """The snapshot whose captured changes a run consumes; None without a change table (DuckDB)."""
        if not self._dialect.concurrent_writers:
            return None
        return Snapshot(self.scalar(change_sql.CURRENT_SNAPSHOT))

    def captured_users(self, snapshot: Snapshot) -> pl.Series:
        return self.users(change_sql.CAPTURED_USERS, snapshot=snapshot)

    def oldest_open_transaction(self) -> datetime | None:
        """When the oldest other open transaction began; None without one (or on DuckDB)."""
        if not self._dialect.concurrent_writers:
            return None
        return self.scalar(change_sql.OLDEST_OPEN_TRANSACTION)  # type: ignore[no-any-return]

    def reconcile_users(self, privacy_included: Sequence[str]) -> pl.Series:
        """Users whose stored montages disagree with the source in ways `updated_at` cannot show."""
        with self.unit():
            self._connection.stage("stage_privacy", pl.DataFrame({"privacy": sorted(privacy_included)}))
            return self._connection.fetch_frame(self.sql(change_sql.RECONCILE_USERS))["user_id"]

    # -- chunks -------------------------------------------------------------------------------

    def extract_checkins(self, user_ids: pl.Series) -> pl.DataFrame:
        with self.unit():
            if self._dialect.extract_from_staged_users:
                self._connection.stage("stage_users", pl.DataFrame({"user_id": user_ids}))
                sql = self.sql(statements.EXTRACT_CHECKINS_OF_STAGED_USERS)
            else:
                sql = self.sql(statements.EXTRACT_CHECKINS_OF_ARRAY, user_ids=UuidArray.of(user_ids))
            extracted = self._connection.fetch_frame(sql, replica=True)
        return _with_engine_tags(extracted)

    def stream_checkins(self, batch_rows: int) -> Generator[pl.DataFrame, None, None]:
        """`source_checkins` as frames of about `batch_rows` rows (the first maybe empty), from one
        sequential read in one transaction: one snapshot for the whole read, no lock a writer waits for."""
        sql = self.sql(statements.EXTRACT_ALL_CHECKINS)
        with self.unit():
            yield from map(_with_engine_tags, self._connection.stream_frames(sql, batch_rows, replica=True))

    def write_chunk(self, chunk: ChunkWrite) -> WriteOutcome:
        """Write a chunk in one transaction, again when a concurrent writer of its users won a key.

        A unique violation on the job's keys happens when another writer created a user's
        first montages meanwhile (see chunk_sql.LOCK_CHUNK_USERS): the retry finds and locks
        them. One that survives the retries is no race but the data (a foreign row on a key).
        """
        for attempt in range(1, CONCURRENT_WRITE_ATTEMPTS + 1):
            try:
                return self._write_chunk_once(chunk)
            except DataStoreError as exc:
                if exc.sqlstate != UNIQUE_VIOLATION or attempt == CONCURRENT_WRITE_ATTEMPTS:
                    raise
                logger.bind(job_id=chunk.job_id).info(
                    "a concurrent writer of the chunk's users won a key; writing again", error=str(exc)
                )
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _write_chunk_once(self, chunk: ChunkWrite) -> WriteOutcome:
        with self.unit(write=True):
            self._check_lease(chunk.lease)
            self._stage_chunk(chunk)
            for statement in chunk_statements(self._dialect, chunk.analytics):
                self.run(statement)
            diff = self._read_diff()
            changed_users = self._connection.fetch_frame(chunk_sql.SELECT_CHANGED_USERS)["user_id"].to_list()
        return WriteOutcome(**asdict(diff), changed_users=sorted(changed_users))

    def diff_chunk(self, chunk: ChunkWrite) -> ChunkDiff:
        """What `write_chunk(chunk)` would change now, by the same detection; writes nothing.

        No lease check and no row locks (a dry run holds no lease and must not block writers),
        TEMP tables only, and a rollback at the end: it works on a DuckDB file opened read-only.
        """
        try:
            with self.unit():
                self._stage_chunk(chunk)
                for statement in detection_statements(self._dialect):
                    self.run(statement)
                diff = self._read_diff()
                raise _Discarded
        except _Discarded:
            return diff

    def _stage_chunk(self, chunk: ChunkWrite) -> None:
        self._connection.stage("stage_users", chunk.staged_users())
        self._connection.stage("stage_montages", chunk.staged_montages())
        self._connection.stage("stage_items", chunk.staged_items())

    def _read_diff(self) -> ChunkDiff:
        [counts] = self.run(chunk_sql.SELECT_DIFF)
        return ChunkDiff(*(int(count) for count in counts))

    # -- demo and inspection ------------------------------------------------------------------

    def load_checkins(self, checkins: pl.DataFrame) -> int:
        staged = checkins.select(statements.CHECKIN_COLUMNS)
        with self.unit(write=True):
            self._connection.stage("stage_checkins", staged)
            self.run(statements.UPSERT_CHECKINS)
        return staged.height

    def user_montages(self, user_id: str, *, timestamps_as_text: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(montages, items) stored for one user; `timestamps_as_text` (for `show`): every timestamp
        as the database writes it, which holds 'infinity' and years past 9999."""
        user = UuidArray.of([user_id])
        montages_sql, items_sql = (
            (SHOWN_MONTAGES, SHOWN_ITEMS) if timestamps_as_text else (statements.USER_MONTAGES, statements.USER_ITEMS)
        )
        with self.unit():
            montages = self._connection.fetch_frame(self.sql(montages_sql, user_ids=user))
            items = self._connection.fetch_frame(self.sql(items_sql, user_ids=user))
        return montages, items

    def user_with_most_interests(self) -> str | None:
        return self.scalar(statements.USER_WITH_MOST_INTERESTS)  # type: ignore[no-any-return]

    def stored_montages(self, user_ids: pl.Series | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(montages, items) stored for `user_ids` (all users when None), filtered in the database."""
        with self.unit():
            if user_ids is None:
                montages_sql, items_sql = statements.STORED_MONTAGES, statements.STORED_ITEMS
            else:
                self._connection.stage(
                    "stage_users", pl.DataFrame({"user_id": user_ids}, schema={"user_id": pl.String})
                )
                montages_sql = statements.STORED_MONTAGES_OF_STAGED_USERS
                items_sql = statements.STORED_ITEMS_OF_STAGED_USERS
            montages = self._connection.fetch_frame(self.sql(montages_sql))
            items = self._connection.fetch_frame(self.sql(items_sql))
        return montages, items

    def source_checkins(self) -> pl.DataFrame:
        """Every check-in of the source, in the engine's columns (see `extract_checkins`)."""
        with self.unit():
            extracted = self._connection.fetch_frame(self.sql(statements.EXTRACT_ALL_CHECKINS), replica=True)
        return _with_engine_tags(extracted)


class Store:
    """A database: hands out one SqlSession per thread (a DuckDB cursor, a PostgreSQL connection)."""

    def __init__(self, backend: Backend, tables: Tables | None = None) -> None:
        self._backend = backend
        self._tables = tables or Tables()

    def session(self) -> SqlSession:
        """A new session for the calling thread; use it as a context manager."""
        return SqlSession(self._backend.connect(), self._tables)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
