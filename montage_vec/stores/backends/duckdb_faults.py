"""What a DuckDB error means (its FaultKind), and what to do when DuckDB runs out of room.

DuckDB keeps to `memory_limit` by spilling to its temporary directory. What it cannot spill
(an index being written, a block it cannot offload because the directory is full or cannot be
written) fails as an allocation error, raised as OutOfMemoryException or, during a commit, as
a TransactionException that says so. That is no fault of one user's data (splitting the chunk
would put users on the retry list for ever) and retrying the same work cannot help, so it ends
the run (FaultKind.OTHER) with a message that names the fix. A failed allocation while
committing can also invalidate the database: every later statement fails with FatalException
until the file is opened again, which DuckDBBackend does on its next connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from montage_vec.stores.faults import Fault, FaultKind, first_line

KINDS: tuple[tuple[type[duckdb.Error], FaultKind], ...] = (
    (duckdb.PermissionException, FaultKind.PERMISSION),
    (duckdb.ConstraintException, FaultKind.DATA),
    (duckdb.ConversionException, FaultKind.DATA),
    (duckdb.OutOfRangeException, FaultKind.DATA),
    (duckdb.InvalidInputException, FaultKind.DATA),
    (duckdb.TransactionException, FaultKind.TRANSIENT),
    (duckdb.IOException, FaultKind.TRANSIENT),
    (duckdb.CatalogException, FaultKind.SCHEMA),
    (duckdb.BinderException, FaultKind.SCHEMA),
)

# DuckDB's words for an allocation it could not make (buffer manager, temporary files), in
# whichever exception class carried them ("Failed to commit: could not allocate block ...").
_OUT_OF_ROOM = re.compile(
    r"out of memory|failed to allocate|could not allocate|failed to pin|failed to offload|no space left on device",
    re.IGNORECASE,
)
INVALIDATED = "database has been invalidated"


@dataclass(frozen=True)
class Room:
    """The memory and temporary directory a DuckDB database was opened with, for the advice."""

    memory_limit: str | None
    temp_directory: str | None

    def advice(self) -> str:
        limit = f"DUCKDB_MEMORY_LIMIT (now {self.memory_limit})" if self.memory_limit else "DUCKDB_MEMORY_LIMIT"
        folder = self.temp_directory or "DuckDB's temporary directory"
        return (
            f"raise {limit}, or free disk space in {folder} (DUCKDB_TEMP_DIRECTORY), where DuckDB spills what "
            "does not fit in memory"
        )


def is_invalidated(exc: BaseException) -> bool:
    """Whether DuckDB refuses all further work on this database until it is opened again."""
    return isinstance(exc, duckdb.FatalException) or INVALIDATED in str(exc)


def classify(exc: duckdb.Error, room: Room) -> Fault:
    message = first_line(exc)
    if "read-only mode" in message:
        return Fault(FaultKind.PERMISSION, message)
    if is_invalidated(exc):
        return Fault(
            FaultKind.OTHER,
            f"{message} (DuckDB gave up on the database after an earlier error, most often running out of "
            f"memory: {room.advice()})",
        )
    if isinstance(exc, duckdb.OutOfMemoryException) or _OUT_OF_ROOM.search(message):
        return Fault(FaultKind.OTHER, f"{message}: DuckDB ran out of memory; {room.advice()}")
    if isinstance(exc, duckdb.IOException) and room.temp_directory and room.temp_directory in message:
        return Fault(
            FaultKind.OTHER,
            f"{message}: DuckDB cannot spill to its temporary directory; set DUCKDB_TEMP_DIRECTORY to a "
            "writable folder with free space",
        )
    kind = next((kind for error, kind in KINDS if isinstance(exc, error)), FaultKind.OTHER)
    return Fault(kind, message)
