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

from tests.support.database import admin_url

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SECTIONS = (
    "# montage-vec throughput benchmark",
    "## Target ratios",
    "## Full run",
    "## Incremental run",
    "## Per-stage breakdown",
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


def test_smoke_duckdb(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert_complete_report(out, run_smoke("duckdb", out))


@pytest.mark.postgres
def test_smoke_postgresql(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    report = assert_complete_report(out, run_smoke("postgresql", out))
    name = re.search(r"PostgreSQL database (montage_bench_\w+)", report)
    assert name is not None
    with pg.connect(admin_url(), autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM pg_database WHERE datname = '{name.group(1)}'")
        assert cursor.fetchone() == (0,), "the benchmark database was not dropped"
