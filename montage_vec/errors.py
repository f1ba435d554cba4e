"""The exception tree of montage-vec.

Every error the job raises on purpose derives from `MontageVecError`. Each class says
whether retrying the same work can succeed (`transient`), which is what the job's retry
logic and the CLI's exit codes key on. Messages never carry secrets: callers pass
already-redacted text (see `montage_vec.config.redact`).
"""

from __future__ import annotations


class MontageVecError(Exception):
    """Base of every error montage-vec raises deliberately."""

    transient: bool = False
    exit_code: int = 1


class ConfigError(MontageVecError):
    """A setting is missing, malformed or out of range; raised before any data is touched."""

    exit_code = 2


class InputDataError(MontageVecError):
    """Check-in data that breaks the engine's assumptions (a missing column, a wrong type)."""


class StoreError(MontageVecError):
    """A database operation failed; `sqlstate` is the database's error code, when it gave one."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class TransientStoreError(StoreError):
    """Connection loss, serialization failure or deadlock: the same work may succeed on retry."""

    transient = True


class DataStoreError(StoreError):
    """The database rejected the data itself (a constraint, a conversion, a trigger's error).

    Retrying the same rows cannot succeed, but splitting a chunk isolates the culprit.
    """


class PermissionStoreError(StoreError):
    """The database refused access (privileges, authentication, a read-only database).

    A refused privilege (SQLSTATE 42501) names the privilege and the object, e.g. TEMPORARY on
    the database or SELECT on a table; a job's table that exists but that the role may not read
    is this error, not a SchemaStoreError. sql/postgresql/roles.sql grants what the job needs.
    """

    exit_code = 77  # EX_NOPERM


class SchemaStoreError(StoreError):
    """The tables are not what the job expects (missing, or a column missing); exit 3."""

    exit_code = 3


class SchemaNotMigratedError(SchemaStoreError):
    """The job's tables are missing or behind the package: run `montage-vec migrate` first."""


class MigrationError(SchemaStoreError):
    """The database's migration history disagrees with the package's migration files."""


class RunLockedError(MontageVecError):
    """Another run holds the job lock for this shard."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class RunInterrupted(MontageVecError):
    """The run stopped early on a signal or on BATCH_PROCESSING_TIMEOUT."""

    def __init__(self, message: str, *, status: str, exit_code: int) -> None:
        super().__init__(message)
        self.status = status
        self.exit_code = exit_code


class RunFailed(MontageVecError):
    """The run could not complete; the watermark did not move."""


class ChunkFailedWhole(RunFailed):
    """Every user of a chunk that was split on data errors failed: a bug or a systematic fault."""


class LeaseLostError(RunFailed):
    """Another run took this run's shard over (its lock went with a dead connection): stop writing."""


class TooManyFailedUsers(RunFailed):
    """More users failed than MONTAGE_MAX_FAILED_FRACTION allows: the run stops, unfinished."""


class ServiceError(MontageVecError):
    """An external HTTP service (user service, check-in service) could not be reached or failed."""

    transient = True


class ServiceResponseError(ServiceError):
    """A service answered, but not in the documented shape or with a final 4xx: retrying cannot help."""

    transient = False


class ScratchSpaceError(RunFailed):
    """A full run cannot spool its check-ins: MONTAGE_SCRATCH_DIR is not writable, or it is full."""
