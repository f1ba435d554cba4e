"""The scale benchmark as a PNG: users/s against users (log scale) and the job's peak RSS, one line per read."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from benchmarks.scale_report import RSS_LIMIT_BYTES, ScaleResults, read_label

MIB = 2**20


def write_scale_plot(results: ScaleResults, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    users = [point.users for point in results.points]
    figure, (rate, memory) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    for read in results.reads:
        medians = [point.median(read) for point in results.points]
        label = f"MONTAGE_FULL_RUN_READ={read_label(read)}"
        rate.plot(users, [run.users_per_second for run in medians], marker="o", label=label)
        memory.plot(users, [run.peak_rss_bytes / MIB for run in medians], marker="o", label=label)
    # Target 5's ceiling at 100,000 users, for scale.
    limit = RSS_LIMIT_BYTES / MIB
    memory.axhline(limit, color="grey", linestyle="--", linewidth=1, label="500 MB (target at 100,000 users)")
    for axes, ylabel in ((rate, "users/s (full run, job time)"), (memory, "peak RSS of the job (MiB)")):
        axes.set_xscale("log")
        axes.set_xticks(users, [f"{count:,}" for count in users])
        axes.minorticks_off()  # the log scale's minor ticks would crowd the user counts
        axes.set_xlabel("users")
        axes.set_ylabel(ylabel)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    memory.set_ylim(top=max(limit, memory.get_ylim()[1]) * 1.1)  # the ceiling's line inside the frame
    machine = results.machine
    backend = "PostgreSQL" if results.backend == "postgresql" else "DuckDB"
    version = results.points[0].database_version
    figure.suptitle(
        f"montage-vec full run against users, {backend} {version}, default settings; "
        f"{machine.cpus} CPUs, {machine.date}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
