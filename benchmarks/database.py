"""The benchmark's own handle on the database under test, and its PostgreSQL (ADBC) implementation.

Both backends (DuckDB: `duck_database.py`) expose the same small API: statements, rows, Arrow
in and out, transactions. A DuckDB file admits one read-write process, so `close()` must be
called before an engine child runs.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, ClassVar, TypeAlias
from urllib.parse import urlsplit

import adbc_driver_postgresql.dbapi as pg
import pyarrow as pa

from benchmarks import cpu_stats, io_stats
from benchmarks.cpu_stats import CpuTimes
from benchmarks.io_stats import DatabaseIo, IoSnapshot, TableSize
from montage_vec.config import load_settings
from montage_vec.stores import open_store
from montage_vec.stores.backends.postgres import session_uri
from montage_vec.stores.migrations import package_migrations, source_ddl

JOB_TABLES = (
    "montage_items", "montages", "montage_events", "montage_job_runs", "montage_job_watermarks",
    "montage_retry_users",
)  # fmt: skip
_MONTAGE_IDENTIFIER = re.compile(r'"(montages|montage_items)')

# pa.Table or pa.RecordBatchReader (pyarrow ships no type hints).
Arrowish: TypeAlias = Any


class BenchDatabase(ABC):
    backend: ClassVar[str]
    json_type: ClassVar[str]

    def __init__(self) -> None:
        self._in_transaction = False

    @property
    @abstractmethod
    def url(self) -> str:
        """DATABASE_URL for the engine's child process."""

    @property
    @abstractmethod
    def display_name(self) -> str: ...

    @abstractmethod
    def execute(self, sql: str, params: list[Any] | None = None) -> None: ...

    @abstractmethod
    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def arrow(self, sql: str) -> pa.Table: ...

    @abstractmethod
    def reader(self, sql: str) -> Any:
        """A context manager yielding a RecordBatchReader that streams the result."""

    @abstractmethod
    def ingest(self, table: str, data: Arrowish, create: bool) -> None:
        """Bulk-load Arrow data: a new unindexed table (create) or append to an existing one."""

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[None]: ...

    @abstractmethod
    def close(self) -> None:
        """Release the connection (reopened lazily); the DuckDB file lock goes with it."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the benchmark database."""

    def keep_or_drop(self, keep: bool) -> str | None:
        """At the end of a benchmark: close and keep the database (saying where), or delete it."""
        if not keep:
            self.drop()
            return None
        self.close()
        return f"kept {self.display_name} (DATABASE_URL={self.url})"

    @abstractmethod
    def size_bytes(self) -> int: ...

    @abstractmethod
    def server_version(self) -> str: ...

    @abstractmethod
    def io_settings(self) -> DatabaseIo:
        """The memory the database works with, for the report's "Database I/O" (sizes and runs come later)."""

    def table_sizes(self, tables: tuple[str, ...]) -> list[TableSize]:
        return []  # per-table sizes are reported for PostgreSQL only

    def io_snapshot(self) -> IoSnapshot:
        """The database's block counters (PostgreSQL only) and the machine's disk reads, now."""
        return IoSnapshot(None, io_stats.disk_read_bytes())

    def cpu_times(self) -> CpuTimes:
        """CPU seconds so far: this process and its children, the server's (where it runs here), the machine's."""
        return cpu_stats.cpu_times(local_server=False)  # DuckDB's work is the job's own

    def settle(self) -> None:
        """Flush dirty pages now rather than during the next timed step, and let go of the DuckDB file."""
        with suppress(Exception):  # PostgreSQL's CHECKPOINT needs a privileged role; it only reduces noise
            self.execute("CHECKPOINT")
        self.close()

    def settle_checkins(self) -> None:
        """Statistics for the freshly loaded check-ins."""
        self.execute('ANALYZE "checkins"')

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        found = self.rows(sql, params)
        return found[0][0] if found else None

    def ddl(self, prefix: str = "") -> list[str]:
        """The product's DDL statements; with a prefix, only the montage tables, renamed (indexes too)."""
        own_checkins = [s.replace("{checkins}", '"checkins"') for s in source_ddl(self.backend, "own_checkins")]
        statements = own_checkins + [s for m in package_migrations(self.backend) for s in m.statements()]
        if not prefix:
            return statements
        # The montage tables' columns, keys, indexes and reference triggers, and whatever else is
        # named after them (functions, DuckDB's rebuilt item table), renamed; not the capture triggers.
        wanted = [
            s for s in statements if _MONTAGE_IDENTIFIER.search(s) and '"checkins"' not in s and "capture" not in s
        ]
        return [_MONTAGE_IDENTIFIER.sub(lambda m: f'"{prefix}{m.group(1)}', s) for s in wanted]

    def migrate(self) -> None:
        """The product's own tracked `migrate`, on a connection of its own (ours is closed first)."""
        self.close()
        with open_store(load_settings(database_url=self.url).database()) as store, store.session() as session:
            session.migrate()

    def install_capture_triggers(self) -> str:
        """The product's `migrate --capture-triggers`, on a connection of its own."""
        self.close()
        with open_store(load_settings(database_url=self.url).database()) as store, store.session() as session:
            return session.install_capture_triggers()

    def create_montage_tables(self, prefix: str) -> None:
        """Fresh `<prefix>montages` / `<prefix>montage_items` with the product's columns, keys and indexes."""
        with self.transaction():
            self.execute(f'DROP TABLE IF EXISTS "{prefix}montage_items"')
            self.execute(f'DROP TABLE IF EXISTS "{prefix}montages"')
            for statement in self.ddl(prefix):
                self.execute(statement)

    def drop_tables(self, *names: str) -> None:
        for name in names:
            self.execute(f'DROP TABLE IF EXISTS "{name}"')

    @abstractmethod
    def reset_job_tables(self) -> str:
        """Empty the engine's tables so that the next run writes everything afresh; says how."""


