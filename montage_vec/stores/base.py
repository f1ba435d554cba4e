"""The storage interface the job runs against, and the values that cross it.

A `Store` knows where the data lives and hands out `StoreSession`s, one per thread (a
DuckDB cursor, a PostgreSQL connection). Sessions move Arrow/Polars frames in and out;
everything about montages themselves stays in the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import polars as pl

CandidateMode = Literal["incremental", "full", "users"]


@dataclass(frozen=True)
class CandidateQuery:
    """Which users a run processes (see README, "Which users a run processes")."""

    mode: CandidateMode
    as_of: datetime
    since: datetime | None = None
    user_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChunkWrite:
    """Everything one chunk's transaction writes.

    `user_ids` are the users whose montages are replaced as a whole; `montages` and `items`
    are the engine's output for them, `montages` extended with generated_at,
    cache_expires_at and job_id.
    """

    job_id: str
    user_ids: pl.Series
    montages: pl.DataFrame
    items: pl.DataFrame


@dataclass(frozen=True)
class WriteOutcome:
    """What a committed chunk changed: montages created or rewritten, montages removed."""

    montages_written: int
    montages_removed: int
    changed_users: list[str] = field(default_factory=list)


@dataclass
class RunRecord:
    """One row of the run log."""

    job_id: str
    shard: str
    mode: str
    as_of: datetime
    started_at: datetime
    status: str = "running"
    finished_at: datetime | None = None
    watermark_from: datetime | None = None
    watermark_to: datetime | None = None
    processed: int = 0
    successful: int = 0
    errors: int = 0
    general_montages: int = 0
    interest_montages: int = 0
    message: str | None = None


class StoreSession(ABC):
    """One connection's worth of operations; not shared between threads."""

    @abstractmethod
    def try_lock_run(self, shard: str) -> bool:
        """Take the shard's run lock for this session's lifetime; False when another run holds it."""

    @abstractmethod
    def migrate(self) -> list[str]:
        """Apply every DDL file of this backend (idempotent); return the file names."""

    @abstractmethod
    def ensure_migrated(self) -> None:
        """Raise SchemaNotMigratedError when the job's tables are missing."""

    @abstractmethod
    def latest_data_time(self, not_after: datetime) -> datetime | None:
        """The greatest check-in `updated_at` up to `not_after`: the watermark a successful run stores."""

    @abstractmethod
    def read_watermark(self, shard: str) -> datetime | None: ...

    @abstractmethod
    def save_watermark(self, shard: str, watermark: datetime, job_id: str) -> None: ...

    @abstractmethod
    def candidate_users(self, query: CandidateQuery) -> pl.Series:
        """Sorted, distinct user ids (canonical text) the run must process."""

    @abstractmethod
    def extract_checkins(self, user_ids: pl.Series) -> pl.DataFrame:
        """The engine's check-in columns (CHECKIN_SCHEMA) for exactly these users."""

    @abstractmethod
    def write_chunk(self, chunk: ChunkWrite) -> WriteOutcome:
        """Replace the chunk users' montages in one transaction; all or nothing."""

    @abstractmethod
    def record_failures(self, failures: pl.DataFrame, job_id: str, failed_at: datetime) -> None:
        """Put users (user_id, error) on the retry list, counting attempts."""

    @abstractmethod
    def record_run(self, run: RunRecord) -> None:
        """Insert or update the run's row in the run log."""

    @abstractmethod
    def load_checkins(self, checkins: pl.DataFrame) -> int:
        """Insert or update check-ins (all `checkins` columns). For demo, tests and benchmarks:
        the job itself never writes check-ins."""

    @abstractmethod
    def user_montages(self, user_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(montages, items) currently stored for one user, for `show`."""

    @abstractmethod
    def user_with_most_interests(self) -> str | None:
        """A user worth showing: the one with the most interest montages (ties: smallest id)."""

    @abstractmethod
    def close(self) -> None: ...


class Store(ABC):
    """A database holding check-ins and montages."""

    kind: str

    @abstractmethod
    def session(self) -> StoreSession:
        """A new session for the calling thread; close it when done."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
