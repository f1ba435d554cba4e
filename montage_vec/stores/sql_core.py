"""The plumbing every SQL session shares: one connection, units of work, rendering, running.

Every operation runs in a unit: a transaction whose driver errors are classified by
`faults.store_error`, so the job sees the same StoreError for the same fault on DuckDB and
PostgreSQL. `SqlSession` (session.py) and its run bookkeeping (bookkeeping.py) build on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

import polars as pl

from montage_vec.errors import MontageVecError
from montage_vec.stores import statements
from montage_vec.stores.backends.base import Connection, Dialect
from montage_vec.stores.faults import Fault, FaultKind, store_error
from montage_vec.stores.render import SqlValue, render
from montage_vec.stores.tables import Tables


class SqlCore:
    """A connection with the job's table names; use from one thread, as a context manager."""

    def __init__(self, connection: Connection, tables: Tables | None = None) -> None:
        self._connection = connection
        self._dialect = connection.dialect
        self._tables = tables or Tables()
        self._values: dict[str, SqlValue] = {
            **self._tables.placeholders(),
            "json": self._dialect.json_type,
            "json_object": self._dialect.json_object,
        }

    @property
    def connection(self) -> Connection:
        return self._connection

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def tables(self) -> Tables:
        return self._tables

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    @contextmanager
    def unit(self, *, write: bool = False) -> Iterator[None]:
        """One transaction; a driver error leaves it as the classified StoreError."""
        try:
            with self._connection.transaction(write=write):
                yield
        except MontageVecError:
            raise
        except Exception as exc:
            fault = self._connection.fault(exc)
            if fault is None:
                raise
            if write and fault.unclassified and self._alive():
                # No SQLSTATE, yet the connection works: the rows broke the write (e.g. a value
                # the driver cannot encode for COPY). Retrying cannot help; splitting the chunk can.
                fault = Fault(FaultKind.DATA, f"write failed on a live connection: {fault.message}")
            raise store_error(fault) from None

    def _alive(self) -> bool:
        try:
            with self._connection.transaction(write=False):
                self._connection.execute(statements.PING)
        except Exception:
            return False
        return True

    def sql(self, template: str, **values: SqlValue) -> str:
        return render(template, self._dialect.name, {**self._values, **values})

    def run(self, template: str, parameters: Sequence[Any] = (), **values: SqlValue) -> list[tuple[Any, ...]]:
        return self._connection.execute(self.sql(template, **values), parameters)

    def scalar(self, template: str, parameters: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None without rows), in a unit of its own."""
        with self.unit():
            rows = self.run(template, parameters)
        return rows[0][0] if rows else None

    def users(self, template: str, **values: SqlValue) -> pl.Series:
        """The "user_id" column of a query, in a unit of its own."""
        sql = self.sql(template, **values)
        with self.unit():
            return self._connection.fetch_frame(sql)["user_id"]
