"""Checking that a database is fit to run: the job's tables migrated, shaped as the job expects
and readable by the role, and the source with the contract's columns. Every run, `health`
and `show` call `check_schema`; `migrate` checks the same after applying.

A table that is missing (exit 3: run `migrate`) and one the role may not read (exit 77,
naming the table and the privilege) are told apart: the catalogs list both, where
PostgreSQL's information_schema would hide the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from montage_vec.errors import PermissionStoreError, SchemaStoreError
from montage_vec.stores import catalog_sql, migrations
from montage_vec.stores.faults import GRANTS
from montage_vec.stores.render import Identifier
from montage_vec.stores.source import (
    EXPECTED_COLUMNS,
    SourceRelation,
    applied_migrations,
    capture_installed,
    describe_missing,
    resolve_source,
)
from montage_vec.stores.statements import CHECKIN_COLUMNS

if TYPE_CHECKING:
    from montage_vec.stores.session import SqlSession


def check_schema(session: SqlSession) -> SourceRelation:
    """SchemaStoreError naming what is wrong, unless the job's tables and the source are usable;
    PermissionStoreError naming the table and the privilege when the role may not read one."""
    available = migrations.package_migrations(session.dialect.name)
    tables = job_tables(session)
    applied = None
    if tables.recorded:
        require_readable(session, tables)  # before reading the migrations table
        with session.unit():
            applied = applied_migrations(session)
    else:
        require_shaped(session, tables)  # `migrate` would refuse these: say why now
        require_readable(session, tables)
    migrations.require_migrated(available, applied, session.dialect.name)
    require_shaped(session, tables)
    _require_present(session, tables)
    return check_source(session)


def check_source(session: SqlSession) -> SourceRelation:
    """The source, resolved; SchemaStoreError when it is missing or lacks contract columns."""
    source = resolve_source(session)
    if source is None:
        raise SchemaStoreError(
            f"the check-in source {session.tables.source} does not exist: set MONTAGE_SOURCE to the "
            "application's check-ins table or view (README, \"Adopting an application's database\")"
        )
    if missing := [column for column in CHECKIN_COLUMNS if column not in source.columns]:
        raise SchemaStoreError(
            f"the check-in source {source} lacks column(s) {', '.join(missing)}: map the application's "
            "table with a view that has the contract's columns (README, \"Adopting an application's database\")"
        )
    return source


def check_job_tables(session: SqlSession) -> None:
    """SchemaStoreError when a table of the job's name lacks columns the job needs or is missing;
    PermissionStoreError when the role may not read one."""
    tables = job_tables(session)
    require_shaped(session, tables)
    require_readable(session, tables)
    _require_present(session, tables)


@dataclass(frozen=True)
class JobTables:
    """The tables of the job's names in its schema, as the catalog lists them."""

    columns: dict[str, set[str]]  # table -> its columns
    unreadable: list[str]  # tables the role may not SELECT from
    schema_usable: bool  # whether the role has USAGE on the schema
    schema: str | None  # the schema's name; None: the current schema, which the role may not use

    @property
    def recorded(self) -> bool:
        """Whether the migrations table exists (readable or not)."""
        return migrations.MIGRATIONS_TABLE in self.columns


def job_tables(session: SqlSession) -> JobTables:
    expected = EXPECTED_COLUMNS[session.dialect.name]
    with session.unit():
        rows = session.run(catalog_sql.SCHEMA_COLUMNS[session.dialect.name], [session.tables.schema])
        schema = session.tables.schema
        if schema is None:
            [(schema,)] = session.run(catalog_sql.CURRENT_SCHEMA)
    columns: dict[str, set[str]] = {}
    unreadable: set[str] = set()
    usable = True
    for table, column, schema_usable, readable in rows:
        if table in expected:
            columns.setdefault(table, set()).add(column)
            usable = usable and bool(schema_usable)
            if not readable:
                unreadable.add(table)
    return JobTables(columns, sorted(unreadable), usable and schema is not None, schema)


def _where(session: SqlSession) -> str:
    return f"schema {session.tables.schema}" if session.tables.schema else "the current schema"


def require_shaped(session: SqlSession, tables: JobTables) -> None:
    found = tables.columns
    misshapen = [
        describe_missing(table, [column for column in columns if column not in found[table]])
        for table, columns in EXPECTED_COLUMNS[session.dialect.name].items()
        if table in found and not set(columns) <= found[table]
    ]
    if misshapen:
        raise SchemaStoreError(
            f"{'; '.join(misshapen)} in {_where(session)}: a table of the job's name that the job cannot use "
            "(another application's, or altered by hand); set MONTAGE_SCHEMA to keep the job's tables "
            "in a schema of their own"
        )


def require_readable(session: SqlSession, tables: JobTables) -> None:
    """PermissionStoreError naming the privilege, when the role may not read a job's table that exists."""
    if tables.schema is None:
        raise PermissionStoreError(
            "no schema of the role's search_path exists or is usable by the role: it needs USAGE on the "
            f"job's schema (MONTAGE_SCHEMA; by default the current schema, usually public); {GRANTS}"
        )
    if tables.columns and not tables.schema_usable:
        raise PermissionStoreError(f"the role lacks USAGE on schema {tables.schema}, the job's schema; {GRANTS}")
    if tables.unreadable:
        raise PermissionStoreError(
            f"the role lacks SELECT on table(s) {', '.join(tables.unreadable)} in schema {tables.schema}: "
            f"the job reads and writes its own tables (SELECT, INSERT, UPDATE and DELETE; SELECT on "
            f"{migrations.MIGRATIONS_TABLE}); {GRANTS}"
        )


def _require_present(session: SqlSession, tables: JobTables) -> None:
    if absent := [table for table in EXPECTED_COLUMNS[session.dialect.name] if table not in tables.columns]:
        where = _where(session)
        raise SchemaStoreError(f"table(s) {', '.join(absent)} missing in {where} although migrations are recorded")


def source_warnings(session: SqlSession, source: SourceRelation) -> list[str]:
    """What `health` reports without failing: missing recommended indexes, an invisible watermark guard."""
    if session.dialect.name != "postgresql":
        return []
    warnings: list[str] = []
    if source.kind == "table":
        warnings.extend(
            f"no index on {source} starts with {column}: runs scan the table; "
            "`montage-vec migrate --source-indexes` creates it without blocking writers"
            for column, _ in catalog_sql.SOURCE_INDEXES
            if column not in source.indexed_columns
        )
    if not capture_installed(session, source):
        with session.unit():
            [(sees_all,)] = session.run(catalog_sql.SEES_ALL_SESSIONS)
        if not sees_all:
            warnings.append(
                "the job's role cannot see other roles' open transactions, which the watermark must wait for: "
                "GRANT pg_read_all_stats to it, or install the capture triggers"
            )
    return warnings


def tables_with_rows(session: SqlSession) -> list[str]:
    """The database's tables holding at least one row, besides the migration history (`demo`)."""
    filled = []
    with session.unit():
        for schema, name in session.run(catalog_sql.BASE_TABLES, [migrations.MIGRATIONS_TABLE]):
            if session.run(catalog_sql.HAS_ROWS, relation=Identifier(name, schema))[0][0]:
                filled.append(name if schema == "main" else f"{schema}.{name}")
    return filled
