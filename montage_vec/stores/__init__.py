"""Stores: where check-ins come from and montages go (DuckDB embedded, PostgreSQL in production)."""

from __future__ import annotations

from montage_vec.config.database import DatabaseTarget
from montage_vec.stores.base import CheckinSource, ChunkWrite, RunRecord, Store, StoreSession, WriteOutcome


def open_store(target: DatabaseTarget, read_only: bool = False) -> Store:
    """The store for a resolved database target.

    `read_only` is for checks (health): an embedded file is then neither created nor locked
    for writing. PostgreSQL sessions are the same either way.
    """
    if target.kind == "duckdb":
        from montage_vec.stores.duckdb_store import DuckDBStore

        return DuckDBStore(target.location, read_only=read_only, memory_limit=target.duckdb_memory_limit)
    from montage_vec.stores.postgres_store import PostgresStore

    return PostgresStore(target.location, read_location=target.read_location)


__all__ = ["CheckinSource", "ChunkWrite", "RunRecord", "Store", "StoreSession", "WriteOutcome", "open_store"]
