"""The sweep as a PNG: users/s against batch size, one line per concurrency."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from benchmarks.results import BenchResults


def write_plot(results: BenchResults, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
    for concurrency in sorted({run.concurrency for run in results.sweep}):
        runs = sorted((r for r in results.sweep if r.concurrency == concurrency), key=lambda r: r.batch_size)
        axes.plot(
            [r.batch_size for r in runs],
            [r.users_per_second for r in runs],
            marker="o",
            label=f"concurrency {concurrency}",
        )
    best = results.best
    axes.annotate(
        "best",
        (best.batch_size, best.users_per_second),
        textcoords="offset points",
        xytext=(0, 8),
        ha="center",
    )
    sizes = sorted({run.batch_size for run in results.sweep})
    if len(sizes) > 1 and sizes[-1] / sizes[0] >= 4:
        axes.set_xscale("log")
    axes.set_xticks(sizes, [f"{size:,}" for size in sizes])
    axes.set_xlabel("MONTAGE_BATCH_SIZE (users per chunk)")
    axes.set_ylabel("users/s (full run, job time)")
    axes.set_ylim(bottom=0)
    machine = results.machine
    backend = "PostgreSQL" if results.config.backend == "postgresql" else "DuckDB"
    axes.set_title(
        f"montage-vec full run, {results.load.users:,} users, {backend} {results.database_version}\n"
        f"{machine.cpus} CPUs, {machine.date}",
        fontsize=10,
    )
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
