"""The relations a session's statements name: the job's own tables and the check-in source."""

from __future__ import annotations

from dataclasses import dataclass, field

from montage_vec.config.relation import DEFAULT_SOURCE, RelationName
from montage_vec.stores import migrations
from montage_vec.stores.render import Identifier

# The job's own tables (montage_changes only on PostgreSQL), named by placeholder.
JOB_TABLES = (
    "montages",
    "montage_items",
    "montage_job_runs",
    "montage_job_watermarks",
    "montage_job_leases",
    "montage_retry_users",
    "montage_events",
    "montage_changes",
)


@dataclass(frozen=True)
class Tables:
    """The relations statements name by placeholder: the job's tables and the check-in source."""

    schema: str | None = None  # None: the connection's current schema
    source: RelationName = field(default_factory=lambda: RelationName(DEFAULT_SOURCE))

    @property
    def source_identifier(self) -> Identifier:
        return Identifier(self.source.name, self.source.schema)

    def placeholders(self) -> dict[str, Identifier]:
        names = {table: table for table in JOB_TABLES} | {"schema_migrations": migrations.MIGRATIONS_TABLE}
        placeholders = {placeholder: Identifier(name, self.schema) for placeholder, name in names.items()}
        return {**placeholders, "checkins": self.source_identifier}
