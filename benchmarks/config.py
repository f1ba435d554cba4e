"""What one benchmark run does: the parsed command line, with the smoke preset applied."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from montage_vec.config import Settings
from montage_vec.datagen import DEFAULT_AS_OF

Backend = Literal["postgresql", "duckdb"]

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "out"
DEFAULT_RESULTS = BENCH_DIR / "results.md"
DEFAULT_PLOT = BENCH_DIR / "throughput.png"
DEFAULT_PG_ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
DEFAULT_BATCH_SIZES = (1000, 2500, 5000, 10000, 20000)
DEFAULT_CONCURRENCY = (1, 2, 3)
# The product's defaults (README, Configuration): what an un-tuned deployment runs.
PRODUCT_BATCH_SIZE: int = Settings.model_fields["montage_batch_size"].default
PRODUCT_CONCURRENCY: int = Settings.model_fields["max_concurrent_generations"].default

SMOKE_USERS = 300
SMOKE_SAMPLE = 20
SMOKE_BATCH_SIZES = (100,)
SMOKE_CONCURRENCY = (2,)


@dataclass(frozen=True)
class BenchConfig:
    backend: Backend
    users: int
    seed: int
    as_of: datetime
    batch_sizes: tuple[int, ...]
    concurrency: tuple[int, ...]
    sample_users: int
    repeat: int
    change_fraction: float
    change_capture: str
    run_settings: str
    out: Path
    results: Path
    plot: Path
    pg_admin_url: str
    keep: bool
    smoke: bool
    profile: bool
    command: str
    shards: tuple[int, ...] = ()  # the shard sweep's counts, 1 included; () for no sweep

    def main_settings(self, best: tuple[int, int] | None) -> tuple[int, int]:
        """(batch size, concurrency) of the full and incremental runs."""
        if self.run_settings == "default":
            return PRODUCT_BATCH_SIZE, PRODUCT_CONCURRENCY
        if self.run_settings == "best":
            return best or (PRODUCT_BATCH_SIZE, PRODUCT_CONCURRENCY)
        size, _, workers = self.run_settings.partition(":")
        return int(size), int(workers)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need integers >= 1, got {text!r}")
    return values


def _run_settings(text: str) -> str:
    if text in ("best", "default"):
        return text
    size, sep, workers = text.partition(":")
    if not (sep and size.isdigit() and workers.isdigit() and int(size) > 0 and int(workers) > 0):
        raise argparse.ArgumentTypeError("use best, default or BATCH_SIZE:CONCURRENCY (e.g. 2500:2)")
    return text


def _as_of(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time montage-vec's full and incremental runs against three baselines and sweep its settings.",
    )
    parser.add_argument("--backend", choices=("postgresql", "duckdb"), required=True)
    parser.add_argument("--users", type=int, help=f"synthetic users (default 100000; {SMOKE_USERS} with --smoke)")
    parser.add_argument("--seed", type=int, default=42, help="same seed, same data (default 42)")
    parser.add_argument("--as-of", type=_as_of, default=DEFAULT_AS_OF, help="reference time of data and runs")
    parser.add_argument("--batch-sizes", type=_int_list, help="sweep: MONTAGE_BATCH_SIZE values")
    parser.add_argument("--concurrency", type=_int_list, help="sweep: MAX_CONCURRENT_GENERATIONS values")
    parser.add_argument("--sample-users", type=int, help="users timed in the per-user loop baseline (default 300)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="full runs per sweep point and for the full run; the median counts"
    )
    parser.add_argument("--change-fraction", type=float, default=0.01, help="users changed before the incremental run")
    parser.add_argument(
        "--change-capture",
        choices=("watermark", "trigger"),
        default="watermark",
        help="PostgreSQL: how the incremental run finds changes; trigger installs the capture triggers first",
    )
    parser.add_argument(
        "--run-settings",
        type=_run_settings,
        default="best",
        help="settings of the full/incremental runs: best (from the sweep), the product's default "
        f"({PRODUCT_BATCH_SIZE}:{PRODUCT_CONCURRENCY}) or SIZE:CONCURRENCY",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="scratch directory (logs, DuckDB file)")
    parser.add_argument(
        "--results", type=Path, help="Markdown report (default benchmarks/results.md; OUT with --smoke)"
    )
    parser.add_argument("--plot", type=Path, help="PNG plot (default benchmarks/throughput.png; OUT with --smoke)")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL, help="where to create the benchmark database")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database / DuckDB file")
    parser.add_argument("--smoke", action="store_true", help="tiny and fast (< 60 s): checks the tool, not the engine")
    parser.add_argument("--profile", action="store_true", help="one more full run under py-spy, summarised by stage")
    parser.add_argument(
        "--shards",
        type=_int_list,
        help="shard sweep (PostgreSQL): the full run as N processes at once (MONTAGE_SHARD=i/N) for each N; "
        "1 is always included, for the speed-up",
    )
    return parser


def parse_config(argv: list[str] | None = None) -> BenchConfig:
    args = build_parser().parse_args(argv)
    smoke = bool(args.smoke)
    out = Path(args.out).resolve()
    users = args.users if args.users is not None else (SMOKE_USERS if smoke else 100_000)
    if users < 1:
        raise SystemExit("--users must be >= 1")
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    if not 0.0 < args.change_fraction <= 1.0:
        raise SystemExit("--change-fraction must be in (0, 1]")
    if args.shards and args.backend != "postgresql":
        raise SystemExit("--shards needs --backend postgresql: a DuckDB file admits one writing process at a time")
    shown = argv if argv is not None else sys.argv[1:]
    return BenchConfig(
        backend=args.backend,
        users=users,
        seed=args.seed,
        as_of=args.as_of,
        batch_sizes=args.batch_sizes or (SMOKE_BATCH_SIZES if smoke else DEFAULT_BATCH_SIZES),
        concurrency=args.concurrency or (SMOKE_CONCURRENCY if smoke else DEFAULT_CONCURRENCY),
        sample_users=args.sample_users if args.sample_users is not None else (SMOKE_SAMPLE if smoke else 300),
        repeat=args.repeat,
        change_fraction=args.change_fraction,
        change_capture="trigger" if args.change_capture == "trigger" and args.backend == "postgresql" else "watermark",
        run_settings=args.run_settings,
        out=out,
        results=(args.results or (out / "results.md" if smoke else DEFAULT_RESULTS)).resolve(),
        plot=(args.plot or (out / "throughput.png" if smoke else DEFAULT_PLOT)).resolve(),
        pg_admin_url=args.pg_admin_url,
        keep=bool(args.keep),
        smoke=smoke,
        profile=bool(args.profile),
        command=shlex.join(["python", "-m", "benchmarks", *shown]),
        shards=tuple(sorted({1, *args.shards})) if args.shards else (),
    )