class PostgresDatabase(BenchDatabase):
    backend = "postgresql"
    json_type = "jsonb"

    def __init__(self, admin_url: str, name: str) -> None:
        super().__init__()
        self.admin_url = admin_url
        self.name = name
        self._url = urlsplit(admin_url)._replace(path=f"/{name}").geturl()
        self._connection: Any | None = None

    @classmethod
    def create(cls, admin_url: str, name: str) -> PostgresDatabase:
        database = cls(admin_url, name)
        database._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        database._admin(f'CREATE DATABASE "{name}"')
        return database

    def settle_checkins(self) -> None:
        """VACUUM ANALYZE: freshly loaded rows get their hint bits and visibility map now, not
        during the first timed run (which would otherwise dirty every page it reads)."""
        with pg.connect(self._url, autocommit=True) as connection, connection.cursor() as cursor:
            cursor.execute('VACUUM (ANALYZE) "checkins"')

    def _admin(self, sql: str) -> None:
        with pg.connect(self.admin_url, autocommit=True) as connection, connection.cursor() as cursor:
            cursor.execute(sql)

    @property
    def url(self) -> str:
        return self._url

    @property
    def display_name(self) -> str:
        return f"PostgreSQL database {self.name}"

    def _conn(self) -> Any:
        if self._connection is None:
            self._connection = pg.connect(session_uri(self._url))
        return self._connection

    def _done(self) -> None:
        if not self._in_transaction:
            self._conn().commit()

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        try:
            with self._conn().cursor() as cursor:
                cursor.execute(sql, params)
        except BaseException:
            self._rollback()
            raise
        self._done()

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            with self._conn().cursor() as cursor:
                cursor.execute(sql, params)
                found = [tuple(row) for row in cursor.fetchall()]
        except BaseException:
            self._rollback()
            raise
        self._done()
        return found

    def arrow(self, sql: str) -> pa.Table:
        with self.reader(sql) as batches:
            return batches.read_all()

    @contextmanager
    def reader(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        # No bound parameters: the driver streams the result with binary COPY.
        try:
            with self._conn().cursor() as cursor:
                cursor.execute(sql)
                yield cursor.fetch_record_batch()
        except BaseException:
            self._rollback()
            raise
        self._done()

    def ingest(self, table: str, data: Arrowish, create: bool) -> None:
        try:
            with self._conn().cursor() as cursor:
                cursor.adbc_ingest(table, data, mode="create" if create else "append")
        except BaseException:
            self._rollback()
            raise
        self._done()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._in_transaction = False
            self._rollback()
            raise
        self._in_transaction = False
        self._conn().commit()

    def _rollback(self) -> None:
        if self._connection is not None and not self._in_transaction:
            with suppress(pg.Error):
                self._connection.rollback()

    def close(self) -> None:
        if self._connection is not None:
            with suppress(pg.Error):
                self._connection.close()
            self._connection = None

    def drop(self) -> None:
        self.close()
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def size_bytes(self) -> int:
        return int(self.scalar("SELECT pg_database_size(current_database())"))

    def server_version(self) -> str:
        return str(self.scalar("SELECT current_setting('server_version')"))

    def io_settings(self) -> DatabaseIo:
        settings, block_size = io_stats.pg_settings(self.rows)
        return DatabaseIo(self.backend, settings, block_size)

    def table_sizes(self, tables: tuple[str, ...]) -> list[TableSize]:
        return io_stats.pg_table_sizes(self.rows, tables)

    def io_snapshot(self) -> IoSnapshot:
        # Our own session too must end for its statistics to be published (see pg_counters).
        self.close()
        return IoSnapshot(io_stats.pg_counters(self._url), io_stats.disk_read_bytes())

    def cpu_times(self) -> CpuTimes:
        return cpu_stats.cpu_times(local_server=cpu_stats.is_local(self._url))

    def reset_job_tables(self) -> str:
        self.execute("TRUNCATE " + ", ".join(f'"{name}"' for name in JOB_TABLES))
        return "TRUNCATE of montages, montage_items, the outbox and the job's bookkeeping tables"
