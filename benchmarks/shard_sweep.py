"""The shard sweep (`--shards 1,2,4`): the full run as N job processes started together.

For each N, on freshly emptied tables, N `montage-vec once --full` children start at once,
child i with `MONTAGE_SHARD=i/N`, as the pods of an Indexed Job would. Measured:

- wall time: from the first job's start to the last job's end, from the runs' own log lines
  (like *job time* elsewhere: interpreter start-up excluded);
- users/s: every shard's users over that wall time; speed-up: 1 shard's wall time over N's;
- peak RSS: the largest of the N processes';
- CPU shares of the machine, over the time from the first spawn to the last exit (CPU seconds
  / (seconds x CPUs)): the job processes' own (os.wait4, imports included), and the PostgreSQL
  server's: its postmaster and every process it forked (backends, WAL writer, checkpointer),
  from /proc before and after. A backend that exited meanwhile is in the postmaster's cutime
  and cstime once reaped. Only when the server runs on this host; server-wide, so other
  databases' work counts too: run it on a quiet server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchmarks.database import BenchDatabase
from benchmarks.engine_runs import EngineRun, StartedEngine, finish_engine, start_engine

MIB = 2**20
POLL_SECONDS = 0.02  # how often the children are checked for their exit
# /proc/<pid>/stat after the ")" that ends the command name: field 3 (state) is index 0.
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME = 1, 11, 12, 13, 14


@dataclass
class ShardPoint:
    """One N: the N runs and what the machine spent on them."""

    shards: int
    runs: list[EngineRun]
    process_seconds: float  # first spawn to last exit
    cpus: int
    server_cpu_seconds: float | None  # None: the server is not on this host

    @property
    def wall_seconds(self) -> float:
        first_start = min(run.finished_at - run.job_seconds for run in self.runs)
        return max(run.finished_at for run in self.runs) - first_start

    @property
    def users(self) -> int:
        return sum(run.processed for run in self.runs)

    @property
    def montages(self) -> int:
        return sum(run.montages for run in self.runs)

    @property
    def users_per_second(self) -> float:
        return self.users / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def peak_rss_bytes(self) -> int:
        return max(run.peak_rss_bytes for run in self.runs)

    def cpu_share(self, seconds: float | None) -> float | None:
        """CPU seconds as a share of all the machine's CPUs over the spawn-to-exit time."""
        if seconds is None or self.process_seconds <= 0 or self.cpus <= 0:
            return None
        return seconds / (self.process_seconds * self.cpus)


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except OSError:
        return False


def postmaster_of(db: BenchDatabase) -> int | None:
    """The pid of the server's postmaster: the parent of this connection's backend, if on this host."""
    backend = int(db.scalar("SELECT pg_backend_pid()"))
    fields = _stat(backend)
    # The pid is the server's: in another pid namespace (a container) it names something else here.
    if fields is None or not _is_postgres(backend) or not _is_postgres(int(fields[_PPID])):
        return None
    return int(fields[_PPID])


def server_cpu_seconds(postmaster: int | None) -> float | None:
    """CPU seconds the server has used: the postmaster, its live children, and the reaped ones."""
    own = _stat(postmaster) if postmaster is not None else None
    if own is None:
        return None
    ticks = sum(int(own[field]) for field in (_UTIME, _STIME, _CUTIME, _CSTIME))
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[_PPID]) == postmaster:
            ticks += sum(int(fields[field]) for field in (_UTIME, _STIME, _CUTIME, _CSTIME))
    return ticks / os.sysconf("SC_CLK_TCK")


def _wait_all(started: list[StartedEngine]) -> list[float]:
    """When each child exited (perf_counter); kills the rest if the wait is interrupted."""
    exits: dict[int, float] = {}
    try:
        while len(exits) < len(started):
            for index, engine in enumerate(started):
                if index not in exits and engine.process.poll() is not None:
                    exits[index] = time.perf_counter()
            time.sleep(POLL_SECONDS)
    finally:
        for engine in started:
            if engine.process.poll() is None:
                engine.process.kill()
                engine.process.wait()
    return [exits[index] for index in range(len(started))]


