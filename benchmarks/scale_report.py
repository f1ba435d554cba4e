"""What the scale benchmark (scale.py) measured, its targets, and its Markdown report (benchmarks/scale.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.config import PRODUCT_BATCH_SIZE, PRODUCT_CONCURRENCY
from benchmarks.dataset import LoadResult
from benchmarks.engine_runs import STAGES, EngineRun, median_run
from benchmarks.io_stats import DatabaseIo, TableIo, hit_ratio, human_size, markdown_table
from benchmarks.machine import Machine
from montage_vec.config import Settings

DEFAULT_READ = ""  # MONTAGE_FULL_RUN_READ left unset: the product's default
LINEAR_LIMIT = 1.25  # issue 13, target 1: per-user time at 1M <= 1.25x that at 100k
FLAT_RSS_LIMIT = 1.25  # target 5: peak RSS at 1M <= 1.25x that at 100k
RSS_LIMIT_BYTES = 500 * 10**6  # target 5: peak RSS <= 500 MB at 100k users (MB read strictly, not MiB)
RSS_LIMIT_USERS = 100_000
MIB = 2**20


def read_label(read: str) -> str:
    if read != DEFAULT_READ:
        return read
    field = Settings.model_fields.get("montage_full_run_read")
    return f"default ({field.default})" if field else "default"


def per_user_us(run: EngineRun) -> float:
    """Microseconds of job time per processed user."""
    return run.job_seconds / run.processed * 1e6 if run.processed else float("inf")


@dataclass
class ScalePoint:
    """One user count: its load, its full runs by MONTAGE_FULL_RUN_READ value, its database's I/O."""

    load: LoadResult
    loader_peak_rss_bytes: int  # the benchmark's own high-water mark once this size was loaded
    io: DatabaseIo
    database_version: str = ""
    runs: dict[str, list[EngineRun]] = field(default_factory=dict)  # read -> every repeat, in order

    @property
    def users(self) -> int:
        return self.load.users

    def median(self, read: str) -> EngineRun:
        return median_run(self.runs[read])


@dataclass
class ScaleResults:
    command: str
    backend: str
    machine: Machine
    reads: tuple[str, ...] = (DEFAULT_READ,)
    repeat: int = 1
    points: list[ScalePoint] = field(default_factory=list)  # ascending user counts
    total_seconds: float = 0.0


@dataclass(frozen=True)
class Target:
    what: str
    read_label: str
    measured: str
    wanted: str
    met: bool | None  # None: not measured (a single size, or no 100,000-user size)

    @property
    def verdict(self) -> str:
        return "not measured" if self.met is None else ("met" if self.met else "NOT MET")


def targets(results: ScaleResults) -> list[Target]:
    """Targets 1 and 5 of issue 13 per read: the largest size against the smallest, and RSS at 100k users."""
    points = results.points
    small, large = points[0], points[-1]
    versus = f"{large.users:,} / {small.users:,} users"
    found = []
    for read in results.reads:
        label = read_label(read)
        low, high = small.median(read), large.median(read)
        for what, ratio, limit in (
            ("1. per-user job time", per_user_us(high) / per_user_us(low), LINEAR_LIMIT),
            ("5. peak RSS of the job", high.peak_rss_bytes / max(low.peak_rss_bytes, 1), FLAT_RSS_LIMIT),
        ):
            measured = f"{ratio:.2f}x" if large is not small else "-"
            met = ratio <= limit if large is not small else None
            found.append(Target(f"{what}, {versus}", label, measured, f"<= {limit}x", met))
        at = next((point for point in points if point.users == RSS_LIMIT_USERS), None)
        rss = at.median(read).peak_rss_bytes if at else None
        found.append(Target(f"5. peak RSS of the job at {RSS_LIMIT_USERS:,} users", label,
                            human_size(rss), f"<= {RSS_LIMIT_BYTES // 10**6} MB",
                            None if rss is None else rss <= RSS_LIMIT_BYTES))  # fmt: skip
    return found


def _s(seconds: float) -> str:
    return f"{seconds:,.2f} s" if seconds < 100 else f"{seconds:,.0f} s"


