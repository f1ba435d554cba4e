"""Everything one benchmark run measured, as handed to the report and the plot."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.baseline_loop import LoopResult
from benchmarks.baseline_sql import SqlResult
from benchmarks.config import BenchConfig
from benchmarks.dataset import ChangeResult, LoadResult
from benchmarks.engine_runs import EngineRun
from benchmarks.io_stats import DatabaseIo
from benchmarks.machine import Machine
from benchmarks.shard_sweep import ShardPoint
from benchmarks.transfer_floor import FloorResult


@dataclass
class BenchResults:
    config: BenchConfig
    machine: Machine
    database_version: str
    database: str
    load: LoadResult
    reset_method: str
    sweep: list[EngineRun]
    full: EngineRun
    change: ChangeResult
    incremental: EngineRun
    reconciling: EngineRun  # an incremental run with no changes that runs the reconciliation query
    loop: LoopResult
    sql: SqlResult
    floor: FloorResult
    total_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)
    shards: list[ShardPoint] = field(default_factory=list)  # the shard sweep (--shards), one point per count
    io: DatabaseIo | None = None  # settings, table sizes and the runs' reads ("Database I/O")

    @property
    def best(self) -> EngineRun:
        """The sweep point with the highest throughput."""
        return max(self.sweep, key=lambda run: run.users_per_second)

    def ratios(self) -> list[tuple[str, float, str, bool]]:
        """(what, value, target, met) for the issue's target ratios."""
        full = self.full
        loop_rate = self.loop.users_per_second
        return [
            ("baseline 2 (set-based SQL) time / full run time", _div(self.sql.seconds, full.job_seconds), ">= 2x",
             _div(self.sql.seconds, full.job_seconds) >= 2.0),
            ("full run time / transfer floor time", _div(full.job_seconds, self.floor.seconds), "<= 2x",
             _div(full.job_seconds, self.floor.seconds) <= 2.0),
            ("full run users/s / per-user loop users/s", _div(full.users_per_second, loop_rate), ">= 100x",
             _div(full.users_per_second, loop_rate) >= 100.0),
            ("incremental (1% changed) time / full run time", _div(self.incremental.job_seconds, full.job_seconds),
             "<= 5%", _div(self.incremental.job_seconds, full.job_seconds) <= 0.05),
            ("reconciling run (no changes) time / full run time", _div(self.reconciling.job_seconds, full.job_seconds),
             "-", True),
        ]  # fmt: skip


def _div(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")
