"""A run's bookkeeping in the database: its shard's lock and lease, the run log, the watermark
and the retry list.

The lock is the backend's (an advisory lock on PostgreSQL, the file on DuckDB). The lease is
a fencing token per shard (`montage_job_leases`), raised by each run that takes the lock and
checked inside every write of a run, so that a run whose lock went with a dead connection
cannot write once another run took the shard (README, "Database restarts").
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from montage_vec.errors import LeaseLostError, MontageVecError
from montage_vec.stores import change_sql, statements
from montage_vec.stores.records import Lease, RunRecord
from montage_vec.stores.render import Snapshot
from montage_vec.stores.sql_core import SqlCore


def run_lock(shard: str) -> str:
    return f"run/{shard}"


class RunBookkeeping(SqlCore):
    """The statements that record a run, as methods of the session."""

    def try_lock_run(self, shard: str) -> bool:
        with self.unit():
            return self._connection.try_lock(run_lock(shard))

    def holds_run_lock(self, shard: str) -> bool:
        try:
            with self.unit():
                return self._connection.holds_lock(run_lock(shard))
        except MontageVecError:
            return False

    def take_lease(self, shard: str, job_id: str, now: datetime) -> Lease:
        """The shard's next fencing token, for the run that just took the shard's lock."""
        with self.unit(write=True):
            [(token,)] = self.run(statements.TAKE_LEASE, [shard, job_id, now])
        return Lease(shard, int(token), job_id)

    def holds_lease(self, lease: Lease) -> bool:
        """Whether no other run took the shard's lease since `lease` was taken."""
        with self.unit():
            return self._lease_token(lease.shard) == lease.token

    def abandon_runs(self, shard: str, job_id: str, now: datetime) -> list[RunRecord]:
        """Mark the shard's runs other than `job_id` that are still `running` as `abandoned`.

        Call while holding the shard's lock: no live run of the shard can then be `running`.
        Each gets its `montage.batch_job.failed` event, as if it had ended itself.
        """
        with self.unit(write=True):
            rows = self.run(statements.RUNS_LEFT_RUNNING, [shard, job_id])
            abandoned = [RunRecord(**dict(zip(statements.RUN_COLUMNS, row, strict=True))) for row in rows]
            for record in abandoned:
                record.status, record.finished_at = "abandoned", now
                record.message = f"abandoned: its process ended without recording an outcome; found by {job_id}"
                self._record_run(record)
        return abandoned

    def furthest_as_of(self, shard: str) -> datetime | None:
        return self.scalar(statements.FURTHEST_AS_OF, [shard])  # type: ignore[no-any-return]

    def shards_run_since(self, shard: str) -> list[str]:
        with self.unit():
            return [str(key) for (key,) in self.run(statements.SHARDS_RUN_SINCE, [shard])]

    def runs_since_reconciled(self, shard: str) -> int:
        return int(self.scalar(statements.RUNS_SINCE_RECONCILED, [shard]))

    def read_watermark(self, shard: str) -> datetime | None:
        return self.scalar(statements.READ_WATERMARK, [shard])  # type: ignore[no-any-return]

    def save_progress(
        self,
        shard: str,
        watermark: datetime | None,
        job_id: str,
        snapshot: Snapshot | None,
        consumed: pl.Series,
        lease: Lease | None = None,
    ) -> None:
        """Move the watermark and delete the consumed changes, in one transaction."""
        with self.unit(write=True):
            self._check_lease(lease)
            if watermark is not None:
                self.run(statements.SAVE_WATERMARK, [shard, watermark, job_id, datetime.now(UTC)])
            if snapshot is not None:
                self._connection.stage("stage_consumed", pl.DataFrame({"user_id": consumed.cast(pl.String)}))
                self.run(change_sql.PRUNE_CONSUMED_CHANGES, snapshot=snapshot)

    def save_watermark(self, shard: str, watermark: datetime, job_id: str) -> None:
        self.save_progress(shard, watermark, job_id, None, pl.Series("user_id", [], dtype=pl.String))

    def record_failures(
        self, failures: pl.DataFrame, job_id: str, failed_at: datetime, lease: Lease | None = None
    ) -> None:
        with self.unit(write=True):
            self._check_lease(lease)
            self._connection.stage("stage_failures", failures)
            self.run(statements.RECORD_FAILURES, [job_id, failed_at])

    def record_run(self, run: RunRecord) -> None:
        with self.unit(write=True):
            self._record_run(run)

    def _record_run(self, run: RunRecord) -> None:
        event = [run.event_type, run.job_id, run.finished_at or run.started_at, run.event_payload()]
        self.run(statements.RECORD_RUN, [getattr(run, column) for column in statements.RUN_COLUMNS])
        self.run(self._dialect.record_job_event, event)

    def _check_lease(self, lease: Lease | None) -> None:
        """LeaseLostError unless `lease` is still the shard's (inside the caller's transaction)."""
        if lease is None:
            return
        current = self._lease_token(lease.shard)
        if current != lease.token:
            raise LeaseLostError(
                f"run {lease.job_id} lost shard {lease.shard} to another run (lease {current}, its own "
                f"{lease.token}); it writes nothing more"
            )

    def _lease_token(self, shard: str) -> int | None:
        rows = self.run(self._dialect.current_lease, [shard])
        return int(rows[0][0]) if rows else None
