"""Direct database access for tests, on either backend, with no job code involved."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import duckdb
import polars as pl

PG_ADMIN_URL = os.environ.get("MONTAGE_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")


def is_duckdb(url: str) -> bool:
    return url.startswith("duckdb:")


def duckdb_path(url: str) -> str:
    return url[len("duckdb:///") :]


def admin_execute(sql: str) -> None:
    """One statement on the server's admin database (CREATE/DROP DATABASE, roles)."""
    with pg.connect(PG_ADMIN_URL, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(sql)


def postgres_url_of(name: str) -> str:
    """The URL of database `name` on the test server."""
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def postgres_database(template: str | None = None, prefix: str = "montage_test") -> Iterator[str]:
    """A new database with a unique name (a copy of `template` if given), dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin_execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield postgres_url_of(name)
    finally:
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(url: str, sql: str) -> pl.DataFrame:
    """Run a read query directly against the database; on PostgreSQL its transaction is rolled back."""
    if is_duckdb(url):
        with duckdb.connect(duckdb_path(url), read_only=True) as connection:
            connection.execute("SET TimeZone = 'UTC'")
            return connection.sql(sql).pl()
    with pg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        frame = pl.from_arrow(cursor.fetch_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def execute(url: str, *statements: str) -> None:
    """Run statements directly against the database, each committed on its own."""
    if is_duckdb(url):
        with duckdb.connect(duckdb_path(url)) as connection:
            for sql in statements:
                connection.execute(sql)
        return
    with pg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def count(url: str, table: str) -> int:
    return int(query(url, f'SELECT count(*) AS n FROM "{table}"')["n"][0])


def sql_literal(value: Any) -> str:
    """A value as SQL text that PostgreSQL and DuckDB both read (tests' own constants only)."""
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::TIMESTAMPTZ"
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(sql_literal(item) for item in value) + "]::TEXT[]" if value else "ARRAY[]::TEXT[]"
    return "'" + str(value).replace("'", "''") + "'"
