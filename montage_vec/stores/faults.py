"""One classification of database errors, whichever backend raised them.

Each backend only says which `FaultKind` a driver error is (see `Connection.fault`); this
module turns that into the StoreError subclass the job acts on: data errors split a chunk
to isolate the users behind them, transient errors retry the chunk on a new connection,
and permission, schema and other errors end the run. The same fault behaves the same on
DuckDB and PostgreSQL because both go through `store_error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from montage_vec.config.secrets import redact
from montage_vec.errors import (
    DataStoreError,
    PermissionStoreError,
    SchemaStoreError,
    StoreError,
    TransientStoreError,
)


class FaultKind(Enum):
    DATA = "data"
    TRANSIENT = "transient"
    PERMISSION = "permission"
    SCHEMA = "schema"
    OTHER = "other"


@dataclass(frozen=True)
class Fault:
    """A backend's reading of a driver error: its kind, the database's own words, its code."""

    kind: FaultKind
    message: str
    code: str | None = None
    # The driver gave no code: the kind is a guess (a dead connection, or a value the driver
    # could not encode), which the session settles by checking the connection.
    unclassified: bool = False


_ERRORS: dict[FaultKind, tuple[type[StoreError], str]] = {
    FaultKind.DATA: (DataStoreError, "database rejected the data"),
    FaultKind.TRANSIENT: (TransientStoreError, "transient database error"),
    FaultKind.PERMISSION: (PermissionStoreError, "database refused access"),
    FaultKind.SCHEMA: (SchemaStoreError, "database schema problem"),
    FaultKind.OTHER: (StoreError, "database error"),
}


def first_line(exc: BaseException) -> str:
    """A driver error's first line (the rest is often the statement), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def store_error(fault: Fault) -> StoreError:
    """The StoreError for a fault, its message masked of secrets."""
    error_class, prefix = _ERRORS[fault.kind]
    code = f" ({fault.code})" if fault.code else ""
    return error_class(f"{prefix}{code}: {redact(fault.message)}", fault.code)