def _stages(results: ScaleResults) -> list[str]:
    """STAGES, then whatever else any run reported (a full run's scan)."""
    seen = {stage for p in results.points for runs in p.runs.values() for run in runs for stage in run.stage_seconds}
    return [*STAGES, *sorted(seen - set(STAGES))]


def _context(results: ScaleResults) -> list[str]:
    m = results.machine
    version = results.points[0].database_version
    backend = f"PostgreSQL {version}, server settings untouched" if results.backend == "postgresql" else (
        f"DuckDB {version} (embedded)")  # fmt: skip
    return [
        "# montage-vec scale benchmark",
        "",
        f"- **Date:** {m.date}",
        f"- **Machine:** {m.cpus} CPUs ({m.cpu_model}), {m.ram_bytes / 2**30:.1f} GiB RAM, load average at start "
        f"{m.load_average[0]:.2f} / {m.load_average[1]:.2f} / {m.load_average[2]:.2f}",
        f"- **Backend:** {backend}",
        f"- **Software:** Python {m.python}, " + ", ".join(f"{name} {v}" for name, v in m.packages.items()),
        f"- **Command:** `{results.command}`",
        "- **Runs:** `once --full` on emptied tables, the product's defaults "
        f"(`MONTAGE_BATCH_SIZE={PRODUCT_BATCH_SIZE}`, `MAX_CONCURRENT_GENERATIONS={PRODUCT_CONCURRENCY}`), "
        "`MONTAGE_FULL_RUN_READ` per line; "
        + (f"median of {results.repeat} runs." if results.repeat > 1 else "one run each."),
        f"- **Benchmark wall time:** {_s(results.total_seconds)}",
        "",
        "Job time is the run's `duration_seconds` (lock to summary, excluding interpreter start-up); peak RSS is",
        "the job process's own `ru_maxrss`. Timings on a shared machine are noisy: re-run before concluding.",
        "",
    ]


def _server_cpu(io: DatabaseIo, label: str) -> str:
    """The server's CPU during the run (cpu_stats), where the server runs on this machine."""
    cpu = io.cpu.get(label)
    return _s(cpu.server) if cpu is not None and cpu.server is not None else "-"


def _results_table(results: ScaleResults) -> list[str]:
    stages = _stages(results)
    header = ["users", "read", "check-ins", "job time", "users/s", "µs per user", "vs smallest", "peak RSS",
              "job CPU", "server CPU", *stages]  # fmt: skip
    if results.repeat > 1:
        header.append("job times of the repeats")
    rows = []
    for read in results.reads:
        smallest = per_user_us(results.points[0].median(read))
        for point in results.points:
            run = point.median(read)
            row = [f"{point.users:,}", read_label(read), f"{run.checkins:,}", _s(run.job_seconds),
                   f"{run.users_per_second:,.0f}", f"{per_user_us(run):,.1f}", f"{per_user_us(run) / smallest:.2f}x",
                   f"{run.peak_rss_bytes / MIB:,.0f} MiB", _s(run.cpu_seconds), _server_cpu(point.io, run.label),
                   *(_s(run.stage_seconds[s]) if s in run.stage_seconds else "-" for s in stages)]  # fmt: skip
            if results.repeat > 1:
                row.append(", ".join(_s(r.job_seconds) for r in point.runs[read]))
            rows.append(row)
    return [
        "## Results",
        "",
        "Stage seconds are summed over chunks (so over concurrent workers); *scan* is a full run's one sequential "
        "read of the check-ins, before the chunks. *vs smallest*: per-user time over the smallest size's. "
        "*Server CPU*: every local `postgres` process during the run (`-`: no local server); job and server "
        "share the machine's cores, so (job + server CPU) / cores is the least wall time that work allows.",
        "",
        *markdown_table(header, rows),
        "",
    ]


LOAD_HEADER = ["users", "check-ins", "generate", "load (COPY)", "keys, indexes, ANALYZE", "database size",
               "benchmark peak RSS"]  # fmt: skip


