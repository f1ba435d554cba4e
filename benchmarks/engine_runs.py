"""The engine's runs, as child processes: `python -m montage_vec once ...`, timed from its JSON log.

Stage times come from the run's last log line ("Batch job completed": duration_seconds and
stage_seconds, the latter summed over chunks, hence over concurrent workers). Candidate
selection is the time from the job's start (completion timestamp minus duration_seconds) to
"Batch job started"; the interpreter's start-up (imports) is what remains before that. Peak
RSS is the job process's own ru_maxrss, from os.wait4 in a small launcher (see _LAUNCHER).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.config import BENCH_DIR

# Variables that could point the child elsewhere or change its work: cleared, then set explicitly.
_CLEARED = (
    "DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME", "DB_SSLMODE", "DB_READ_HOST", "DB_MAX_OPEN_CONNS",
    "MONTAGE_MAX_ITEMS", "MONTAGE_MIN_INTEREST_OCCURRENCE", "MONTAGE_INTEREST_LOOKBACK_DAYS",
    "MONTAGE_PRIVACY_INCLUDED", "USER_ID_FILTER", "MONTAGE_SHARD", "PUSHGATEWAY_URL", "USER_SERVICE_URL",
    "CHECKIN_SERVICE_URL", "BATCH_MODE", "DEBUG", "WATERMARK_OVERLAP", "CACHE_TTL",
)  # fmt: skip
STAGES = ("extract", "compute", "write")
# A fork/vfork child's ru_maxrss starts at its parent's RSS (Linux carries the old mm's high-water
# mark across exec), so the job is started by this tiny interpreter rather than by the benchmark,
# whose own RSS would otherwise show up as the job's peak. It reports the job's ru_maxrss (KiB).
_LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


class EngineRunError(RuntimeError):
    pass


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

    @property
    def users_per_second(self) -> float:
        return self.processed / self.job_seconds if self.job_seconds > 0 else 0.0

    @property
    def checkins_per_second(self) -> float:
        return self.checkins / self.job_seconds if self.job_seconds > 0 else 0.0

    @property
    def montages(self) -> int:
        return self.general_montages + self.interest_montages


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
        # As the Dockerfile sets it: Polars' jemalloc returns freed memory at once.
        _RJEM_MALLOC_CONF="dirty_decay_ms:0,muzzy_decay_ms:0",
    )
    # `python -m montage_vec` and `python -m benchmarks` must both resolve from the repository.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR.parent), env.get("PYTHONPATH")]))
    return env


def run_engine(
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
) -> EngineRun:
    """One `montage-vec once` in a child process; raises EngineRunError unless it completed."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{label}.jsonl"
    rss_path = log_dir / f"{label}.maxrss"
    command = [*(wrapper or []), sys.executable, "-m", "montage_vec", "once", "--as-of", as_of.isoformat()]
    command += ["--full"] if full else []
    command[0] = shutil.which(command[0]) or command[0]  # posix_spawn wants a path
    env = {**child_environment(database_url, batch_size, concurrency), **(extra_env or {})}
    with log_path.open("w") as log, (log_dir / f"{label}.stderr").open("w") as err:
        spawned_wall = time.time()
        spawned = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(rss_path), *command],
            stdout=log,
            stderr=err,
            env=env,
            cwd=log_dir,
            check=False,
        )
        process_seconds = time.perf_counter() - spawned
    lines = _log_lines(log_path)
    completed = _last(lines, "Batch job completed")
    if child.returncode != 0 or completed is None:
        tail = (log_dir / f"{label}.stderr").read_text()[-2000:]
        raise EngineRunError(f"engine run {label!r} exited {child.returncode}; see {log_path}\n{tail}")
    started = _last(lines, "Batch job started") or {}
    finished_at = _timestamp(completed)
    job_seconds = float(completed["duration_seconds"])
    job_start = finished_at - job_seconds
    started_at = _timestamp(started) if started else job_start
    return EngineRun(
        label=label,
        mode=str(completed.get("mode")),
        batch_size=batch_size,
        concurrency=concurrency,
        process_seconds=process_seconds,
        job_seconds=job_seconds,
        startup_seconds=max(0.0, job_start - spawned_wall),
        candidate_seconds=max(0.0, started_at - job_start),
        candidates=int(started.get("candidates", completed.get("processed", 0))),
        processed=int(completed["processed"]),
        checkins=int(completed["checkins"]),
        general_montages=int(completed["general_montages"]),
        interest_montages=int(completed["interest_montages"]),
        montages_written=int(completed["montages_written"]),
        montages_removed=int(completed["montages_removed"]),
        chunks=int(completed["chunks"]),
        errors=int(completed["errors"]),
        peak_rss_bytes=int(rss_path.read_text()) * 1024,  # Linux reports kilobytes
        log_path=log_path,
        stage_seconds={stage: float(completed.get("stage_seconds", {}).get(stage, 0.0)) for stage in STAGES},
        reconciled=bool(started.get("reconciled", False)),
    )


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
