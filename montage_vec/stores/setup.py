"""Setting a database up for the job, and checking that it is fit to run.

- `migrate`: the job's own tables in MONTAGE_SCHEMA (created when missing), by tracked
  migrations; then, only when the source is the default `checkins` and no relation of that
  name exists, the job's own check-ins table (with capture triggers on PostgreSQL).
- `install_capture_triggers` and `create_source_indexes`: the only operations that touch an
  application's relation, each only on request (`migrate --capture-triggers`,
  `migrate --source-indexes`).
- `check_schema`: the job's tables are migrated, shaped as the job expects and readable by
  the role, and the source has the contract's columns. Every run, `health` and `show` call it.

A table that is missing (exit 3: run `migrate`) and one the role may not read (exit 77,
naming the table and the privilege) are told apart: the catalogs list both, where
PostgreSQL's information_schema would hide the second. `migrate` with nothing to do takes
no lock and runs no DDL, so the job's own least-privileged role may run it
(sql/postgresql/roles.sql).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from montage_vec.config.relation import DEFAULT_SOURCE, RelationName
from montage_vec.errors import PermissionStoreError, SchemaStoreError
from montage_vec.stores import catalog_sql, migrations
from montage_vec.stores.render import Identifier, SqlValue
from montage_vec.stores.source import (
    EXPECTED_COLUMNS,
    SourceRelation,
    applied_migrations,
    capture_installed,
    describe_missing,
    resolve_source,
    resolve_source_in_unit,
)
from montage_vec.stores.statements import CHECKIN_COLUMNS

if TYPE_CHECKING:
    from montage_vec.stores.session import SqlSession

MIGRATION_LOCK = "migrate"
# How `migrate` reports creating the job's own check-ins table (sql/<backend>/source/own_checkins.sql).
OWN_SOURCE_STEP = "source/own_checkins"
CAPTURE_FUNCTION = "montage_capture_changes"
GRANTS = "sql/postgresql/roles.sql grants what the job needs"


def migrate(session: SqlSession) -> list[str]:
    """Apply pending migrations one transaction each (serialised against concurrent `migrate`s),
    then create the job's own check-ins table if the source is the default and absent, and
    check that the source is usable.

    Returns the names of what it applied: migrations, then OWN_SOURCE_STEP if it created the table.
    With nothing to do it only reads: no lock, no DDL, no privilege beyond the job's own.
    """
    backend = session.dialect.name
    available = migrations.package_migrations(backend)
    _create_schema(session)
    tables = _job_tables(session)
    applied_now: list[str] = []
    if _pending(session, tables, available):
        if not tables.recorded:
            _require_shaped(session, tables)  # an application's tables of our names
        try:
            while (migration := _apply_next(session, available)) is not None:
                applied_now.append(migration)
        finally:
            if reset := catalog_sql.RESET_SCHEMA.get(backend):
                session.connection.execute(reset)
    check_job_tables(session)
    if _create_own_source(session):
        applied_now.append(OWN_SOURCE_STEP)
    check_source(session)  # the job's tables are ready; a run would fail on this next
    return applied_now


def check_schema(session: SqlSession) -> SourceRelation:
    """SchemaStoreError naming what is wrong, unless the job's tables and the source are usable;
    PermissionStoreError naming the table and the privilege when the role may not read one."""
    available = migrations.package_migrations(session.dialect.name)
    tables = _job_tables(session)
    applied = None
    if tables.recorded:
        _require_readable(session, tables)  # before reading the migrations table
        with session.unit():
            applied = applied_migrations(session)
    else:
        _require_shaped(session, tables)  # `migrate` would refuse these: say why now
        _require_readable(session, tables)
    migrations.require_migrated(available, applied, session.dialect.name)
    _require_shaped(session, tables)
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


def check_job_tables(session: SqlSession, *, only_existing: bool = False) -> None:
    """SchemaStoreError when a table of the job's name lacks columns the job needs (or, unless
    `only_existing`, is missing); PermissionStoreError when the role may not read one."""
    tables = _job_tables(session)
    _require_shaped(session, tables)
    _require_readable(session, tables)
    if not only_existing:
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


def _job_tables(session: SqlSession) -> JobTables:
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


def _require_shaped(session: SqlSession, tables: JobTables) -> None:
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


def _require_readable(session: SqlSession, tables: JobTables) -> None:
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


def _pending(session: SqlSession, tables: JobTables, available: list[migrations.Migration]) -> bool:
    """Whether `migrate` has migrations to apply (read without a lock: a concurrent `migrate`
    only ever applies more, and `_apply_next` checks again under the lock)."""
    if not tables.recorded:
        return True
    _require_readable(session, tables)
    with session.unit():
        applied = applied_migrations(session)
    return bool(migrations.pending_migrations(available, applied, session.dialect.name))


def install_capture_triggers(session: SqlSession) -> str:
    """Install the capture triggers on a table source; what was done, in one sentence."""
    source = _existing_source(session)
    if session.dialect.name != "postgresql":
        return "the embedded database has no concurrent writers: runs use the watermark; nothing to install"
    if source.kind != "table":
        return (
            f"{source} is a {source.kind}: triggers cannot capture its changes, so runs use the watermark "
            "with reconciliation; nothing was installed"
        )
    if capture_installed(session, source):
        return f"the capture triggers are already installed on {source}"
    with session.unit(write=True):
        session.run(catalog_sql.INSTALL_LOCK_TIMEOUT)
        _run_capture_ddl(session, source)
        session.run(catalog_sql.FORGET_WATERMARKS)
    return f"installed the capture triggers on {source}; the next run of every shard is a full run"


def create_source_indexes(session: SqlSession) -> list[str]:
    """Create the recommended indexes on a table source without blocking its writers."""
    source = _existing_source(session)
    if source.kind != "table":
        return [f"{source} is a {source.kind}: nothing to index here; index the table behind it instead"]
    if session.dialect.name != "postgresql":
        return [f"{source} is indexed when the embedded database creates it; nothing to do"]
    done: list[str] = []
    for leading, template in catalog_sql.SOURCE_INDEXES:
        if leading in source.indexed_columns:
            done.append(f"{source} already has an index led by {leading}")
            continue
        index = Identifier(f"{source.name}_montage_vec_{leading}_idx"[:63], source.schema)
        with session.unit():
            [(invalid,)] = session.run(catalog_sql.INVALID_INDEX, [index.sql("postgresql")])
        if invalid:  # left behind by an interrupted build: IF NOT EXISTS would keep it forever
            session.connection.execute_autocommit(session.sql(catalog_sql.DROP_INDEX_CONCURRENTLY, index=index))
        unqualified = Identifier(index.name)
        session.connection.execute_autocommit(session.sql(template, index=unqualified))
        done.append(f"created index {index.name} on {source} ({leading} first)")
    return done


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


def _apply_next(session: SqlSession, available: list[migrations.Migration]) -> str | None:
    with session.unit(write=True):
        session.connection.lock_transaction(MIGRATION_LOCK)
        _use_job_schema(session)
        session.run(migrations.CREATE_MIGRATIONS_TABLE)
        pending = migrations.pending_migrations(available, applied_migrations(session), session.dialect.name)
        if not pending:
            return None
        migration = pending[0]
        for statement in migration.statements():
            session.connection.execute(statement)
        record = [migration.version, migration.name, migration.checksum, datetime.now(UTC)]
        session.run(migrations.RECORD_MIGRATION, record)
    return migration.name


def _create_schema(session: SqlSession) -> None:
    schema = session.tables.schema
    if schema is None:
        return
    with session.unit(write=True):
        [(exists,)] = session.run(catalog_sql.SCHEMA_EXISTS[session.dialect.name], [schema])
        if not exists:  # CREATE SCHEMA IF NOT EXISTS would still need CREATE on the database
            session.run(catalog_sql.CREATE_SCHEMA, schema=Identifier(schema))


def _use_job_schema(session: SqlSession) -> None:
    if session.tables.schema is not None:
        quoted = Identifier(session.tables.schema).sql(session.dialect.name)
        session.connection.execute(catalog_sql.USE_SCHEMA[session.dialect.name], [quoted])


def _create_own_source(session: SqlSession) -> bool:
    if session.tables.source != RelationName(DEFAULT_SOURCE) or resolve_source(session) is not None:
        return False  # no lock taken, no DDL run, when there is nothing to create
    with session.unit(write=True):
        session.connection.lock_transaction(MIGRATION_LOCK)
        if resolve_source_in_unit(session) is not None:
            return False
        for statement in migrations.source_ddl(session.dialect.name, "own_checkins"):
            session.run(statement)
        if session.dialect.name == "postgresql":
            _run_capture_ddl(session, None)
    return True


def _run_capture_ddl(session: SqlSession, source: SourceRelation | None) -> None:
    """The capture function (in the job's schema) and the triggers, in the caller's transaction.

    The function body runs with a pinned search_path, so every name in it is qualified.
    """
    [(current,)] = session.run(catalog_sql.CURRENT_SCHEMA)
    job_schema = session.tables.schema or current
    values: dict[str, SqlValue] = {
        "capture_function": Identifier(CAPTURE_FUNCTION, job_schema),
        "montage_changes": Identifier("montage_changes", job_schema),
        "checkins": source.identifier if source is not None else session.tables.source_identifier,
    }
    for statement in migrations.source_ddl("postgresql", "capture_triggers"):
        session.connection.execute(session.sql(statement, **values))


def _existing_source(session: SqlSession) -> SourceRelation:
    source = resolve_source(session)
    if source is None:
        raise SchemaStoreError(f"the check-in source {session.tables.source} does not exist")
    return source
