"""Direct database access for tests, on either backend, with no job code involved.

The PostgreSQL server is the test session's: MONTAGE_TEST_PG_URL, which names the server's
`postgres` database as a superuser. tests.support.session_cluster sets it to a cluster of the
session's own unless it was given, so it is read when used, never at import.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import adbc_driver_postgresql.dbapi as pg
import duckdb
import polars as pl

ADMIN_URL_VARIABLE = "MONTAGE_TEST_PG_URL"


def admin_url() -> str:
    """The test server's `postgres` database, as a superuser."""
    url = os.environ.get(ADMIN_URL_VARIABLE)
    if not url:
        raise RuntimeError(f"{ADMIN_URL_VARIABLE} is not set: tests.support.session_cluster did not run")
    return url


def pg_host() -> str:
    """The test server's host, for tests that configure DB_HOST or write a URL themselves."""
    return urlsplit(admin_url()).hostname or "localhost"


def pg_port() -> int:
    """The test server's port."""
    return urlsplit(admin_url()).port or 5432  # libpq's default


def is_duckdb(url: str) -> bool:
    return url.startswith("duckdb:")


def duckdb_path(url: str) -> str:
    return url[len("duckdb:///") :]


def admin_execute(sql: str) -> None:
    """One statement on the server's admin database (CREATE/DROP DATABASE, roles)."""
    with pg.connect(admin_url(), autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(sql)


def postgres_url_of(name: str) -> str:
    """The URL of database `name` on the test server."""
    return admin_url().rsplit("/", 1)[0] + f"/{name}"


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
