"""The embedded default: a DuckDB file.

One process holds the file read-write, which is the run lock. Threads get their own
cursors; extraction and computation run in parallel while write transactions take turns,
because DuckDB serialises writers to a file anyway and concurrent updates of one table
conflict.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
from loguru import logger

from montage_vec.config.secrets import redact
from montage_vec.errors import (
    ConfigError,
    PermissionStoreError,
    RunLockedError,
    SchemaNotMigratedError,
    SchemaStoreError,
    StoreError,
)
from montage_vec.stores import statements
from montage_vec.stores.backends import duckdb_sql
from montage_vec.stores.backends.base import Dialect
from montage_vec.stores.backends.duckdb_faults import Room, classify, is_invalidated
from montage_vec.stores.faults import Fault
from montage_vec.stores.render import Keyword

DUCKDB = Dialect(
    name="duckdb",
    json_type=Keyword("JSON"),
    json_object=Keyword("json_object"),
    extract_from_staged_users=True,
    mark_changed_items=duckdb_sql.MARK_CHANGED_ITEMS,
    create_chunk_stale=duckdb_sql.CREATE_CHUNK_STALE,
    delete_replaced_items=duckdb_sql.DELETE_REPLACED_ITEMS,
    current_lease=statements.CURRENT_LEASE,
    # Tables without keys (sql/duckdb/008): no ON CONFLICT.
    delete_stale_montages=duckdb_sql.DELETE_STALE_MONTAGES,
    upsert_changed_montages=(
        duckdb_sql.UPDATE_STORED_MONTAGES,
        duckdb_sql.CHECK_NEW_MONTAGE_IDS,
        duckdb_sql.INSERT_NEW_MONTAGES,
    ),
    insert_changed_items=duckdb_sql.INSERT_CHANGED_ITEMS,
    insert_generated_events=duckdb_sql.INSERT_GENERATED_EVENTS,
    insert_invalidated_events=duckdb_sql.INSERT_INVALIDATED_EVENTS,
    record_job_event=duckdb_sql.RECORD_JOB_EVENT,
)


class DuckDBBackend:
    """The file is opened with the first connection, so that opening errors (another process
    holds it, no such file) surface where the caller handles store errors.

    A missing file is created (with its folder) only when `create` is true and `read_only` is
    not; otherwise opening it fails as SchemaNotMigratedError, naming the path.

    DuckDB spills what does not fit `memory_limit` to `temp_directory`, by default
    `<file>.tmp` (DuckDB's own default for a file, set here so that the advice on running out
    of room can name it). After an error that invalidated the database (see duckdb_faults),
    the next `connect` opens the file again, so that the run can still record how it ended.
    """

    dialect = DUCKDB

    def __init__(
        self,
        path: str,
        read_only: bool = False,
        memory_limit: str | None = None,
        *,
        create: bool = True,
        temp_directory: str | None = None,
    ) -> None:
        self._path = path
        self._read_only = read_only
        self._create = create and not read_only
        self._config: dict[str, str | bool | int | float | list[str]] = {}
        if memory_limit:
            self._config["memory_limit"] = memory_limit
        if temp_directory is None and path != ":memory:":
            temp_directory = f"{path}.tmp"
        if temp_directory is not None:
            self._config["temp_directory"] = temp_directory
        self.room = Room(memory_limit, temp_directory)
        self._database: duckdb.DuckDBPyConnection | None = None
        self._invalidated = threading.Event()  # set by a connection that saw DuckDB give up on the database
        self._open_lock = threading.Lock()
        self._write_lock = _write_lock_of(path)

    def connect(self) -> DuckDBConnection:
        with self._open_lock:
            if self._database is not None and self._invalidated.is_set():
                self._reopen()
            if self._database is None:
                self._database = self._open()
            cursor = self._database.cursor()
        return DuckDBConnection(cursor, self._write_lock, self.room, self._invalidated)

    def close(self) -> None:
        with self._open_lock:
            if self._database is not None:
                self._database.close()
                self._database = None

    def _reopen(self) -> None:
        """Drop the invalidated database: DuckDB opens a fresh one for the same file once the
        old one is closed (its other cursors fail anyway, as they already did)."""
        logger.warning("DuckDB invalidated the database after an error; opening the file again", file=self._path)
        database, self._database = self._database, None
        self._invalidated.clear()
        if database is not None:
            with suppress(duckdb.Error):
                database.close()

    def _open(self) -> duckdb.DuckDBPyConnection:
        path = self._path
        if path != ":memory:" and not Path(path).is_file():
            if not self._create or Path(path).is_dir():
                require_file(path)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            return duckdb.connect(path, read_only=self._read_only, config=self._config)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise RunLockedError(f"the DuckDB file {path} is in use by another process") from None
            if "not a valid duckdb database file" in str(exc).lower():
                raise SchemaStoreError(f"{path} is not a DuckDB database file") from None
            if "permission denied" in str(exc).lower():
                raise PermissionStoreError(
                    f"cannot open the DuckDB file {path} for writing: permission denied "
                    "(show, explain, health and once --dry-run open it read-only)"
                ) from None
            raise StoreError(f"cannot open DuckDB file {path}: {redact(str(exc))}") from None


# One write lock per database file in this process, however many backends open it: the
# scheduler opens one for a run and one per realtime regeneration, and DuckDB lets them share
# the file. Without keys on the job's tables (sql/duckdb/008), two write transactions of one
# user at once could each insert the same new montage; taking turns per file rules that out.
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock_of(path: str) -> threading.Lock:
    if path == ":memory:":  # each in-memory database is its own
        return threading.Lock()
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(str(Path(path).resolve()), threading.Lock())


def require_file(path: str) -> None:
    """SchemaNotMigratedError (exit 3) unless the file exists: its job tables are missing, as in
    a file that was never migrated, and no command but `migrate` and `demo` creates one."""
    if Path(path).is_dir():
        raise ConfigError(
            f"{Path(path).absolute()} is a folder: name a DuckDB file in it, e.g. duckdb:///{path}/montage.duckdb"
        )
    if path != ":memory:" and not Path(path).is_file():
        raise SchemaNotMigratedError(
            f"no DuckDB file at {Path(path).absolute()}: create it with `montage-vec migrate` "
            "(or fill it with synthetic data with `montage-vec demo`)"
        )


class DuckDBConnection:
    dialect = DUCKDB

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        write_lock: threading.Lock,
        room: Room,
        invalidated: threading.Event,
    ) -> None:
        self._cursor = cursor
        self._write_lock = write_lock
        self._room = room
        self._invalidated = invalidated
        self._staged: list[str] = []
        self._cursor.execute("SET TimeZone = 'UTC'")

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # Drained at once: DuckDB refuses new work on a cursor while a result is open.
        return self._cursor.execute(sql, list(parameters)).fetchall()

    def fetch_frame(self, sql: str, *, replica: bool = False) -> pl.DataFrame:
        frame: pl.DataFrame = self._cursor.sql(sql).pl()
        return frame

    def stream_frames(self, sql: str, batch_rows: int, *, replica: bool = False) -> Iterator[pl.DataFrame]:
        """DuckDB's streaming result, batch by batch, in the cursor's open transaction."""
        reader = self._cursor.sql(sql).to_arrow_reader(batch_rows)
        yield _frame(reader.schema.empty_table())  # the columns, even for a table without rows
        yield from map(_frame, reader)

    def stage(self, name: str, frame: pl.DataFrame) -> None:
        self._cursor.register(name, frame)
        self._staged.append(name)

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[None]:
        with self._write_lock if write else nullcontext():
            self._cursor.execute("BEGIN TRANSACTION")
            try:
                yield
            except BaseException:
                with suppress(duckdb.Error):  # an invalidated database cannot roll back; the error says why
                    self._cursor.execute("ROLLBACK")
                raise
            else:
                self._cursor.execute("COMMIT")
            finally:
                self._unstage()

    def execute_autocommit(self, sql: str) -> None:
        self._cursor.execute(sql)

    def fault(self, exc: BaseException) -> Fault | None:
        if not isinstance(exc, duckdb.Error):
            return None
        if is_invalidated(exc):
            self._invalidated.set()
        return classify(exc, self._room)

    def try_lock(self, name: str) -> bool:
        return True  # opening the file read-write already excluded every other process

    def holds_lock(self, name: str) -> bool:
        return True  # the file lock lasts as long as the process

    def lock_transaction(self, name: str) -> None:
        """Nothing to wait for: this process holds the file alone."""

    def close(self) -> None:
        self._cursor.close()

    def _unstage(self) -> None:
        for name in self._staged:
            self._cursor.unregister(name)
        self._staged.clear()


def _frame(arrow: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    frame = pl.from_arrow(arrow)
    assert isinstance(frame, pl.DataFrame)
    return frame
