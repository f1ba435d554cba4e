"""The embedded default: a DuckDB file.

One process holds the file read-write, which is the run lock. Threads get their own
cursors; extraction and computation run in parallel while writes take turns, because
DuckDB serialises writers to a file anyway and concurrent updates of one table conflict.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from montage_vec.config.secrets import redact
from montage_vec.engine.schema import CHECKIN_SCHEMA
from montage_vec.errors import (
    DataStoreError,
    RunLockedError,
    SchemaNotMigratedError,
    StoreError,
    TransientStoreError,
)
from montage_vec.stores import queries
from montage_vec.stores.base import ChunkWrite, RunRecord, Store, WriteOutcome
from montage_vec.stores.chunk_sql import DUCKDB, SELECT_CHANGED_USERS, SELECT_OUTCOME, write_statements
from montage_vec.stores.sql_session import SqlStoreSession

BACKEND = "duckdb"
RECORD_JOB_EVENT = queries.RECORD_JOB_EVENT.format(json=DUCKDB.json_type)
EXTRACT_STAGED_CHECKINS = queries.EXTRACT_CHECKINS.format(users='IN (SELECT "user_id"::UUID FROM "stage_users")')
USER_MONTAGES_BY_PARAMETER = queries.USER_MONTAGES.format(user="= $1::UUID")
USER_ITEMS_BY_PARAMETER = queries.USER_ITEMS.format(user="= $1::UUID")


class DuckDBStore(Store):
    kind = BACKEND

    def __init__(self, path: str, read_only: bool = False, memory_limit: str | None = None) -> None:
        self.path = path
        if read_only and not Path(path).is_file():
            raise StoreError(f"no DuckDB file at {path}")
        if path != ":memory:" and not read_only:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            config: dict[str, str | bool | int | float | list[str]] = {}
            if memory_limit:
                config["memory_limit"] = memory_limit
            self._database = duckdb.connect(path, read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise RunLockedError(f"the DuckDB file {path} is in use by another process") from None
            raise StoreError(f"cannot open DuckDB file {path}: {redact(str(exc))}") from None
        self._write_lock = threading.Lock()

    def session(self) -> DuckDBSession:
        return DuckDBSession(self._database.cursor(), self._write_lock)

    def close(self) -> None:
        self._database.close()


class DuckDBSession(SqlStoreSession):
    backend = BACKEND

    def __init__(self, cursor: duckdb.DuckDBPyConnection, write_lock: threading.Lock) -> None:
        self._cursor = cursor
        self._write_lock = write_lock
        self._execute("SET TimeZone = 'UTC'")

    def try_lock_run(self, shard: str) -> bool:
        # Opening the file read-write already excluded every other process.
        return True

    def holds_run_lock(self, shard: str) -> bool:
        return True  # the file lock lasts as long as the process

    def ping(self) -> None:
        self._scalar("SELECT 1")

    def ensure_migrated(self) -> None:
        found = self._scalar(queries.COUNT_JOB_TABLES)
        if found != len(queries.JOB_TABLES):
            raise SchemaNotMigratedError("the montage tables are missing: run `montage-vec migrate` first")

    def latest_data_time(self, not_after: datetime) -> datetime | None:
        return self._scalar(queries.LATEST_DATA_TIME, [not_after])  # type: ignore[no-any-return]

    def read_watermark(self, shard: str) -> datetime | None:
        return self._scalar(queries.READ_WATERMARK, [shard])  # type: ignore[no-any-return]

    def save_watermark(self, shard: str, watermark: datetime, job_id: str) -> None:
        with self._write_lock:
            self._execute(queries.SAVE_WATERMARK, [shard, watermark, job_id, datetime.now(UTC)])

    def _users(self, sql: str) -> pl.Series:
        users: pl.Series = self._cursor.sql(sql).pl()["user_id"]
        return users

    def extract_checkins(self, user_ids: pl.Series) -> pl.DataFrame:
        stage_users = pl.DataFrame({"user_id": user_ids})
        self._cursor.register("stage_users", stage_users)
        try:
            extracted: pl.DataFrame = self._cursor.sql(EXTRACT_STAGED_CHECKINS).pl()
        finally:
            self._cursor.unregister("stage_users")
        return extracted.with_columns(pl.col("tags").cast(CHECKIN_SCHEMA["tags"]))

    def write_chunk(self, chunk: ChunkWrite) -> WriteOutcome:
        staged = {
            "stage_users": chunk.staged_users(),
            "stage_montages": chunk.staged_montages(),
            "stage_items": chunk.staged_items(),
        }
        with self._write_lock, self._registered(staged), self._transaction():
            for statement in write_statements(DUCKDB, chunk.analytics):
                self._execute(statement)
            [(written, removed)] = self._execute(SELECT_OUTCOME)
            changed_users = self._cursor.sql(SELECT_CHANGED_USERS).pl()["user_id"].to_list()
        return WriteOutcome(int(written), int(removed), sorted(changed_users))

    def record_failures(self, failures: pl.DataFrame, job_id: str, failed_at: datetime) -> None:
        with self._write_lock, self._registered({"stage_failures": failures}), self._transaction():
            self._execute(queries.RECORD_FAILURES, [job_id, failed_at])

    def record_run(self, run: RunRecord) -> None:
        event = [run.event_type, run.job_id, run.finished_at or run.started_at, run.event_payload()]
        with self._write_lock, self._transaction():
            self._execute(queries.RECORD_RUN, [getattr(run, c) for c in queries.RUN_COLUMNS])
            self._execute(RECORD_JOB_EVENT, event)

    def load_checkins(self, checkins: pl.DataFrame) -> int:
        staged = checkins.select(queries.CHECKIN_COLUMNS)
        with self._write_lock, self._registered({"stage_checkins": staged}), self._transaction():
            self._execute(queries.UPSERT_CHECKINS)
        return staged.height

    def user_montages(self, user_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        montages = self._cursor.sql(USER_MONTAGES_BY_PARAMETER, params=[user_id]).pl()
        items = self._cursor.sql(USER_ITEMS_BY_PARAMETER, params=[user_id]).pl()
        return montages, items

    def user_with_most_interests(self) -> str | None:
        return self._scalar(queries.USER_WITH_MOST_INTERESTS)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._cursor.close()

    def _scalar(self, sql: str, parameters: list[Any] | None = None) -> Any:
        rows = self._execute(sql, parameters)
        return rows[0][0] if rows else None

    def _execute(self, sql: str, parameters: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement and drain its result: DuckDB refuses new work while a result is open."""
        return self._cursor.execute(sql, parameters or []).fetchall()

    @contextmanager
    def _registered(self, frames: dict[str, pl.DataFrame]) -> Iterator[None]:
        for name, frame in frames.items():
            self._cursor.register(name, frame)
        try:
            yield
        finally:
            for name in frames:
                self._cursor.unregister(name)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._execute("BEGIN TRANSACTION")
        try:
            yield
        except duckdb.Error as exc:
            self._execute("ROLLBACK")
            raise _classify(exc) from None
        except BaseException:
            self._execute("ROLLBACK")
            raise
        self._execute("COMMIT")


def _classify(exc: duckdb.Error) -> StoreError:
    message = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if isinstance(exc, duckdb.ConstraintException | duckdb.ConversionException | duckdb.InvalidInputException):
        return DataStoreError(message)
    if isinstance(exc, duckdb.TransactionException | duckdb.IOException):
        return TransientStoreError(message)
    return StoreError(message)
