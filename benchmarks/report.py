"""The Markdown report (benchmarks/results.md): context, target ratios, runs, baselines, sweep."""

from __future__ import annotations

import os

from benchmarks.cpu_stats import FLOOR_CPU, SQL_BASELINE_CPU, render_cpu
from benchmarks.engine_runs import STAGES, EngineRun
from benchmarks.io_stats import render_io
from benchmarks.results import BenchResults
from benchmarks.shard_sweep import render_shards

MIB = 2**20


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _s(seconds: float) -> str:
    return f"{seconds:,.2f} s" if seconds < 100 else f"{seconds:,.0f} s"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _ratio(value: float) -> str:
    return f"{value:.1%}" if value < 0.1 else f"{value:,.2f}x"


def _share(value: float, target: str) -> str:
    """Shares of the full run (targets in %, and the untargeted reconciling run) as percentages."""
    return f"{value:.1%}" if target.endswith("%") or target == "-" else _ratio(value)


def _mib(size: int) -> str:
    return f"{size / MIB:,.0f} MiB"


def _context(r: BenchResults) -> list[str]:
    c, m = r.config, r.machine
    versions = ", ".join(f"{name} {v}" for name, v in m.packages.items())
    database = "PostgreSQL" if c.backend == "postgresql" else "DuckDB (embedded)"
    return [
        "# montage-vec throughput benchmark",
        "",
        f"- **Date:** {m.date}",
        f"- **Machine:** {m.cpus} CPUs ({m.cpu_model}), {m.ram_bytes / 2**30:.1f} GiB RAM, "
        f"load average at start {m.load_average[0]:.2f} / {m.load_average[1]:.2f} / {m.load_average[2]:.2f}",
        f"- **Backend:** {database} {r.database_version} ({r.database})",
        f"- **Software:** Python {m.python}, {versions}",
        f"- **Command:** `{c.command}`",
        f"- **Data:** {r.load.users:,} users, {r.load.checkins:,} check-ins, seed {c.seed}, as_of "
        f"{c.as_of.isoformat()}; generated in {_s(r.load.generate_seconds)}, loaded in {_s(r.load.load_seconds)}, "
        f"keys/indexes/ANALYZE in {_s(r.load.index_seconds)}; database size {_mib(r.load.size_bytes)}",
        f"- **Benchmark wall time:** {_s(r.total_seconds)}",
        "",
        "Timings on a shared machine are noisy: compare ratios, and re-run before drawing conclusions.",
        "Engine runs are child processes (`python -m montage_vec once --as-of ...`); *job time* is the run's",
        "`duration_seconds` (lock to summary, including candidate selection, excluding interpreter start-up).",
        "",
    ]


def _ratios(r: BenchResults) -> list[str]:
    rows = [[what, _share(value, want), want, "yes" if met else "**no**"] for what, value, want, met in r.ratios()]
    rows.append(["peak RSS of the full run (job process)", _mib(r.full.peak_rss_bytes), "-", "-"])
    rows.append(["slowest chunk of the full run (SIGTERM drain)", f"{r.full.slowest_chunk_seconds:.2f} s", "-", "-"])
    return ["## Target ratios", "", *_table(["ratio", "measured", "wanted", "met"], rows), ""]


def _run_rows(runs: list[EngineRun]) -> list[list[str]]:
    return [
        [run.label, run.mode, f"{run.batch_size:,}", str(run.concurrency), f"{run.processed:,}", f"{run.checkins:,}",
         _s(run.job_seconds), _s(run.process_seconds), _rate(run.users_per_second), _rate(run.checkins_per_second),
         f"{run.montages:,}", f"{run.montages_written:,}", _mib(run.peak_rss_bytes)]
        for run in runs
    ]  # fmt: skip


RUN_HEADER = ["run", "mode", "batch", "conc.", "users", "check-ins", "job time", "process time", "users/s",
              "check-ins/s", "montages", "written", "peak RSS"]  # fmt: skip


