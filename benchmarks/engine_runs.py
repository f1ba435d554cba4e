"""The engine's runs, as child processes: `python -m montage_vec once ...`, timed from its JSON log.

Stage times come from the run's last log line ("Batch job completed": duration_seconds and
stage_seconds, the latter summed over chunks, hence over concurrent workers). Candidate
selection is the time from the job's start (completion timestamp minus duration_seconds) to
"Batch job started"; the interpreter's start-up (imports) is what remains before that. Peak
RSS and CPU time are the job process's own ru_maxrss and ru_utime + ru_stime, from os.wait4 in a
small launcher (see _LAUNCHER). `start_engine` / `finish_engine` let several runs go at once
(the shard sweep, shard_sweep.py); `finish_engine(start_engine(...))` is one run start to finish.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from benchmarks.config import BENCH_DIR

if TYPE_CHECKING:
    from benchmarks.database import BenchDatabase
    from benchmarks.io_stats import DatabaseIo

# Variables that could point the child elsewhere or change its work: cleared, then set explicitly.
_CLEARED = (
    "DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME", "DB_SSLMODE", "DB_READ_HOST", "DB_MAX_OPEN_CONNS",
    "MONTAGE_MAX_ITEMS", "MONTAGE_MIN_INTEREST_OCCURRENCE", "MONTAGE_INTEREST_LOOKBACK_DAYS",
    "MONTAGE_PRIVACY_INCLUDED", "USER_ID_FILTER", "MONTAGE_SHARD", "MONTAGE_SHARD_COUNT", "JOB_COMPLETION_INDEX",
    "PUSHGATEWAY_URL", "USER_SERVICE_URL",
    "CHECKIN_SERVICE_URL", "BATCH_MODE", "DEBUG", "WATERMARK_OVERLAP", "CACHE_TTL", "MONTAGE_FULL_RUN_READ",
)  # fmt: skip
STAGES = ("extract", "compute", "write")
# A fork/vfork child's ru_maxrss starts at its parent's RSS (Linux carries the old mm's high-water
# mark across exec), so the job is started by this tiny interpreter rather than by the benchmark,
# whose own RSS would otherwise show up as the job's peak. It reports the job's ru_maxrss (KiB)
# and its CPU seconds (user + system).
_LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


Echo = Callable[[str], None]
T = TypeVar("T")


class EngineRunError(RuntimeError):
    pass


def stderr_echo() -> Echo:
    """Progress lines on stderr, stamped with the seconds since this call."""
    started = time.perf_counter()

    def echo(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    return echo


def run_or_exit(work: Callable[[], T], echo: Echo) -> T:
    """work()'s result, or the process exits: 130 on Ctrl-C, 1 when an engine run failed (its log named)."""
    try:
        return work()
    except KeyboardInterrupt:
        echo("interrupted")
        sys.exit(130)
    except EngineRunError as exc:
        echo(f"failed: {exc}")
        sys.exit(1)


@dataclass
class EngineRun:
    label: str
    mode: str
    batch_size: int
    concurrency: int
    process_seconds: float
    job_seconds: float
    startup_seconds: float
    candidate_seconds: float
    candidates: int
    processed: int
    checkins: int
    general_montages: int
    interest_montages: int
    montages_written: int
    montages_removed: int
    chunks: int
    errors: int
    peak_rss_bytes: int
    log_path: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    reconciled: bool = False  # the run ran the reconciliation query
    cpu_seconds: float = 0.0  # the job process's user + system CPU time
    finished_at: float = 0.0  # Unix time of its "Batch job completed" line
    # The longest chunk (extract + compute + write): what a SIGTERM may have to wait for, so
    # the manifests' terminationGracePeriodSeconds is sized from it.
    slowest_chunk_seconds: float = 0.0

    @property
    def users_per_second(self) -> float:
        return self.processed / self.job_seconds if self.job_seconds > 0 else 0.0

    @property
    def checkins_per_second(self) -> float:
        return self.checkins / self.job_seconds if self.job_seconds > 0 else 0.0

    @property
    def montages(self) -> int:
        return self.general_montages + self.interest_montages


# The Dockerfile's value; benchmarks/README.md ("What we tried") has why.
JEMALLOC_CONF = "dirty_decay_ms:1000,muzzy_decay_ms:0"


def child_environment(database_url: str, batch_size: int, concurrency: int) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in _CLEARED}
    env.update(
        DATABASE_URL=database_url,
        MONTAGE_BATCH_SIZE=str(batch_size),
        MAX_CONCURRENT_GENERATIONS=str(concurrency),
        ENVIRONMENT="production",  # JSON log lines
        LOG_LEVEL="info",
        CHECKIN_SOURCE="database",
        ENABLE_BATCH_PROCESSING="true",
        BATCH_PROCESSING_TIMEOUT="12h",
    )
    # As the Dockerfile sets it (Polars' jemalloc returns freed memory after 1 s idle), unless the
    # benchmark's own environment chooses another to compare.
    env.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)
    # `python -m montage_vec` and `python -m benchmarks` must both resolve from the repository.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR.parent), env.get("PYTHONPATH")]))
    return env


@dataclass
class StartedEngine:
    """A `montage-vec once` child under way (see start_engine)."""

    label: str
    batch_size: int
    concurrency: int
    log_path: Path
    rss_path: Path
    stderr_path: Path
    process: subprocess.Popen[bytes]
    spawned_wall: float
    spawned: float


