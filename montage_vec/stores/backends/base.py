"""What a backend provides: a dialect, and connections that run SQL and stage frames.

The SQL session (`stores.session`) holds everything the two databases share; a backend
says only how to connect, how to move frames in and out, how transactions and run locks
work, and what its driver errors mean.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from montage_vec.stores import chunk_sql, statements
from montage_vec.stores.faults import Fault
from montage_vec.stores.render import Keyword


@dataclass(frozen=True)
class Dialect:
    """Where the backends' SQL differs; everything else is shared text."""

    name: str  # also the folder of its migrations under sql/
    json_type: Keyword
    json_object: Keyword
    # How a chunk's users reach the extraction: staged as "stage_users", or a uuid array
    # literal (see statements.EXTRACT_CHECKINS_OF_*).
    extract_from_staged_users: bool
    # Complete statements where the fast plan differs per backend.
    mark_changed_items: str
    create_chunk_stale: str
    delete_replaced_items: str
    current_lease: str  # statements.CURRENT_LEASE or its share-locking variant
    # Other sessions may write the source while a run reads it (a server, not a file this
    # process holds): open transactions hold the watermark back, and triggers can capture.
    concurrent_writers: bool = False
    # Statements run after staging a chunk, and after creating its work tables.
    prepare_staged_chunk: tuple[str, ...] = ()
    analyze_chunk_tables: tuple[str, ...] = ()
    # Statements a chunk write (not a dry run's diff) runs first: its row locks and markers.
    prepare_chunk_write: tuple[str, ...] = ()
    # The writes of the job's rows. By default those of tables with the contract's keys
    # (ON CONFLICT); DuckDB's tables have none (sql/duckdb/008), nor its statements ON CONFLICT.
    delete_stale_montages: str = chunk_sql.DELETE_STALE_MONTAGES
    upsert_changed_montages: tuple[str, ...] = (chunk_sql.UPSERT_CHANGED_MONTAGES,)
    insert_changed_items: str = chunk_sql.INSERT_CHANGED_ITEMS
    insert_generated_events: str = chunk_sql.INSERT_GENERATED_EVENTS
    insert_invalidated_events: str = chunk_sql.INSERT_INVALIDATED_EVENTS
    record_job_event: str = statements.RECORD_JOB_EVENT


class Connection(Protocol):
    """One connection, used by one thread."""

    dialect: Dialect

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (none for DDL and writes)."""

    def fetch_frame(self, sql: str, *, replica: bool = False) -> pl.DataFrame:
        """A query's result as a frame, streamed in bulk; `replica` allows a read replica."""

    def stream_frames(self, sql: str, batch_rows: int, *, replica: bool = False) -> Iterator[pl.DataFrame]:
        """A query's result as frames of about `batch_rows` rows, read as the server sends them (at
        least one frame, maybe empty, so the columns are known); `replica` as in `fetch_frame`."""

    def stage(self, name: str, frame: pl.DataFrame) -> None:
        """Make `frame` readable as the relation `name` until the transaction ends."""

    def transaction(self, *, write: bool) -> AbstractContextManager[None]:
        """Commit on success, roll back on any exception (which propagates unchanged)."""

    def execute_autocommit(self, sql: str) -> None:
        """Run one statement outside any transaction (e.g. CREATE INDEX CONCURRENTLY)."""

    def fault(self, exc: BaseException) -> Fault | None:
        """What a driver error means; None for anything that is not the driver's."""

    def try_lock(self, name: str) -> bool:
        """Take a lock named `name` for this connection's lifetime; False when someone holds it."""

    def holds_lock(self, name: str) -> bool:
        """Whether this connection still holds the lock (False when the connection died)."""

    def lock_transaction(self, name: str) -> None:
        """Wait for a lock named `name` that the current transaction holds until it ends."""

    def close(self) -> None: ...


class Backend(Protocol):
    """A database: opens connections to it."""

    dialect: Dialect

    def connect(self) -> Connection: ...

    def close(self) -> None: ...
