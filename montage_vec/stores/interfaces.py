"""The store interfaces, named for who uses them.

- `CheckinSource`: where a run reads check-ins; the database itself or the check-in service.
  Its `ChunkCheckins` part is all a chunk reads, which a full run's spool also provides.
- `JobStore`: what a run needs from the database: its lock, its plan, chunk writes, its records.
- `AdminStore`: what the demo and admin commands need: migrate, load check-ins, inspect.

`SqlSession` implements all three on either backend; tests and notebooks can stand in for
any of them with a small object of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import polars as pl

from montage_vec.stores.records import ChunkDiff, ChunkWrite, RunRecord, WriteOutcome
from montage_vec.stores.render import Snapshot


class ChunkCheckins(Protocol):
    """Where a chunk reads its users' check-ins: a CheckinSource, or a full run's spool (job/spool.py)."""

    def extract_checkins(self, user_ids: pl.Series) -> pl.DataFrame:
        """The engine's check-in columns (CHECKIN_SCHEMA) for exactly these users."""


class CheckinSource(ChunkCheckins, Protocol):
    """Where check-ins come from: the database itself, or the check-in service over HTTP."""

    def latest_data_time(self, not_after: datetime) -> datetime | None:
        """The greatest check-in `updated_at` up to `not_after`: the watermark a successful run stores."""

    def changed_users(self, since: datetime) -> pl.Series:
        """Distinct users with a check-in whose `updated_at` is later than `since`."""

    def all_users(self) -> pl.Series:
        """Distinct users having any check-in."""


class JobStore(Protocol):
    """One connection's worth of what a run does; not shared between threads."""

    def try_lock_run(self, shard: str) -> bool:
        """Take the shard's run lock for this session's lifetime; False when another run holds it."""

    def holds_run_lock(self, shard: str) -> bool:
        """Whether this session still holds the shard's run lock (False when its connection died)."""

    def ensure_migrated(self) -> None:
        """SchemaNotMigratedError, naming what is pending, unless the schema is at the package's latest."""

    def read_watermark(self, shard: str) -> datetime | None: ...

    def capture_installed(self) -> bool:
        """Whether the capture triggers are installed on the check-in source (PostgreSQL)."""

    def capture_snapshot(self) -> Snapshot | None:
        """The current snapshot: the changes committed before it are the ones a run consumes
        (None when the database captures no changes)."""

    def furthest_as_of(self, shard: str) -> datetime | None:
        """The latest as_of of the shard's runs since its last completed full run (None before any)."""

    def shards_run_since(self, shard: str) -> list[str]:
        """The other shards that ran (full or incremental, any outcome) since the shard's last completed run."""

    def runs_since_reconciled(self, shard: str) -> int:
        """Completed incremental runs of the shard since its last reconciled or full run."""

    def captured_users(self, snapshot: Snapshot) -> pl.Series:
        """Distinct users in the captured changes that `snapshot` sees."""

    def oldest_open_transaction(self) -> datetime | None:
        """When the oldest transaction open in another session began (None: none, or no server)."""

    def reconcile_users(self, privacy_included: Sequence[str]) -> pl.Series:
        """Users whose stored montages disagree with the source in ways `updated_at` cannot show."""

    def save_progress(
        self, shard: str, watermark: datetime | None, job_id: str, snapshot: Snapshot | None, consumed: pl.Series
    ) -> None:
        """Move the watermark and delete the consumed captured changes, in one transaction."""

    def revisit_users(self, as_of: datetime) -> pl.Series:
        """Users with an interest montage that stopped qualifying by `as_of`, plus the retry list."""

    def montage_users(self) -> pl.Series:
        """Users having any montage or a place on the retry list."""

    def write_chunk(self, chunk: ChunkWrite) -> WriteOutcome:
        """Replace the chunk users' montages in one transaction; all or nothing."""

    def diff_chunk(self, chunk: ChunkWrite) -> ChunkDiff:
        """What `write_chunk(chunk)` would change now (a dry run's counts), writing and locking nothing."""

    def record_failures(self, failures: pl.DataFrame, job_id: str, failed_at: datetime) -> None:
        """Put users (user_id, error) on the retry list, counting attempts."""

    def record_run(self, run: RunRecord) -> None:
        """Insert or update the run's row in the run log, with its batch_job event, in one transaction."""

    def close(self) -> None: ...


class AdminStore(Protocol):
    """What `migrate`, `show`, `health` and `demo` do with a database."""

    def ping(self) -> None:
        """Run a trivial query; raise StoreError when the database does not answer."""

    def migrate(self) -> list[str]:
        """Apply the pending migrations in order; the names of those applied now."""

    def ensure_migrated(self) -> None: ...

    def install_capture_triggers(self) -> str:
        """Install the change-capture triggers on the check-in source table; what was done."""

    def create_source_indexes(self) -> list[str]:
        """Create the recommended indexes on the check-in source table without blocking writers."""

    def schema_warnings(self) -> list[str]:
        """What `health` reports without failing (missing recommended indexes, ...)."""

    def tables_with_rows(self) -> list[str]:
        """The tables holding any row, besides the migration history (`demo` starts only from none)."""

    def load_checkins(self, checkins: pl.DataFrame) -> int:
        """Insert or update check-ins (all `checkins` columns). For demo, tests and benchmarks:
        the job itself never writes check-ins."""

    def user_montages(self, user_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(montages, items) currently stored for one user."""

    def user_with_most_interests(self) -> str | None:
        """A user worth showing: the one with the most interest montages (ties: smallest id)."""

    def close(self) -> None: ...
