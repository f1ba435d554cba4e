"""The storage interface the job runs against, and the values that cross it.

A `Store` knows where the data lives and hands out `StoreSession`s, one per thread (a
DuckDB cursor, a PostgreSQL connection). Sessions move Arrow/Polars frames in and out;
everything about montages themselves stays in the engine.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import polars as pl


class CheckinSource(Protocol):
    """Where check-ins come from: the database itself, or the check-in service over HTTP."""

    def latest_data_time(self, not_after: datetime) -> datetime | None:
        """The greatest check-in `updated_at` up to `not_after`: the watermark a successful run stores."""

    def changed_users(self, since: datetime) -> pl.Series:
        """Distinct users with a check-in whose `updated_at` is later than `since`."""

    def all_users(self) -> pl.Series:
        """Distinct users having any check-in."""

    def extract_checkins(self, user_ids: pl.Series) -> pl.DataFrame:
        """The engine's check-in columns (CHECKIN_SCHEMA) for exactly these users."""


MONTAGE_KEY = ["user_id", "kind", "interest"]


@dataclass(frozen=True)
class ChunkWrite:
    """Everything one chunk's transaction writes.

    `user_ids` are the users whose montages are replaced as a whole; `montages` and `items`
    are the engine's output for them. The `staged_*` frames are what the stores bulk-load:
    montages numbered within the chunk (`montage_nr`), items pointing at that number, so
    the database joins them on one integer instead of three text columns.
    """

    job_id: str
    generated_at: datetime
    cache_ttl: timedelta
    user_ids: pl.Series
    montages: pl.DataFrame
    items: pl.DataFrame
    analytics: bool = True

    def staged_users(self) -> pl.DataFrame:
        """`stage_users`: the chunk's users with the run's id and time, for events."""
        return pl.DataFrame({"user_id": self.user_ids}).with_columns(
            job_id=pl.lit(self.job_id), occurred_at=pl.lit(self.generated_at)
        )

    def staged_montages(self) -> pl.DataFrame:
        """`stage_montages`: one numbered row per montage, with the run's metadata."""
        return self.montages.with_row_index("montage_nr").with_columns(
            pl.col("montage_nr").cast(pl.Int32),
            generated_at=pl.lit(self.generated_at),
            cache_expires_at=pl.lit(self.generated_at + self.cache_ttl),
            job_id=pl.lit(self.job_id),
        )

    def staged_items(self) -> pl.DataFrame:
        """`stage_items`: items keyed by (montage_nr, position)."""
        numbers = self.montages.select(MONTAGE_KEY).with_row_index("montage_nr")
        return self.items.join(numbers, on=MONTAGE_KEY, how="inner").select(
            pl.col("montage_nr").cast(pl.Int32),
            "position",
            "checkin_id",
            "checkin_created_at",
            "widget_type",
            "widget_metadata",
        )


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

    @property
    def event_type(self) -> str:
        """The seed's batch lifecycle event this state of the run announces."""
        if self.status == "running":
            return "montage.batch_job.started"
        if self.status == "completed":
            return "montage.batch_job.completed"
        return "montage.batch_job.failed"

    def event_payload(self) -> str:
        return json.dumps(asdict(self), default=_iso, sort_keys=True)


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


class StoreSession(ABC):
    """One connection's worth of operations; not shared between threads.

    A session is also the default CheckinSource, reading the `checkins` table.
    """

    @abstractmethod
    def try_lock_run(self, shard: str) -> bool:
        """Take the shard's run lock for this session's lifetime; False when another run holds it."""

    @abstractmethod
    def holds_run_lock(self, shard: str) -> bool:
        """Whether this session still holds the shard's run lock (False when its connection died)."""

    @abstractmethod
    def ping(self) -> None:
        """Run a trivial query; raise StoreError when the database does not answer."""

    @abstractmethod
    def migrate(self) -> list[str]:
        """Apply every DDL file of this backend (idempotent); return the file names."""

    @abstractmethod
    def ensure_migrated(self) -> None:
        """Raise SchemaNotMigratedError when the job's tables are missing."""

    @abstractmethod
    def latest_data_time(self, not_after: datetime) -> datetime | None: ...

    @abstractmethod
    def changed_users(self, since: datetime) -> pl.Series: ...

    @abstractmethod
    def all_users(self) -> pl.Series: ...

    @abstractmethod
    def extract_checkins(self, user_ids: pl.Series) -> pl.DataFrame: ...

    @abstractmethod
    def revisit_users(self, as_of: datetime) -> pl.Series:
        """Users with an interest montage that stopped qualifying by `as_of`, plus the retry list."""

    @abstractmethod
    def montage_users(self) -> pl.Series:
        """Users having any montage or a place on the retry list."""

    @abstractmethod
    def read_watermark(self, shard: str) -> datetime | None: ...

    @abstractmethod
    def save_watermark(self, shard: str, watermark: datetime, job_id: str) -> None: ...

    @abstractmethod
    def write_chunk(self, chunk: ChunkWrite) -> WriteOutcome:
        """Replace the chunk users' montages in one transaction; all or nothing."""

    @abstractmethod
    def record_failures(self, failures: pl.DataFrame, job_id: str, failed_at: datetime) -> None:
        """Put users (user_id, error) on the retry list, counting attempts."""

    @abstractmethod
    def record_run(self, run: RunRecord) -> None:
        """Insert or update the run's row in the run log, with its batch_job event, in one transaction."""

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
