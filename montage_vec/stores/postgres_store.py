"""PostgreSQL in production, through the ADBC driver.

Reads run without bound parameters so the driver streams them with binary COPY; chunk
writes bulk-load staging tables with `adbc_ingest` (binary COPY) and apply them with the
shared statements in `chunk_sql`, all in the session's transaction. Each session is one
connection and is used by one thread only (the driver does not allow sharing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import adbc_driver_postgresql.dbapi as dbapi
import polars as pl

from montage_vec.engine.schema import CHECKIN_SCHEMA
from montage_vec.errors import SchemaNotMigratedError, StoreError
from montage_vec.stores import queries
from montage_vec.stores.base import ChunkWrite, RunRecord, Store, WriteOutcome
from montage_vec.stores.chunk_sql import POSTGRES, SELECT_CHANGED_USERS, SELECT_OUTCOME, write_statements
from montage_vec.stores.pg_errors import classify, connect
from montage_vec.stores.pg_ids import uuid_array_literal
from montage_vec.stores.sql_session import SqlStoreSession

BACKEND = "postgresql"
RECORD_JOB_EVENT = queries.RECORD_JOB_EVENT.format(json=POSTGRES.json_type)
LOCK_NAMESPACE = b"montage-vec/run/"
# Planner help for a chunk's statements: staging tables get statistics (temporary tables
# are never auto-analyzed), and sorts/hashes of a few hundred thousand rows stay in memory.
PREPARE_CHUNK = (
    "SET LOCAL work_mem = '64MB'",
    'ANALYZE "stage_users"',
    'ANALYZE "stage_montages"',
    'ANALYZE "stage_items"',
)

TRY_ADVISORY_LOCK = "SELECT pg_try_advisory_lock({key})"
# A bigint advisory key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits).
HOLDS_ADVISORY_LOCK = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
  AND classid = {high}::oid AND objid = {low}::oid AND objsubid = 1
"""
# Ids travel as a validated `'{...}'::uuid[]` literal, formatted in as {users}.
EXTRACT_CHECKINS_FOR = queries.EXTRACT_CHECKINS.format(users="= ANY({users})")


