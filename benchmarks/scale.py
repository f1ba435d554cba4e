"""The scale benchmark: a full run's users/s and peak RSS against the number of users (issue 13, targets 1 and 5).

    .venv/bin/python -m benchmarks.scale --backend postgresql --users 100000,300000,1000000

For each user count: a fresh database loaded by `load_checkins` (generated and COPYed in batches,
so the benchmark's own memory stays bounded), then `once --full` on emptied tables, once per
`--full-run-read` value (the job's MONTAGE_FULL_RUN_READ), `--repeat` times, the median kept.
Every run has the product's default settings and the server's own: the question is how the
product scales as shipped. The report (scale_report.py) sets the largest size against the
smallest. See benchmarks/README.md, "Scale".
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import get_args

from benchmarks.config import (
    BENCH_DIR,
    DEFAULT_OUT,
    DEFAULT_PG_ADMIN_URL,
    PRODUCT_BATCH_SIZE,
    PRODUCT_CONCURRENCY,
    Backend,
    _as_of,
    _int_list,
)
from benchmarks.database import BenchDatabase, PostgresDatabase
from benchmarks.dataset import load_checkins
from benchmarks.duck_database import DuckDatabase
from benchmarks.engine_runs import Echo, EngineRun, measured_run, run_or_exit, stderr_echo
from benchmarks.io_stats import IO_TABLES
from benchmarks.machine import describe_machine
from benchmarks.scale_plot import write_scale_plot
from benchmarks.scale_report import DEFAULT_READ, ScalePoint, ScaleResults, render_scale, targets
from montage_vec.config import Settings
from montage_vec.datagen import DEFAULT_AS_OF, SyntheticSpec

DEFAULT_USERS = (100_000, 300_000, 1_000_000)
SMOKE_USERS = (300, 600)
FULL_RUN_READ = "MONTAGE_FULL_RUN_READ"


@dataclass(frozen=True)
class ScaleConfig:
    backend: Backend
    users: tuple[int, ...]  # ascending: the benchmark's own peak RSS is a high-water mark, smallest first
    reads: tuple[str, ...]  # MONTAGE_FULL_RUN_READ values; DEFAULT_READ leaves it unset
    repeat: int
    seed: int
    as_of: datetime
    out: Path
    results: Path
    plot: Path
    pg_admin_url: str
    keep: bool
    command: str


def _known_reads() -> tuple[str, ...]:
    """The job's MONTAGE_FULL_RUN_READ choices, so a typo fails before a million users are loaded."""
    field = Settings.model_fields.get("montage_full_run_read")
    return tuple(str(choice) for choice in get_args(field.annotation)) if field else ()


def _reads(text: str) -> tuple[str, ...]:
    values = [part.strip() for part in text.split(",")]
    reads = tuple(dict.fromkeys(DEFAULT_READ if value in ("", "default") else value for value in values))
    known = _known_reads()
    unknown = [read for read in reads if read != DEFAULT_READ and known and read not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown value(s) {unknown}: use {', '.join(known)} or empty (the default)")
    return reads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="A full run's users/s and peak RSS against the number of users, on the product's defaults.",
    )
    parser.add_argument("--backend", choices=("postgresql", "duckdb"), required=True)
    parser.add_argument("--users", type=_int_list, help="user counts (default 100000,300000,1000000)")
    parser.add_argument(
        "--full-run-read",
        type=_reads,
        default=(DEFAULT_READ,),
        help="MONTAGE_FULL_RUN_READ values, one line each (e.g. scan,chunks); empty or omitted: not set",
    )
    parser.add_argument("--repeat", type=int, default=1, help="full runs per size and read; the median counts")
    parser.add_argument("--seed", type=int, default=42, help="same seed, same data (default 42)")
    parser.add_argument("--as-of", type=_as_of, default=DEFAULT_AS_OF, help="reference time of data and runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="scratch directory (logs, DuckDB files)")
    parser.add_argument("--results", type=Path, help="Markdown report (default benchmarks/scale.md; OUT with --smoke)")
    parser.add_argument("--plot", type=Path, help="PNG plot (default benchmarks/scale.png; OUT with --smoke)")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL, help="where to create the databases")
    parser.add_argument("--keep", action="store_true", help="keep each size's database / DuckDB file")
    parser.add_argument("--smoke", action="store_true", help=f"sizes {SMOKE_USERS}: checks the tool, not the engine")
    return parser


