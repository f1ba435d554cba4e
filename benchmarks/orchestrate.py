"""One benchmark, start to finish, on one fresh database: load, sweep, full run, baselines, incremental."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import profiling
from benchmarks.baseline_loop import PREFIX as LOOP_PREFIX
from benchmarks.baseline_loop import run_loop
from benchmarks.baseline_sql import PREFIX as SQL_PREFIX
from benchmarks.baseline_sql import run_sql_baseline
from benchmarks.config import BenchConfig, parse_config
from benchmarks.cpu_stats import FLOOR_CPU, SQL_BASELINE_CPU
from benchmarks.database import BenchDatabase, PostgresDatabase
from benchmarks.dataset import change_users, load_checkins, sample_users
from benchmarks.duck_database import DuckDatabase
from benchmarks.engine_runs import EngineRun, finish_engine, measured_run, run_or_exit, start_engine, stderr_echo
from benchmarks.io_stats import IO_TABLES
from benchmarks.machine import describe_machine
from benchmarks.plot import write_plot
from benchmarks.report import render
from benchmarks.results import BenchResults
from benchmarks.shard_sweep import run_shard_sweep
from benchmarks.transfer_floor import run_transfer_floor
from montage_vec.datagen import SyntheticSpec
from montage_vec.engine import MontageParams

Echo = Callable[[str], None]


def database_name(config: BenchConfig) -> str:
    # The pid keeps concurrent benchmarks (e.g. CI and a developer) off each other's database.
    return f"montage_bench_{config.users}_{os.getpid()}"


def open_database(config: BenchConfig) -> BenchDatabase:
    name = database_name(config)
    if config.backend == "postgresql":
        return PostgresDatabase.create(config.pg_admin_url, name)
    return DuckDatabase.create(config.out / f"{name}.duckdb")


RECONCILE_EVERY_RUN = {"MONTAGE_RECONCILE_EVERY": "1"}


def run_benchmark(config: BenchConfig, echo: Echo) -> BenchResults:
    started = time.perf_counter()
    machine = describe_machine()
    config.out.mkdir(parents=True, exist_ok=True)
    log_dir = config.out / "logs" / f"{config.backend}_{config.users}_{os.getpid()}"
    params = MontageParams()  # the child's environment leaves every MONTAGE_* rule at its default
    db = open_database(config)
    echo(f"{db.display_name}: generating and loading {config.users:,} users (seed {config.seed})")
    try:
        load = load_checkins(db, SyntheticSpec(users=config.users, seed=config.seed, as_of=config.as_of))
        echo(f"  {load.checkins:,} check-ins: generated in {load.generate_seconds:.1f} s, "
             f"loaded in {load.load_seconds:.1f} s, indexed in {load.index_seconds:.1f} s")  # fmt: skip
        version = db.server_version()
        io = db.io_settings()
        io.sizes = db.table_sizes(("checkins",))
        if config.change_capture == "trigger":
            echo(f"  {db.install_capture_triggers()}")

        def engine(
            label: str, batch_size: int, concurrency: int, full: bool, extra_env: dict[str, str] | None = None
        ) -> EngineRun:
            return measured_run(
                db,
                io,
                echo,
                label=label,
                as_of=config.as_of,
                batch_size=batch_size,
                concurrency=concurrency,
                full=full,
                log_dir=log_dir,
                extra_env=extra_env,
            )

        def fresh_full(label: str, batch_size: int, concurrency: int) -> EngineRun:
            """`--repeat` full runs on emptied tables; the one with the median job time."""
            runs = []
            for attempt in range(1, config.repeat + 1):
                db.reset_job_tables()
                suffix = f"_r{attempt}" if config.repeat > 1 else ""
                runs.append(engine(f"{label}{suffix}", batch_size, concurrency, full=True))
            return sorted(runs, key=lambda run: run.job_seconds)[len(runs) // 2]

        echo(f"sweep: batch sizes {list(config.batch_sizes)} x concurrency {list(config.concurrency)}, full runs")
        reset_method = db.reset_job_tables()
        sweep = [
            fresh_full(f"sweep_b{batch_size}_c{concurrency}", batch_size, concurrency)
            for batch_size in config.batch_sizes
            for concurrency in config.concurrency
        ]
        best = max(sweep, key=lambda run: run.users_per_second)
        echo(f"best: MONTAGE_BATCH_SIZE={best.batch_size} MAX_CONCURRENT_GENERATIONS={best.concurrency}")

        batch_size, concurrency = config.main_settings((best.batch_size, best.concurrency))
        echo(f"full run (batch size {batch_size}, concurrency {concurrency})")
        full = fresh_full("full", batch_size, concurrency)
        io.sizes += db.table_sizes(IO_TABLES[1:])
        io.size_after_full = db.size_bytes()

        echo("baseline 2: set-based SQL")
        db.settle()
        sql = run_sql_baseline(db, config.as_of, params)
        db.drop_tables(f"{SQL_PREFIX}montage_items", f"{SQL_PREFIX}montages")
        io.cpu[SQL_BASELINE_CPU] = sql.cpu
        echo(f"  {sql.seconds:.2f} s; montage counts {'equal' if sql.counts_match else 'DIFFER from'} the engine's")

        echo("baseline 3: transfer floor")
        db.settle()
        floor = run_transfer_floor(db, config.out / "scratch")
        io.cpu[FLOOR_CPU] = floor.cpu
        echo(f"  read {floor.read_rows:,} rows in {floor.read_seconds:.2f} s, "
             f"wrote {floor.write_rows:,} rows in {floor.write_seconds:.2f} s")  # fmt: skip

        echo(f"baseline 1: per-user loop over {config.sample_users} sampled users")
        sample = sample_users(db, config.sample_users, config.seed)
        db.settle()
        loop = run_loop(db, sample, config.as_of, params)
        db.drop_tables(f"{LOOP_PREFIX}montage_items", f"{LOOP_PREFIX}montages")
        echo(f"  {loop.users_per_second:,.1f} users/s ({loop.statements:,} statements)")

        change = change_users(db, config.users, config.change_fraction, config.seed, config.as_of)
        echo(f"incremental run after changing {change.users:,} users ({change.rows_touched:,} check-ins)")
        incremental = engine("incremental", batch_size, concurrency, full=False)
        echo("incremental run with no changes that runs the reconciliation query (MONTAGE_RECONCILE_EVERY=1)")
        reconciling = engine("reconciling", batch_size, concurrency, full=False, extra_env=RECONCILE_EVERY_RUN)
        # Last of the runs on these tables: runs under other shard counts make 0/1's next run a full one.
        shards = []
        if config.shards:
            echo(f"shard sweep: the full run as {list(config.shards)} processes at once")
            shards = run_shard_sweep(
                db,
                config.shards,
                repeat=config.repeat,
                as_of=config.as_of,
                batch_size=batch_size,
                concurrency=concurrency,
                log_dir=log_dir,
                echo=echo,
            )
        profile = _profile(config, db, log_dir, batch_size, concurrency, echo) if config.profile else []
    finally:
        if (kept := db.keep_or_drop(config.keep)) is not None:
            echo(kept)
    results = BenchResults(
        config=config,
        machine=machine,
        database_version=version,
        database=db.display_name,
        load=load,
        reset_method=reset_method,
        sweep=sweep,
        full=full,
        change=change,
        incremental=incremental,
        reconciling=reconciling,
        loop=loop,
        sql=sql,
        floor=floor,
        profile=profile,
        shards=shards,
        io=io,
    )
    results.total_seconds = time.perf_counter() - started
    return results


def _profile(
    config: BenchConfig, db: BenchDatabase, log_dir: Path, batch_size: int, concurrency: int, echo: Echo
) -> list[str]:
    """One more full run on fresh tables, under py-spy; its stage summary for the report."""
    raw = config.out / "profile.txt"
    wrapper = profiling.py_spy_wrapper(raw)
    echo(f"profile: full run under py-spy -> {raw}")
    db.reset_job_tables()
    db.settle()
    finish_engine(
        start_engine(
            label="profile",
            database_url=db.url,
            as_of=config.as_of,
            batch_size=batch_size,
            concurrency=concurrency,
            full=True,
            log_dir=log_dir,
            wrapper=wrapper,
        )
    )
    return profiling.render(profiling.summarize(raw), raw)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    echo = stderr_echo()
    results = run_or_exit(lambda: run_benchmark(config, echo), echo)
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.write_text(render(results))
    write_plot(results, config.plot)
    best = results.best
    echo(f"report: {config.results}")
    echo(f"plot:   {config.plot}")
    print(
        f"best settings for this machine: MONTAGE_BATCH_SIZE={best.batch_size} "
        f"MAX_CONCURRENT_GENERATIONS={best.concurrency} ({best.users_per_second:,.0f} users/s)"
    )
    for what, value, target, met in results.ratios():
        print(f"  {what}: {value:,.3f} (wanted {target}) {'ok' if met else 'NOT MET'}")
