"""Tracked migrations: the numbered DDL files under `sql/<backend>/` and which are applied.

A file `NNN_name.sql` is migration NNN. The table `montage_schema_migrations` records each
applied migration with a checksum of its text, so `migrate` applies only what is pending
(in order, each in its own transaction) and refuses to go on when an applied file was
edited afterwards. A schema change is always a new file; applied files never change.

The table is not called `schema_migrations` because applications (Rails, golang-migrate)
keep their own table of that name in the same schema.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from montage_vec.errors import MigrationError, SchemaNotMigratedError

MIGRATIONS_TABLE = "montage_schema_migrations"

# In a checkout (editable install) the files sit at the repository root; a wheel ships them
# inside the package as montage_vec/sql.
_CHECKOUT_SQL = Path(__file__).resolve().parents[2] / "sql"

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS {schema_migrations} (
    "version"    INTEGER PRIMARY KEY,
    "name"       VARCHAR NOT NULL,
    "checksum"   VARCHAR NOT NULL,
    "applied_at" TIMESTAMPTZ NOT NULL
)
"""
MIGRATIONS_TABLE_EXISTS = """
SELECT count(*) FROM information_schema.tables
WHERE table_schema = coalesce($1, current_schema()) AND table_name = $2
"""
APPLIED_MIGRATIONS = 'SELECT "version", "name", "checksum" FROM {schema_migrations} ORDER BY "version"'
RECORD_MIGRATION = """
INSERT INTO {schema_migrations} ("version", "name", "checksum", "applied_at") VALUES ($1, $2, $3, $4)
"""


# Migration 001 created the check-ins source and indexed it until 0.9; it now does nothing
# (see its file). Databases that applied its old text are as migrated as new ones.
SUPERSEDED_CHECKSUMS = {
    ("postgresql", 1): "b9047d636fbead326ab87324d7960441806b7ce7061f8d19d373d600a7eae8aa",
    ("duckdb", 1): "fcefeaf34949d36a9bd1d8f8840771f223bd386a01ef02ebb926a06dad6242e9",
}

DOLLAR_QUOTE = re.compile(r"\$[A-Za-z_]*\$")


def split_statements(sql: str) -> list[str]:
    """A file's statements: split at `;`, except inside a dollar-quoted body ($tag$ ... $tag$).

    Our files keep `;` out of string literals and comments, so nothing else needs parsing.
    """
    lines = (line for line in sql.splitlines() if not line.strip().startswith("--"))
    text = "\n".join(lines)
    statements: list[str] = []
    start = position = 0
    while position < len(text):
        quote = DOLLAR_QUOTE.match(text, position)
        if quote:
            end = text.find(quote.group(), quote.end())
            position = len(text) if end == -1 else end + len(quote.group())
        elif text[position] == ";":
            statements.append(text[start:position])
            start = position = position + 1
        else:
            position += 1
    statements.append(text[start:])
    return [statement.strip() for statement in statements if statement.strip()]


def source_ddl(backend: str, name: str) -> list[str]:
    """The statements of `sql/<backend>/source/<name>.sql`: templates over the source relation."""
    return split_statements((sql_directory(backend) / "source" / f"{name}.sql").read_text())


def unkeyed_checkins_ddl(backend: str) -> list[str]:
    """The job's own check-ins table (own_checkins.sql) without its primary key and indexes.

    For bulk loads that build them afterwards (the benchmarks) or never (`demo`: DuckDB holds an
    ART index whole in memory while it writes the table, about 3 GB for 20 M check-ins).
    """
    tables = [s for s in source_ddl(backend, "own_checkins") if s.upper().startswith("CREATE TABLE")]
    return [s.replace(" PRIMARY KEY", " NOT NULL", 1) for s in tables]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name without `.sql`, e.g. `002_montages`
    sql: str

    @property
    def checksum(self) -> str:
        # Line endings normalised, so a checkout with CRLF files is not an edited migration.
        return hashlib.sha256(self.sql.replace("\r\n", "\n").encode()).hexdigest()

    def statements(self) -> list[str]:
        return split_statements(self.sql)


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str


def sql_directory(backend: str) -> Path:
    candidates = [_CHECKOUT_SQL / backend, Path(str(resources.files("montage_vec") / "sql" / backend))]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no DDL files for backend {backend!r} (looked in {candidates})")


def package_migrations(backend: str) -> list[Migration]:
    """This package's migrations for a backend, in version order."""
    migrations = [
        Migration(int(path.name[:3]), path.stem, path.read_text())
        for path in sorted(sql_directory(backend).glob("[0-9][0-9][0-9]_*.sql"))
    ]
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number in sql/{backend}")
    return migrations


def pending_migrations(
    available: list[Migration], applied: Iterable[AppliedMigration], backend: str
) -> list[Migration]:
    """What `migrate` still has to apply; MigrationError when the database disagrees with the files."""
    known = {migration.version: migration for migration in available}
    done = set()
    for record in applied:
        migration = known.get(record.version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {record.name} applied, which this montage-vec does not know: "
                "it was migrated by a newer version"
            )
        superseded = SUPERSEDED_CHECKSUMS.get((backend, record.version))
        if record.checksum not in (migration.checksum, superseded):
            raise MigrationError(
                f"migration {migration.name} was changed after it was applied (checksum differs); "
                "applied migrations must never be edited: add a new one instead"
            )
        done.add(record.version)
    return [migration for migration in available if migration.version not in done]


def require_migrated(available: list[Migration], applied: Iterable[AppliedMigration] | None, backend: str) -> None:
    """SchemaNotMigratedError naming what is missing, unless the database is at the package's latest."""
    if applied is None:
        raise SchemaNotMigratedError("montage-vec's tables are not set up: run `montage-vec migrate` first")
    pending = pending_migrations(available, applied, backend)
    if pending:
        names = ", ".join(migration.name for migration in pending)
        raise SchemaNotMigratedError(f"{len(pending)} migration(s) pending ({names}): run `montage-vec migrate`")
