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
WHERE table_schema = current_schema() AND table_name = $1
"""
APPLIED_MIGRATIONS = 'SELECT "version", "name", "checksum" FROM {schema_migrations} ORDER BY "version"'
RECORD_MIGRATION = """
INSERT INTO {schema_migrations} ("version", "name", "checksum", "applied_at") VALUES ($1, $2, $3, $4)
"""


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
        """The file's statements: our files keep `;` only at statement ends, never in literals."""
        lines = (line for line in self.sql.splitlines() if not line.strip().startswith("--"))
        return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


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


def pending_migrations(available: list[Migration], applied: Iterable[AppliedMigration]) -> list[Migration]:
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
        if migration.checksum != record.checksum:
            raise MigrationError(
                f"migration {migration.name} was changed after it was applied (checksum differs); "
                "applied migrations must never be edited: add a new one instead"
            )
        done.add(record.version)
    return [migration for migration in available if migration.version not in done]


def require_migrated(available: list[Migration], applied: Iterable[AppliedMigration] | None) -> None:
    """SchemaNotMigratedError naming what is missing, unless the database is at the package's latest."""
    if applied is None:
        raise SchemaNotMigratedError("montage-vec's tables are not set up: run `montage-vec migrate` first")
    pending = pending_migrations(available, applied)
    if pending:
        names = ", ".join(migration.name for migration in pending)
        raise SchemaNotMigratedError(f"{len(pending)} migration(s) pending ({names}): run `montage-vec migrate`")
