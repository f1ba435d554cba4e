"""One classification of database errors, whichever backend raised them.

Each backend only says which `FaultKind` a driver error is (see `Connection.fault`); this
module turns that into the StoreError subclass the job acts on: data errors split a chunk
to isolate the users behind them, transient errors retry the chunk on a new connection,
and permission, schema and other errors end the run. The same fault behaves the same on
DuckDB and PostgreSQL because both go through `store_error`.

A refused privilege (SQLSTATE 42501) also says which privilege on which object the job's
role lacks, read from the server's message, and where the grants are (sql/postgresql/roles.sql).
"""

from __future__ import annotations

import re
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
from montage_vec.stores.migrations import MIGRATIONS_TABLE
from montage_vec.stores.tables import JOB_TABLES


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
    message = explain_refusal(fault.message) if fault.code == INSUFFICIENT_PRIVILEGE else fault.message
    return error_class(f"{prefix}{code}: {redact(message)}", fault.code)


INSUFFICIENT_PRIVILEGE = "42501"
GRANTS = "sql/postgresql/roles.sql grants what the job needs"

# The server's words for a refused privilege (PostgreSQL's aclchk.c): "permission denied
# for table montages", "permission denied to create temporary tables in database "app"",
# "must be owner of table checkins". Object names come unqualified, databases quoted.
_DENIED_FOR = re.compile(r"permission denied for (?P<kind>[a-z ]+?) (?P<name>\S.*)$")
_DENIED_TEMPORARY = re.compile(r"permission denied to create temporary tables in database (?P<name>.+)$")
_NOT_OWNER = re.compile(r"must be owner of (?P<kind>[a-z ]+?) (?P<name>\S.*)$")
_RELATIONS = frozenset({"table", "view", "materialized view", "foreign table", "relation"})


def explain_refusal(message: str) -> str:
    """The server's refusal, plus the privilege on the object that the job's role lacks."""
    need = _needed_privilege(message.strip())
    return f"{message}: the role needs {need}; {GRANTS}" if need else f"{message} ({GRANTS})"


def _needed_privilege(message: str) -> str | None:
    if found := _DENIED_TEMPORARY.match(message):
        return f"TEMPORARY on database {found['name']} (runs stage rows in temporary tables)"
    if found := _NOT_OWNER.match(message):
        return f"ownership of {found['kind']} {found['name']}"
    found = _DENIED_FOR.match(message)
    if found is None:
        return None
    kind, name = found["kind"], found["name"]
    if kind in _RELATIONS:
        if name == MIGRATIONS_TABLE:
            return f"SELECT on the job's table {name}"
        if name in JOB_TABLES:
            return f"SELECT, INSERT, UPDATE and DELETE on the job's table {name}"
        return f"SELECT on {kind} {name} if it is the check-in source (and TRIGGER for `migrate --capture-triggers`)"
    needs = {
        "schema": f"USAGE on schema {name} (and CREATE on it for `migrate` to create tables there)",
        "database": f"CONNECT on database {name} (and CREATE on it for `migrate` to create MONTAGE_SCHEMA)",
        "sequence": f"USAGE on sequence {name}",
        "function": f"EXECUTE on function {name}",
        "procedure": f"EXECUTE on procedure {name}",
    }
    return needs.get(kind, f"a privilege on {kind} {name}")