def run_point(
    db: BenchDatabase, shards: int, *, label: str, as_of: datetime, batch_size: int, concurrency: int, log_dir: Path
) -> ShardPoint:
    """N full runs at once on emptied tables, each its own shard."""
    db.reset_job_tables()
    postmaster = postmaster_of(db)
    db.settle()
    before = server_cpu_seconds(postmaster)
    spawned = time.perf_counter()
    started = [
        start_engine(
            label=f"{label}_{index}of{shards}",
            database_url=db.url,
            as_of=as_of,
            batch_size=batch_size,
            concurrency=concurrency,
            full=True,
            log_dir=log_dir,
            extra_env={"MONTAGE_SHARD": f"{index}/{shards}"},
        )
        for index in range(shards)
    ]
    exits = _wait_all(started)
    after = server_cpu_seconds(postmaster)
    runs = [finish_engine(engine, exited) for engine, exited in zip(started, exits, strict=True)]
    server = after - before if after is not None and before is not None else None
    return ShardPoint(shards, runs, max(exits) - spawned, os.cpu_count() or 0, server)


def run_shard_sweep(
    db: BenchDatabase,
    counts: tuple[int, ...],
    *,
    repeat: int,
    as_of: datetime,
    batch_size: int,
    concurrency: int,
    log_dir: Path,
    echo: Callable[[str], None],
) -> list[ShardPoint]:
    """Each shard count `repeat` times; for each, the point with the median wall time."""
    points = []
    for shards in counts:
        tries = []
        for attempt in range(1, repeat + 1):
            label = f"shards{f'_r{attempt}' if repeat > 1 else ''}"
            point = run_point(
                db, shards, label=label, as_of=as_of, batch_size=batch_size, concurrency=concurrency, log_dir=log_dir
            )
            share = point.cpu_share(point.server_cpu_seconds)
            echo(
                f"  {shards} shard(s): {point.users:,} users in {point.wall_seconds:.2f} s = "
                f"{point.users_per_second:,.0f} users/s, database CPU {_percent(share)}"
            )
            tries.append(point)
        points.append(sorted(tries, key=lambda p: p.wall_seconds)[len(tries) // 2])
    return points


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def render_shards(points: list[ShardPoint]) -> list[str]:
    """The report's "Shard sweep" section (nothing without a sweep)."""
    if not points:
        return []
    one = next((point for point in points if point.shards == 1), points[0])
    runs = one.runs[0]
    rows = []
    for point in points:
        times = [run.job_seconds for run in point.runs]
        job_cpu = point.cpu_share(sum(run.cpu_seconds for run in point.runs))
        rows.append(
            f"| {point.shards} | {point.users:,} | {point.montages:,} | {point.wall_seconds:,.2f} s | "
            f"{min(times):,.2f}-{max(times):,.2f} s | {point.process_seconds:,.2f} s | "
            f"{one.wall_seconds / point.wall_seconds:.2f}x | "
            f"{point.users_per_second:,.0f} | {point.peak_rss_bytes / MIB:,.0f} MiB | {_percent(job_cpu)} | "
            f"{_percent(point.cpu_share(point.server_cpu_seconds))} |"
        )
    same = all((point.users, point.montages) == (one.users, one.montages) for point in points)
    return [
        "## Shard sweep",
        "",
        f"The full run as N processes started together, process i with `MONTAGE_SHARD=i/N`, on emptied tables; "
        f"each with `MONTAGE_BATCH_SIZE={runs.batch_size}`, `MAX_CONCURRENT_GENERATIONS={runs.concurrency}`. "
        "*Wall time*: first job start to last job end (the runs' own times); *users/s* over it; *speed-up* "
        "against 1 shard. *Processes*: first spawn to last exit, interpreter start-up included. CPU shares are "
        f"of all {one.cpus} CPUs over that time: the job processes' own, and the PostgreSQL server's (postmaster "
        "and every process it forked, from /proc; server-wide, n/a when the server is not on this host).",
        "",
        "| shards | users | montages | wall time | shard job times | processes | speed-up vs 1 | users/s "
        "| peak RSS per process (max) | job CPU | database CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Users and montages are the same at every shard count: " + ("yes." if same else "**no**."),
        "",
    ]