def parse_scale_config(argv: list[str] | None = None) -> ScaleConfig:
    args = build_parser().parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    smoke = bool(args.smoke)
    out = Path(args.out).resolve()
    shown = argv if argv is not None else sys.argv[1:]
    return ScaleConfig(
        backend=args.backend,
        users=tuple(sorted(set(args.users or (SMOKE_USERS if smoke else DEFAULT_USERS)))),
        reads=args.full_run_read,
        repeat=args.repeat,
        seed=args.seed,
        as_of=args.as_of,
        out=out,
        results=(args.results or (out / "scale.md" if smoke else BENCH_DIR / "scale.md")).resolve(),
        plot=(args.plot or (out / "scale.png" if smoke else BENCH_DIR / "scale.png")).resolve(),
        pg_admin_url=args.pg_admin_url,
        keep=bool(args.keep),
        command=shlex.join(["python", "-m", "benchmarks.scale", *shown]),
    )


def own_peak_rss_bytes() -> int:
    """The benchmark process's RSS high-water mark so far (Linux reports KiB); engine children not included."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def open_scale_database(config: ScaleConfig, users: int) -> BenchDatabase:
    # The pid keeps concurrent benchmarks (e.g. CI and a developer) off each other's database.
    name = f"montage_scale_{users}_{os.getpid()}"
    if config.backend == "postgresql":
        return PostgresDatabase.create(config.pg_admin_url, name)
    return DuckDatabase.create(config.out / f"{name}.duckdb")


def measure_size(config: ScaleConfig, users: int, log_dir: Path, echo: Echo) -> ScalePoint:
    """Load `users` into a fresh database, time its full runs, drop it (unless --keep)."""
    db = open_scale_database(config, users)
    echo(f"{db.display_name}: generating and loading {users:,} users (seed {config.seed})")
    try:
        load = load_checkins(db, SyntheticSpec(users=users, seed=config.seed, as_of=config.as_of))
        point = ScalePoint(load=load, loader_peak_rss_bytes=own_peak_rss_bytes(), io=db.io_settings())
        loaded = load.generate_seconds + load.load_seconds
        echo(f"  {load.checkins:,} check-ins in {loaded:.1f} s, indexed in {load.index_seconds:.1f} s; "
             f"benchmark peak RSS {point.loader_peak_rss_bytes / 2**20:,.0f} MiB")  # fmt: skip
        point.database_version = db.server_version()
        point.io.sizes = db.table_sizes(("checkins",))
        for read in config.reads:
            point.runs[read] = [_full_run(db, users, read, attempt, config.as_of, log_dir, point, echo)
                                for attempt in range(1, config.repeat + 1)]  # fmt: skip
        # Every run wrote the same montages afresh: the last one's tables stand for all.
        point.io.sizes += db.table_sizes(IO_TABLES[1:])
        point.io.size_after_full = db.size_bytes()
    finally:
        if (kept := db.keep_or_drop(config.keep)) is not None:
            echo(kept)
    return point


def _full_run(
    db: BenchDatabase,
    users: int,
    read: str,
    attempt: int,
    as_of: datetime,
    log_dir: Path,
    point: ScalePoint,
    echo: Echo,
) -> EngineRun:
    """One `once --full` on emptied tables at the product's default settings; its I/O goes into point.io."""
    db.reset_job_tables()
    return measured_run(
        db,
        point.io,
        echo,
        label=f"full_{users}_{read or 'default'}_r{attempt}",
        as_of=as_of,
        batch_size=PRODUCT_BATCH_SIZE,
        concurrency=PRODUCT_CONCURRENCY,
        full=True,
        log_dir=log_dir,
        extra_env={FULL_RUN_READ: read} if read != DEFAULT_READ else None,
    )


def run_scale(config: ScaleConfig, echo: Echo) -> ScaleResults:
    started = time.perf_counter()
    results = ScaleResults(command=config.command, backend=config.backend, machine=describe_machine())
    results.repeat, results.reads = config.repeat, config.reads
    config.out.mkdir(parents=True, exist_ok=True)
    log_dir = config.out / "logs" / f"scale_{config.backend}_{os.getpid()}"
    for users in config.users:
        results.points.append(measure_size(config, users, log_dir, echo))
    results.total_seconds = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> None:
    config = parse_scale_config(argv)
    echo = stderr_echo()
    results = run_or_exit(lambda: run_scale(config, echo), echo)
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.write_text(render_scale(results, config.results, config.plot))
    write_scale_plot(results, config.plot)
    echo(f"report: {config.results}")
    echo(f"plot:   {config.plot}")
    for target in targets(results):
        print(f"  {target.what} ({target.read_label}): {target.measured} (wanted {target.wanted}) {target.verdict}")


if __name__ == "__main__":
    main()
