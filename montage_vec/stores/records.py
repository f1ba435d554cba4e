"""The values that cross the store interfaces: a chunk to write, what it changes, a run's log row."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import polars as pl

from montage_vec.engine.schema import MONTAGE_KEY


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
    lease: Lease | None = None  # None: a write outside any run (a realtime regenerate)

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
class Lease:
    """A run's hold on its shard: the token it got when it took the shard's lock (see TAKE_LEASE)."""

    shard: str
    token: int
    job_id: str


@dataclass(frozen=True)
class ChunkDiff:
    """What writing a chunk changes, by the write's own change detection (chunk_sql.SELECT_DIFF):
    montages created or rewritten, montages removed, the items inserted with the rewritten
    montages, and the users having any of those. A dry run's diff is what a write would do."""

    montages_written: int
    montages_removed: int
    items_written: int
    users_changed: int


@dataclass(frozen=True)
class WriteOutcome(ChunkDiff):
    """What a committed chunk changed, with the changed users named (their caches are stale)."""

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
    reconciled: bool = False

    @property
    def event_type(self) -> str:
        """The batch lifecycle event this state of the run announces."""
        if self.status == "running":
            return "montage.batch_job.started"
        if self.status == "completed":
            return "montage.batch_job.completed"
        return "montage.batch_job.failed"

    def event_payload(self) -> str:
        return json.dumps(asdict(self), default=_iso, sort_keys=True)


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