def _lock_key(shard: str) -> int:
    """A stable signed 64-bit advisory lock key per shard."""
    digest = hashlib.blake2b(LOCK_NAMESPACE + shard.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresStore(Store):
    kind = BACKEND

    def __init__(self, uri: str, read_location: str | None = None) -> None:
        self.uri = uri
        self.read_uri = read_location

    def session(self) -> PostgresSession:
        return PostgresSession(self.uri, self.read_uri)

    def close(self) -> None:
        """Sessions own their connections; the store holds none."""


class PostgresSession(SqlStoreSession):
    backend = BACKEND

    def __init__(self, uri: str, read_uri: str | None) -> None:
        self._connection = connect(uri)
        self._read_uri = read_uri
        self._reader: Any | None = None

    # -- run bookkeeping -------------------------------------------------

    def try_lock_run(self, shard: str) -> bool:
        with self._transaction():
            locked = self._scalar(TRY_ADVISORY_LOCK.format(key=_lock_key(shard)))
        # A session-level advisory lock outlives the transaction and is held until disconnect.
        return bool(locked)

    def holds_run_lock(self, shard: str) -> bool:
        unsigned = _lock_key(shard) & 0xFFFF_FFFF_FFFF_FFFF
        sql = HOLDS_ADVISORY_LOCK.format(high=unsigned >> 32, low=unsigned & 0xFFFF_FFFF)
        try:
            with self._transaction():
                return bool(self._scalar(sql))
        except StoreError:
            return False

    def ping(self) -> None:
        with self._transaction():
            self._scalar("SELECT 1")

    def ensure_migrated(self) -> None:
        with self._transaction():
            found = self._scalar(queries.COUNT_JOB_TABLES)
        if found != len(queries.JOB_TABLES):
            raise SchemaNotMigratedError("the montage tables are missing: run `montage-vec migrate` first")

    def latest_data_time(self, not_after: datetime) -> datetime | None:
        with self._transaction():
            return self._scalar(queries.LATEST_DATA_TIME, [not_after])  # type: ignore[no-any-return]

    def read_watermark(self, shard: str) -> datetime | None:
        with self._transaction():
            return self._scalar(queries.READ_WATERMARK, [shard])  # type: ignore[no-any-return]

    def save_watermark(self, shard: str, watermark: datetime, job_id: str) -> None:
        with self._transaction():
            self._execute(queries.SAVE_WATERMARK, [shard, watermark, job_id, datetime.now(UTC)])

    def record_run(self, run: RunRecord) -> None:
        event = [run.event_type, run.job_id, run.finished_at or run.started_at, run.event_payload()]
        with self._transaction():
            self._execute(queries.RECORD_RUN, [getattr(run, column) for column in queries.RUN_COLUMNS])
            self._execute(RECORD_JOB_EVENT, event)

    def record_failures(self, failures: pl.DataFrame, job_id: str, failed_at: datetime) -> None:
        with self._transaction():
            self._stage("stage_failures", failures)
            self._execute(queries.RECORD_FAILURES, [job_id, failed_at])

    # -- the job's data path ----------------------------------------------

    def _users(self, sql: str) -> pl.Series:
        with self._transaction():
            return self._frame(sql)["user_id"]

    def extract_checkins(self, user_ids: pl.Series) -> pl.DataFrame:
        # No bound parameters, so the driver streams the rows with binary COPY; the ids are
        # validated uuids, which makes the literal safe. Works on a read-only replica too.
        sql = EXTRACT_CHECKINS_FOR.format(users=uuid_array_literal(user_ids))
        if self._read_uri is None:
            with self._transaction():
                extracted = self._frame(sql)
        else:
            extracted = self._read_replica_frame(sql)
        return extracted.with_columns(pl.col("tags").cast(CHECKIN_SCHEMA["tags"]))

    def write_chunk(self, chunk: ChunkWrite) -> WriteOutcome:
        with self._transaction():
            self._stage("stage_users", chunk.staged_users())
            self._stage("stage_montages", chunk.staged_montages())
            self._stage("stage_items", chunk.staged_items())
            for statement in (*PREPARE_CHUNK, *write_statements(POSTGRES, chunk.analytics)):
                self._execute(statement)
            written, removed = self._row(SELECT_OUTCOME)
            changed_users = self._frame(SELECT_CHANGED_USERS)["user_id"].to_list()
        return WriteOutcome(int(written), int(removed), sorted(changed_users))

    def load_checkins(self, checkins: pl.DataFrame) -> int:
        staged = checkins.select(queries.CHECKIN_COLUMNS)
        with self._transaction():
            self._stage("stage_checkins", staged)
            self._execute(queries.UPSERT_CHECKINS)
        return staged.height

    def user_montages(self, user_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        literal = uuid_array_literal(pl.Series([user_id]))
        by_user = f"= ANY({literal})"
        with self._transaction():
            montages = self._frame(queries.USER_MONTAGES.format(user=by_user))
            items = self._frame(queries.USER_ITEMS.format(user=by_user))
        return montages, items

    def user_with_most_interests(self) -> str | None:
        with self._transaction():
            return self._scalar(queries.USER_WITH_MOST_INTERESTS)  # type: ignore[no-any-return]

    def close(self) -> None:
        for connection in (self._reader, self._connection):
            if connection is not None:
                connection.close()

    # -- plumbing -----------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Commit on success; roll back and raise a classified StoreError on failure."""
        try:
            yield
            self._connection.commit()
        except BaseException as exc:
            # If the connection is gone, the server has rolled the transaction back itself.
            with suppress(dbapi.Error, OSError):
                self._connection.rollback()
            if isinstance(exc, dbapi.Error | OSError):
                raise classify(exc) from None
            raise

    def _execute(self, sql: str, parameters: list[Any] | None = None) -> None:
        with self._connection.cursor() as cursor:
            cursor.execute(sql, parameters)

    def _scalar(self, sql: str, parameters: list[Any] | None = None) -> Any:
        return self._row(sql, parameters)[0]

    def _row(self, sql: str, parameters: list[Any] | None = None) -> tuple[Any, ...]:
        with self._connection.cursor() as cursor:
            cursor.execute(sql, parameters)
            row = cursor.fetchone()
        return tuple(row) if row is not None else (None,)

    def _frame(self, sql: str) -> pl.DataFrame:
        with self._connection.cursor() as cursor:
            cursor.execute(sql)
            table = cursor.fetch_arrow_table()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def _stage(self, name: str, frame: pl.DataFrame) -> None:
        with self._connection.cursor() as cursor:
            cursor.adbc_ingest(name, frame.to_arrow(), mode="replace", temporary=True)

    def _read_replica_frame(self, sql: str) -> pl.DataFrame:
        if self._reader is None:
            self._reader = connect(self._read_uri or "")
        try:
            with self._reader.cursor() as cursor:
                cursor.execute(sql)
                table = cursor.fetch_arrow_table()
            self._reader.commit()
        except (dbapi.Error, OSError) as exc:
            self._reader.close()
            self._reader = None
            raise classify(exc) from None
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame
