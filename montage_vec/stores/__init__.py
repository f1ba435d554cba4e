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


def open_store(target: DatabaseTarget, read_only: bool = False) -> Store:
    """The store for a resolved database target.

    `read_only` is for checks (health): an embedded file is then neither created nor locked
    for writing. PostgreSQL sessions are the same either way.
    """
    tables = Tables(schema=target.schema, source=target.source)
    if target.kind == "duckdb":
        from montage_vec.stores.backends.duckdb import DuckDBBackend

        backend = DuckDBBackend(target.location, read_only=read_only, memory_limit=target.duckdb_memory_limit)
        return Store(backend, tables)
    from montage_vec.stores.backends.postgres import PostgresBackend

    backend_pg = PostgresBackend(
        target.location,
        read_uri=target.read_location,
        session_options=target.session_options,
        read_max_lag=target.read_max_lag,
    )
    return Store(backend_pg, tables)


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
]