def _runs(r: BenchResults) -> list[str]:
    full, inc, change = r.full, r.incremental, r.change
    return [
        "## Full run",
        "",
        f"`--full` on freshly emptied montage tables ({r.reset_method}), settings: "
        f"`MONTAGE_BATCH_SIZE={full.batch_size}`, `MAX_CONCURRENT_GENERATIONS={full.concurrency}` "
        f"({r.config.run_settings}). {full.chunks} chunks, {full.errors} errors.",
        "",
        *_table(RUN_HEADER, _run_rows([full])),
        "",
        "## Incremental run",
        "",
        f"After the full run, {change.users:,} users ({r.config.change_fraction:.0%}) were changed, "
        f"{change.rows_touched:,} check-ins touched with `updated_at` = {change.updated_at.isoformat()}: "
        f"{change.retagged_users:,} had their 3 newest check-ins re-tagged, {change.deleted_users:,} had their 2 "
        f"newest soft-deleted, {change.inserting_users:,} got 3 new check-ins. Same as_of, same settings, "
        f"{inc.candidates:,} candidates, {inc.montages_written:,} montages written, "
        f"{inc.montages_removed:,} removed. Change capture: **{r.config.change_capture}**"
        + (
            " (candidates beyond the changed users come from `WATERMARK_OVERLAP`, which re-reads the last 10 "
            "minutes before the previous watermark)"
            if r.config.change_capture == "watermark"
            else " (the capture triggers list exactly the changed users)"
        )
        + f'; reconciliation query: {"yes" if inc.reconciled else "no"} (README, "Reconciliation").',
        "",
        *_table(RUN_HEADER, _run_rows([inc])),
        "",
        f"Incremental / full job time: **{inc.job_seconds / full.job_seconds if full.job_seconds else 0:.1%}**.",
        "",
        "A second incremental run, with no changes and `MONTAGE_RECONCILE_EVERY=1`, measures the "
        "reconciliation query (it reads the whole source and `montage_items`):",
        "",
        *_table(RUN_HEADER, _run_rows([r.reconciling])),
        "",
        f"Reconciling run / full job time: **{_fraction(r.reconciling.job_seconds, full.job_seconds):.1%}**.",
        "",
    ]


