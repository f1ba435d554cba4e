"""The benchmark's smoke run (`python -m benchmarks --smoke`) on both backends: every report section
is there and the plot is written. Timings are never asserted: CI machines are too noisy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import adbc_driver_postgresql.dbapi as pg
import pytest

from montage_vec.config import Settings
from tests.support.database import admin_url

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SECTIONS = (
    "# montage-vec throughput benchmark",
    "## Target ratios",
    "## Full run",
    "## Incremental run",
    "## Per-stage breakdown",
    "## Database I/O",
    "## Baseline 1: per-user loop",
    "## Baseline 2: set-based SQL",
    "## Baseline 3: transfer floor",
    "## Sweep",
    "## Best settings",
)
RATIOS = (
    "baseline 2 (set-based SQL) time / full run time",
    "full run time / transfer floor time",
    "full run users/s / per-user loop users/s",
    "incremental (1% changed) time / full run time",
    "peak RSS",
)
STAGES = ("candidate selection", "extract", "compute", "write")


def run_smoke(backend: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "benchmarks", "--backend", backend, "--smoke", "--out", str(out)]
    command += ["--pg-admin-url", admin_url()] if backend == "postgresql" else []
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)


def assert_complete_report(out: Path, result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr[-4000:]
    report = (out / "results.md").read_text()
    for heading in SECTIONS:
        assert re.search(rf"^{re.escape(heading)}\s*$", report, re.MULTILINE), f"missing section {heading!r}"
    for ratio in RATIOS:
        assert ratio in report, f"missing ratio {ratio!r}"
    for stage in STAGES:
        assert f"| full | {stage} |" in report and f"| incremental | {stage} |" in report, stage
    assert "Montage counts equal the engine's" in report
    assert "MONTAGE_BATCH_SIZE=" in report and "MAX_CONCURRENT_GENERATIONS=" in report
    assert "best settings for this machine" in result.stdout
    plot = out / "throughput.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The smoke run writes only into --out, never over the published report.
    assert not list(out.glob("*.duckdb")), "the benchmark database was not removed"
    return report


def io_section(report: str) -> str:
    return report.split("\n## Database I/O\n", 1)[1].split("\n## ", 1)[0]


def test_smoke_duckdb(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    io = io_section(assert_complete_report(out, run_smoke("duckdb", out)))
    assert f"| DUCKDB_MEMORY_LIMIT | {Settings.model_fields['duckdb_memory_limit'].default} (default) |" in io
    assert "| shared_buffers | not applicable |" in io
    assert "| database file (after the full run) |" in io
    disk = r"[\d.,]+ (B|KiB|MiB|GiB)"
    assert re.search(rf"^\| full \| not applicable \| not applicable \| not applicable \| {disk} \|$", io, re.M)


@pytest.mark.postgres
def test_smoke_postgresql(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    report = assert_complete_report(out, run_smoke("postgresql", out))
    io = io_section(report)
    for setting in ("shared_buffers", "effective_cache_size", "work_mem", "max_wal_size"):
        assert re.search(rf"^\| {setting} \| \d+\w*B \|$", io, re.MULTILINE), setting
    assert "| checkins (after loading) |" in io and "| montage_items (after the full run) |" in io
    for table in ("checkins", "montages", "montage_items"):  # each was read or written by the full run
        assert re.search(rf"^\| {table} \| [\d,]+ \([^)]*\) / [\d,]+ \| \d+\.\d%", io, re.MULTILINE), table
    for run in ("full", "incremental", "reconciling"):
        assert re.search(rf"^\| {run} \| [\d,]+ \([^)]*\) / [\d,]+ \| \d+\.\d% \|", io, re.MULTILINE), run
    name = re.search(r"PostgreSQL database (montage_bench_\w+)", report)
    assert name is not None
    with pg.connect(admin_url(), autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM pg_database WHERE datname = '{name.group(1)}'")
        assert cursor.fetchone() == (0,), "the benchmark database was not dropped"
