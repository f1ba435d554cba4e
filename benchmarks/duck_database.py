"""The benchmark's handle on an embedded DuckDB file (see `database.py` for the shared API)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from benchmarks.database import JOB_TABLES, Arrowish, BenchDatabase
from benchmarks.io_stats import DatabaseIo
from montage_vec.config import Settings

MEMORY_LIMIT_VARIABLE = "DUCKDB_MEMORY_LIMIT"


class DuckDatabase(BenchDatabase):
    backend = "duckdb"
    json_type = "JSON"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path.resolve()
        self._connection: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def create(cls, path: Path) -> DuckDatabase:
        database = cls(path)
        database.drop()
        path.parent.mkdir(parents=True, exist_ok=True)
        return database

    @property
    def url(self) -> str:
        return f"duckdb:///{self.path}"  # an absolute path gives duckdb:////abs/path

    @property
    def display_name(self) -> str:
        return f"DuckDB file {self.path}"

    def _conn(self) -> duckdb.DuckDBPyConnection:
        if self._connection is None:
            self._connection = duckdb.connect(str(self.path))
            self._connection.execute("SET TimeZone = 'UTC'")
        return self._connection

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        self._conn().execute(sql, params or []).fetchall()

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._conn().execute(sql, params or []).fetchall()]

    def arrow(self, sql: str) -> pa.Table:
        return self._conn().sql(sql).to_arrow_table()

    @contextmanager
    def reader(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        yield self._conn().sql(sql).to_arrow_reader(122_880)

    def ingest(self, table: str, data: Arrowish, create: bool) -> None:
        connection = self._conn()
        connection.register("bench_ingest_source", data)
        try:
            verb = f'CREATE TABLE "{table}" AS' if create else f'INSERT INTO "{table}"'
            connection.execute(f"{verb} SELECT * FROM bench_ingest_source").fetchall()  # noqa: S608 - our names
        finally:
            connection.unregister("bench_ingest_source")

    def insert_select(self, table: str, data: Arrowish, select_list: str) -> None:
        """`INSERT INTO table SELECT <select_list> FROM <the Arrow data>`, scanning the Arrow data in place."""
        connection = self._conn()
        connection.register("bench_insert_source", data)
        try:
            sql = f'INSERT INTO "{table}" SELECT {select_list} FROM bench_insert_source'  # noqa: S608 - our names
            connection.execute(sql).fetchall()
        finally:
            connection.unregister("bench_insert_source")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def drop(self) -> None:
        self.close()
        for leftover in (self.path, self.path.with_name(self.path.name + ".wal")):
            leftover.unlink(missing_ok=True)

    def size_bytes(self) -> int:
        self.execute("CHECKPOINT")
        return self.path.stat().st_size

    def server_version(self) -> str:
        return str(duckdb.__version__)

    def io_settings(self) -> DatabaseIo:
        # The engine's children inherit the benchmark's environment, so this is the limit they run with.
        given = os.environ.get(MEMORY_LIMIT_VARIABLE)
        default = Settings.model_fields["duckdb_memory_limit"].default
        return DatabaseIo(self.backend, {MEMORY_LIMIT_VARIABLE: given or f"{default} (default)"})

    def reset_job_tables(self) -> str:
        # DELETE leaves ART index entries and row groups behind; dropping gives a truly fresh table.
        with self.transaction():
            self.drop_tables(*JOB_TABLES)
            for statement in self.ddl():
                if '"checkins"' not in statement:
                    self.execute(statement)
        self.execute("CHECKPOINT")
        return "DROP and re-create of montages, montage_items, the outbox and the job's bookkeeping tables"