def _loading(results: ScaleResults) -> list[str]:
    points = results.points
    rows = [[f"{p.users:,}", f"{p.load.checkins:,}", _s(p.load.generate_seconds), _s(p.load.load_seconds),
             _s(p.load.index_seconds), human_size(p.load.size_bytes), f"{p.loader_peak_rss_bytes / MIB:,.0f} MiB"]
            for p in points]  # fmt: skip
    growth = points[-1].loader_peak_rss_bytes / max(points[0].loader_peak_rss_bytes, 1)
    bounded = "bounded" if growth <= FLAT_RSS_LIMIT else "**not bounded**"
    verdict = (f"Benchmark peak RSS, largest / smallest size: {growth:.2f}x ({bounded}: wanted <= {FLAT_RSS_LIMIT}x)."
               if len(points) > 1 else "Benchmark peak RSS: one size only, nothing to compare.")  # fmt: skip
    return [
        "## Data loading",
        "",
        "`load_checkins`: generated and bulk-loaded (COPY) a batch at a time, then keys, indexes and ANALYZE. "
        "*Benchmark peak RSS* is the benchmark process's own high-water mark (`getrusage`) once that size was "
        "loaded; sizes run smallest first, so it grows only if a bigger load needed more memory.",
        "",
        *markdown_table(LOAD_HEADER, rows),
        "",
        verdict,
        "",
    ]


def _hits(io: TableIo | None) -> str:
    if io is None:
        return "-"
    heap, index = hit_ratio(io.heap_read, io.heap_hit), hit_ratio(io.idx_read, io.idx_hit)
    return " / ".join("-" if ratio is None else f"{ratio:.1%}" for ratio in (heap, index))


def _io(results: ScaleResults) -> list[str]:
    rows = []
    for read in results.reads:
        for point in results.points:
            io = point.io
            sizes = {size.name: size for size in io.sizes}
            snapshot = io.runs.get(point.median(read).label)
            counters = snapshot.counters if snapshot else None
            tables = counters.tables if counters else {}
            checkins = sizes.get("checkins")
            rows.append([
                f"{point.users:,}", read_label(read),
                f"{human_size(checkins.heap_bytes)} / {human_size(checkins.index_bytes)}" if checkins else "-",
                *(human_size(sizes[name].total_bytes) if name in sizes else "-" for name in ("montages",
                                                                                             "montage_items")),
                human_size(io.size_after_full),
                io.settings.get("shared_buffers", io.settings.get("DUCKDB_MEMORY_LIMIT", "-")),
                *(_hits(tables.get(name)) for name in ("checkins", "montages", "montage_items")),
                "-" if counters is None else _ratio(hit_ratio(counters.blks_read, counters.blks_hit)),
                "-" if counters is None else human_size(counters.temp_bytes),
                human_size(snapshot.disk_read_bytes if snapshot else None),
            ])  # fmt: skip
    header = ["users", "read", "checkins heap / indexes", "montages", "montage_items", "database",
              "shared_buffers" if results.backend == "postgresql" else "DUCKDB_MEMORY_LIMIT",
              "checkins hit (heap / index)", "montages hit", "montage_items hit", "database hit", "temp spilled",
              "read from disk"]  # fmt: skip
    return [
        "## Database I/O",
        "",
        "Of the median full run: buffer hit ratios from `pg_statio_user_tables` / `pg_stat_database` deltas "
        "(a miss may still come from the OS page cache; for written tables misses include new blocks), and "
        "what the machine read from its disks (`/proc/diskstats`, all processes). Sizes after the full runs "
        "(checkins: after loading). Hit ratios near 100% and few disk bytes: CPU-bound, not I/O-bound. "
        "DuckDB keeps no such statistics (`-`).",
        "",
        *markdown_table(header, rows),
        "",
    ]


def _ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1%}"


def render_scale(results: ScaleResults, report: Path, plot: Path) -> str:
    rows = [[t.what, t.read_label, t.measured, t.wanted, t.verdict if t.met is not False else "**NOT MET**"]
            for t in targets(results)]  # fmt: skip
    lines = [
        *_context(results),
        "## Targets",
        "",
        "Issue 13's targets 1 (linear) and 5 (memory): the largest size against the smallest (the issue: "
        "1,000,000 against 100,000 users), on the product's and the server's default settings.",
        "",
        *markdown_table(["target", "read", "measured", "wanted", "verdict"], rows),
        "",
        *_results_table(results),
        f"![users/s and peak RSS against users]({os.path.relpath(plot, report.parent)})",
        "",
        *_loading(results),
        *_io(results),
    ]
    return "\n".join(lines)
