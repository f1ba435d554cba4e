"""Setting a database up for the job, and checking that it is fit to run.

- `migrate`: the job's own tables in MONTAGE_SCHEMA (created when missing), by tracked
  migrations; then, only when the source is the default `checkins` and no relation of that
  name exists, the job's own check-ins table (with capture triggers on PostgreSQL).
- `install_capture_triggers` and `create_source_indexes`: the only operations that touch an
  application's relation, each only on request (`migrate --capture-triggers`,
  `migrate --source-indexes`).

`migrate` with nothing to do takes no lock and runs no DDL, so the job's own
least-privileged role may run it (sql/postgresql/roles.sql). Checking a database: checks.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from montage_vec.config.relation import DEFAULT_SOURCE, RelationName
from montage_vec.errors import SchemaStoreError
from montage_vec.stores import catalog_sql, checks, migrations
from montage_vec.stores.render import Identifier, SqlValue
from montage_vec.stores.source import (
    SourceRelation,
    applied_migrations,
    capture_installed,
    resolve_source,
    resolve_source_in_unit,
)

if TYPE_CHECKING:
    from montage_vec.stores.session import SqlSession

MIGRATION_LOCK = "migrate"
# How `migrate` reports creating the job's own check-ins table (sql/<backend>/source/own_checkins.sql).
OWN_SOURCE_STEP = "source/own_checkins"
CAPTURE_FUNCTION = "montage_capture_changes"


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
    tables = checks.job_tables(session)
    applied_now: list[str] = []
    if _pending(session, tables, available):
        if not tables.recorded:
            checks.require_shaped(session, tables)  # an application's tables of our names
        try:
            while (migration := _apply_next(session, available)) is not None:
                applied_now.append(migration)
        finally:
            if reset := catalog_sql.RESET_SCHEMA.get(backend):
                session.connection.execute(reset)
    checks.check_job_tables(session)
    if _create_own_source(session):
        applied_now.append(OWN_SOURCE_STEP)
    checks.check_source(session)  # the job's tables are ready; a run would fail on this next
    return applied_now


def _pending(session: SqlSession, tables: checks.JobTables, available: list[migrations.Migration]) -> bool:
    """Whether `migrate` has migrations to apply (read without a lock: a concurrent `migrate`
    only ever applies more, and `_apply_next` checks again under the lock)."""
    if not tables.recorded:
        return True
    checks.require_readable(session, tables)
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
