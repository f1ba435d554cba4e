"""What the database holds: the check-in source relation and the shape the job's tables must have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from montage_vec.config.relation import RelationName
from montage_vec.stores import catalog_sql, change_sql, migrations
from montage_vec.stores.render import Identifier
from montage_vec.stores.statements import RUN_COLUMNS

if TYPE_CHECKING:
    from montage_vec.stores.session import SqlSession

_COMMON_TABLES: dict[str, tuple[str, ...]] = {
    "montages": (
        "id", "user_id", "kind", "interest", "item_count", "generated_at", "cache_expires_at", "valid_until", "job_id",
    ),
    "montage_items": ("montage_id", "position", "checkin_id", "checkin_created_at", "widget_type", "widget_metadata"),
    "montage_job_runs": RUN_COLUMNS,
    "montage_job_watermarks": ("shard", "watermark", "job_id", "updated_at"),
    "montage_job_leases": ("shard", "token", "job_id", "acquired_at"),
    "montage_retry_users": ("user_id", "error", "attempts", "first_failed_at", "last_failed_at", "job_id"),
    "montage_events": ("id", "type", "aggregate_id", "job_id", "occurred_at", "payload"),
    migrations.MIGRATIONS_TABLE: ("version", "name", "checksum", "applied_at"),
}  # fmt: skip

# The columns the job reads or writes in its own tables, per backend.
EXPECTED_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "duckdb": _COMMON_TABLES,
    "postgresql": {**_COMMON_TABLES, "montage_changes": ("xid", "user_id")},
}


@dataclass(frozen=True)
class SourceRelation:
    """The check-in source as the database resolved it."""

    schema: str
    name: str
    kind: str  # 'table', 'view' or 'other'
    columns: frozenset[str]
    indexed_columns: frozenset[str]  # leading columns of its valid indexes (PostgreSQL)

    @property
    def identifier(self) -> Identifier:
        return Identifier(self.name, self.schema)

    def __str__(self) -> str:
        return str(RelationName(self.name, self.schema))


def resolve_source(session: SqlSession) -> SourceRelation | None:
    """The source relation with its columns and indexes; None when no such relation exists."""
    with session.unit():
        return resolve_source_in_unit(session)


def resolve_source_in_unit(session: SqlSession) -> SourceRelation | None:
    """`resolve_source` inside the caller's transaction."""
    wanted = session.tables.source
    dialect = session.dialect.name
    rows = session.run(catalog_sql.RESOLVE_RELATION[dialect], [wanted.schema, wanted.name])
    if not rows:
        return None
    [(schema, name, kind)] = rows
    columns = frozenset(column for (column,) in session.run(catalog_sql.RELATION_COLUMNS, [schema, name]))
    indexed: frozenset[str] = frozenset()
    if dialect == "postgresql":
        quoted = Identifier(name, schema).sql(dialect)
        indexed = frozenset(column for (column,) in session.run(catalog_sql.INDEX_LEADING_COLUMNS, [quoted]))
    return SourceRelation(schema, name, kind, columns, indexed)


def capture_installed(session: SqlSession, source: SourceRelation | None = None) -> bool:
    """Whether all three capture triggers are installed and enabled on the source table (PostgreSQL).

    Without a resolved `source`, the configured name is resolved by the query itself (one
    round trip at every run's start, instead of the catalog reads of `resolve_source`).
    """
    if session.dialect.name != "postgresql":
        return False
    identifier = source.identifier if source is not None else session.tables.source_identifier
    with session.unit():
        names = list(change_sql.CAPTURE_TRIGGERS)
        [(installed,)] = session.run(change_sql.INSTALLED_CAPTURE_TRIGGERS, [identifier.sql("postgresql"), names])
    return int(installed) == len(change_sql.CAPTURE_TRIGGERS)


def applied_migrations(session: SqlSession) -> list[migrations.AppliedMigration]:
    rows = session.run(migrations.APPLIED_MIGRATIONS)
    return [migrations.AppliedMigration(int(version), name, checksum) for version, name, checksum in rows]


def describe_missing(table: str, columns: list[str]) -> str:
    return f"table {table} lacks column(s) {', '.join(columns)}"