def start_engine(
    *,
    label: str,
    database_url: str,
    as_of: datetime,
    batch_size: int,
    concurrency: int,
    full: bool,
    log_dir: Path,
    wrapper: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> StartedEngine:
    """Spawn one `montage-vec once` child; `finish_engine` waits for it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{label}.jsonl"
    command = [*(wrapper or []), sys.executable, "-m", "montage_vec", "once", "--as-of", as_of.isoformat()]
    command += ["--full"] if full else []
    command[0] = shutil.which(command[0]) or command[0]  # posix_spawn wants a path
    env = {**child_environment(database_url, batch_size, concurrency), **(extra_env or {})}
    rss_path, stderr_path = log_dir / f"{label}.maxrss", log_dir / f"{label}.stderr"
    with ExitStack() as files:  # the child keeps its own copies of the descriptors
        log = files.enter_context(log_path.open("w"))
        err = files.enter_context(stderr_path.open("w"))
        spawned_wall, spawned = time.time(), time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(rss_path), *command],
            stdout=log,
            stderr=err,
            env=env,
            cwd=log_dir,
        )
    return StartedEngine(
        label, batch_size, concurrency, log_path, rss_path, stderr_path, process, spawned_wall, spawned
    )


def finish_engine(started: StartedEngine, exited: float | None = None) -> EngineRun:
    """Wait for the child and read its outcome; raises EngineRunError unless it completed.

    `exited`: the perf_counter() at which the caller saw the child end (default: now, after waiting)."""
    returncode = started.process.wait()
    exited = exited if exited is not None else time.perf_counter()
    label, log_path = started.label, started.log_path
    lines = _log_lines(log_path)
    completed = _last(lines, "Batch job completed")
    if returncode != 0 or completed is None:
        tail = started.stderr_path.read_text()[-2000:]
        raise EngineRunError(f"engine run {label!r} exited {returncode}; see {log_path}\n{tail}")
    start_line = _last(lines, "Batch job started") or {}
    finished_at = _timestamp(completed)
    job_seconds = float(completed["duration_seconds"])
    job_start = finished_at - job_seconds
    started_at = _timestamp(start_line) if start_line else job_start
    max_rss_kib, cpu_seconds = started.rss_path.read_text().split()
    return EngineRun(
        label=label,
        mode=str(completed.get("mode")),
        batch_size=started.batch_size,
        concurrency=started.concurrency,
        process_seconds=exited - started.spawned,
        job_seconds=job_seconds,
        startup_seconds=max(0.0, job_start - started.spawned_wall),
        candidate_seconds=max(0.0, started_at - job_start),
        candidates=int(start_line.get("candidates", completed.get("processed", 0))),
        processed=int(completed["processed"]),
        checkins=int(completed["checkins"]),
        general_montages=int(completed["general_montages"]),
        interest_montages=int(completed["interest_montages"]),
        montages_written=int(completed["montages_written"]),
        montages_removed=int(completed["montages_removed"]),
        chunks=int(completed["chunks"]),
        errors=int(completed["errors"]),
        peak_rss_bytes=int(max_rss_kib) * 1024,  # Linux reports kilobytes
        log_path=log_path,
        # STAGES always, and any other stage the run reports (a full run's "scan").
        stage_seconds={
            stage: float(seconds)
            for stage, seconds in {**dict.fromkeys(STAGES, 0.0), **completed.get("stage_seconds", {})}.items()
        },
        reconciled=bool(start_line.get("reconciled", False)),
        cpu_seconds=float(cpu_seconds),
        finished_at=finished_at,
        slowest_chunk_seconds=_slowest_chunk_seconds(lines),
    )


def median_run(runs: list[EngineRun]) -> EngineRun:
    """The run with the median job time; of an even number, the slower middle one."""
    return sorted(runs, key=lambda run: run.job_seconds)[len(runs) // 2]


def _slowest_chunk_seconds(lines: list[dict[str, Any]]) -> float:
    chunk_times = [
        sum(float(spent) for spent in line.get("stage_seconds", {}).values())
        for line in lines
        if line.get("message") == "chunk committed"
    ]
    return max(chunk_times, default=0.0)


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


def _last(lines: list[dict[str, Any]], message: str) -> dict[str, Any] | None:
    matching = [line for line in lines if line.get("message") == message]
    return matching[-1] if matching else None


def _timestamp(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


def measured_run(
    db: BenchDatabase,
    io: DatabaseIo,
    echo: Echo,
    *,
    label: str,
    as_of: datetime,
    batch_size: int,
    concurrency: int,
    full: bool,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
) -> EngineRun:
    """One run start to finish on a settled database: its I/O goes into `io.runs[label]`, its result to `echo`."""
    db.settle()  # dirty pages of what came before are not flushed on the run's clock
    before, cpu_before = db.io_snapshot(), db.cpu_times()
    run = finish_engine(
        start_engine(
            label=label,
            database_url=db.url,
            as_of=as_of,
            batch_size=batch_size,
            concurrency=concurrency,
            full=full,
            log_dir=log_dir,
            extra_env=extra_env,
        )
    )
    io.cpu[label] = db.cpu_times().minus(cpu_before)
    io.runs[label] = db.io_snapshot().minus(before)
    echo(f"  {label}: {run.processed:,} users in {run.job_seconds:.2f} s = {run.users_per_second:,.0f} users/s, "
         f"peak RSS {run.peak_rss_bytes / 2**20:,.0f} MiB")  # fmt: skip
    return run
