"""Stores: where check-ins come from and montages go (DuckDB embedded, PostgreSQL in production)."""

from __future__ import annotations

from montage_vec.config.database import DatabaseTarget
from montage_vec.stores.base import CheckinSource, ChunkWrite, RunRecord, Store, StoreSession, WriteOutcome


def open_store(target: DatabaseTarget) -> Store:
    """The store for a resolved database target."""
    if target.kind == "duckdb":
        from montage_vec.stores.duckdb_store import DuckDBStore

        return DuckDBStore(target.location)
    from montage_vec.stores.postgres_store import PostgresStore

    return PostgresStore(target.location, read_location=target.read_location)


__all__ = ["CheckinSource", "ChunkWrite", "RunRecord", "Store", "StoreSession", "WriteOutcome", "open_store"]
