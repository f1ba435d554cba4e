"""Stores: where check-ins come from and montages go (DuckDB embedded, PostgreSQL in production).

One `SqlSession` class serves both databases; a small backend adapter per driver
(`stores.backends`) says how to connect, stage frames and read its errors.
"""

from __future__ import annotations

from montage_vec.config.database import DatabaseTarget
from montage_vec.stores.interfaces import AdminStore, CheckinSource, JobStore
from montage_vec.stores.records import ChunkWrite, RunRecord, WriteOutcome
from montage_vec.stores.session import SqlSession, Store
from montage_vec.stores.tables import Tables


def open_store(target: DatabaseTarget, read_only: bool = False, *, create: bool = True) -> Store:
    """The store for a resolved database target.

    For an embedded DuckDB file (PostgreSQL sessions are the same either way):
    - `read_only`: opened read-only, so it works on a read-only file and beside other readers
      (`show`, `health`, `once --dry-run`); never created.
    - `create`: a missing file, and its folder, are created. The CLI passes False to every
      command but `migrate` and `demo`, which then fail on a missing file with a message
      that says to run them (a mistyped path must not silently become a new, empty database).
    """
    tables = Tables(schema=target.schema, source=target.source)
    if target.kind == "duckdb":
        from montage_vec.stores.backends.duckdb import DuckDBBackend

        backend = DuckDBBackend(
            target.location,
            read_only=read_only,
            memory_limit=target.duckdb_memory_limit,
            create=create,
            temp_directory=target.duckdb_temp_directory,
        )
        return Store(backend, tables)
    from montage_vec.stores.backends.postgres import PostgresBackend

    backend_pg = PostgresBackend(
        target.location,
        read_uri=target.read_location,
        session_options=target.session_options,
        read_max_lag=target.read_max_lag,
    )
    return Store(backend_pg, tables)


def require_database(target: DatabaseTarget) -> None:
    """SchemaNotMigratedError now when an embedded file is missing (a server is asked only by a run)."""
    if target.kind == "duckdb":
        from montage_vec.stores.backends.duckdb import require_file

        require_file(target.location)


__all__ = [
    "AdminStore",
    "CheckinSource",
    "ChunkWrite",
    "JobStore",
    "RunRecord",
    "SqlSession",
    "Store",
    "Tables",
    "WriteOutcome",
    "open_store",
    "require_database",
]