def _fraction(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _stages(r: BenchResults) -> list[str]:
    rows = []
    for run in (r.full, r.incremental):
        spans = [("start-up (imports)", run.startup_seconds), ("candidate selection", run.candidate_seconds)]
        spans += [(stage, run.stage_seconds.get(stage, 0.0)) for stage in STAGES]
        for stage, seconds in spans:
            users = f"{run.processed / seconds:,.0f}" if seconds > 0 and stage != "start-up (imports)" else "-"
            checkins = f"{run.checkins / seconds:,.0f}" if seconds > 0 and stage in STAGES else "-"
            rows.append([run.label, stage, _s(seconds), users, checkins])
        rows.append([run.label, "**job time (wall)**", _s(run.job_seconds), _rate(run.users_per_second),
                     _rate(run.checkins_per_second)])  # fmt: skip
    return [
        "## Per-stage breakdown",
        "",
        "extract, compute and write are summed over chunks, so with concurrency > 1 they add up to more than",
        "the wall time; users/s and check-ins/s per stage are per second of that stage (per worker).",
        "Start-up is the interpreter's import time before the job starts (not part of job time).",
        "",
        *_table(["run", "stage", "seconds", "users/s", "check-ins/s"], rows),
        "",
    ]


def _baselines(r: BenchResults) -> list[str]:
    loop, sql, floor, full = r.loop, r.sql, r.floor, r.full
    loop_rows = [[stage, _s(seconds)] for stage, seconds in loop.stage_seconds.items()]
    loop_rows.append(["**total**", _s(loop.seconds)])
    match = "equal the engine's" if sql.counts_match else "**differ** from the engine's"
    lines = [
        "## Baseline 1: per-user loop",
        "",
        f"The old design on a sample of {loop.users:,} users: per user one transaction, one parameterized query, "
        f"montages computed in plain Python, one DELETE per table and one INSERT per montage and item "
        f"({loop.statements:,} statements, {loop.montages:,} montages, {loop.items:,} items) into `bl_montages` / "
        f"`bl_montage_items`. **{_rate(loop.users_per_second)} users/s** against the full run's "
        f"{_rate(full.users_per_second)} users/s. Agreement check: {loop.matching_montages:,} of the engine's "
        f"{loop.engine_montages:,} montages of these users reproduced exactly.",
        "",
        *_table(["stage", "seconds"], loop_rows),
        "",
        "## Baseline 2: set-based SQL",
        "",
        "The whole job as one `INSERT ... SELECT` with window functions per table, into fresh `sql_montages` / "
        "`sql_montage_items` with the product's keys and indexes.",
        "",
        *_table(
            ["statement", "seconds", "rows"],
            [
                ["INSERT montages", _s(sql.montages_seconds), f"{sql.general + sql.interest:,}"],
                ["INSERT montage_items", _s(sql.items_seconds), f"{sql.items:,}"],
                ["**total**", _s(sql.seconds), "-"],
            ],
        ),
        "",
        *_table(
            ["", "SQL baseline", "engine (same as_of)", "identical rows"],
            [
                ["general montages", f"{sql.general:,}", f"{sql.engine_general:,}", "-"],
                ["interest montages", f"{sql.interest:,}", f"{sql.engine_interest:,}", "-"],
                [
                    "montages (id, item_count, valid_until)",
                    f"{sql.general + sql.interest:,}",
                    f"{sql.engine_general + sql.engine_interest:,}",
                    f"{sql.same_montages:,}",
                ],
                ["items (all columns)", f"{sql.items:,}", f"{sql.engine_items:,}", f"{sql.same_items:,}"],
            ],
        ),
        "",
        f"Montage counts {match}.",
    ]
    if sql.differing_montages:
        lines += [
            f"{sql.differing_montages:,} montages are in one table only; {sql.sigma_montages:,} of them have a Greek "
            "sigma in their interest."
        ]
    if sql.sigma_montages:
        lines += [
            "SQL's `lower()` maps 'Σ' to 'σ' everywhere, while Python's `str.lower()` (the contract, rule 2) gives "
            "'ς' at the end of a word, so 'ΟΔΟΣ' and 'οδος' make one interest for the engine and two ('οδοσ', "
            "'οδος') for the SQL. Items of check-ins carrying such a tag differ in their `tags` metadata too.",
        ]
    if sql.examples:
        lines += ["Differences (first few): " + "; ".join(sql.examples) + "."]
    lines += [
        "",
        "## Baseline 3: transfer floor",
        "",
        "No computation: the engine's extraction query over all users streamed out as Arrow, and the engine's "
        "output rows (montages and items, in its staging shape) bulk-loaded into unindexed tables.",
        "",
        *_table(
            ["direction", "seconds", "rows", "Arrow size"],
            [
                ["read check-ins", _s(floor.read_seconds), f"{floor.read_rows:,}", _mib(floor.read_bytes)],
                ["write montages + items", _s(floor.write_seconds), f"{floor.write_rows:,}", _mib(floor.write_bytes)],
                ["**total**", _s(floor.seconds), "-", "-"],
            ],
        ),
        "",
    ]
    return lines


def _sweep(r: BenchResults) -> list[str]:
    best = r.best
    sizes = sorted({run.batch_size for run in r.sweep})
    workers = sorted({run.concurrency for run in r.sweep})
    by_key = {(run.batch_size, run.concurrency): run for run in r.sweep}
    grid = [
        [f"{size:,}"]
        + [
            f"{_rate(run.users_per_second)} users/s, {_s(run.job_seconds)}, {_mib(run.peak_rss_bytes)}"
            if (run := by_key.get((size, w)))
            else "-"
            for w in workers
        ]
        for size in sizes
    ]
    return [
        "## Sweep",
        "",
        f"Full runs on fresh writes: before each run, {r.reset_method}. Cells: users/s, job time, peak RSS"
        + (f" of the median of {r.config.repeat} runs." if r.config.repeat > 1 else "."),
        "",
        *_table(["batch size"] + [f"concurrency {w}" for w in workers], grid),
        "",
        f"![throughput]({os.path.relpath(r.config.plot, r.config.results.parent)})",
        "",
        "## Best settings",
        "",
        f"On this machine: `MONTAGE_BATCH_SIZE={best.batch_size}` and `MAX_CONCURRENT_GENERATIONS={best.concurrency}` "
        f"({_rate(best.users_per_second)} users/s, {_s(best.job_seconds)}, peak RSS {_mib(best.peak_rss_bytes)}).",
        "",
    ]


def render(results: BenchResults) -> str:
    lines = _context(results) + _ratios(results) + _runs(results) + _stages(results)
    io_runs = [(run.label, run.label) for run in (results.full, results.incremental, results.reconciling)]
    lines += render_io(results.io, io_runs, results.machine.ram_bytes)
    cpu_runs = [*io_runs, ("baseline 2: set-based SQL", SQL_BASELINE_CPU), ("baseline 3: transfer floor", FLOOR_CPU)]
    if results.io is not None:
        shown = [(name, results.io.cpu[label]) for name, label in cpu_runs if label in results.io.cpu]
        lines += render_cpu(shown, results.machine.cpus)
    lines += _baselines(results) + _sweep(results) + render_shards(results.shards)
    lines += results.profile
    if results.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in results.notes], ""]
    return "\n".join(lines)
