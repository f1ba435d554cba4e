"""Locate and split the numbered DDL files under `sql/<backend>/`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# In a checkout (editable install) the files sit at the repository root; a wheel ships them
# inside the package as montage_vec/sql.
_CHECKOUT_SQL = Path(__file__).resolve().parents[2] / "sql"


def sql_directory(backend: str) -> Path:
    candidates = [_CHECKOUT_SQL / backend, Path(str(resources.files("montage_vec") / "sql" / backend))]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no DDL files for backend {backend!r} (looked in {candidates})")


def migration_files(backend: str) -> list[Path]:
    return sorted(sql_directory(backend).glob("[0-9][0-9][0-9]_*.sql"))


def split_statements(script: str) -> list[str]:
    """Statements of a DDL file: our files keep `;` only at statement ends, never in literals."""
    without_comments = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    return [statement.strip() for statement in without_comments.split(";") if statement.strip()]
