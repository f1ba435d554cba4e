"""The scale benchmark's smoke run (`python -m benchmarks.scale --smoke`): every report section is there,
each MONTAGE_FULL_RUN_READ value reached its runs, the plot is written and no database is left behind.
Timings are never asserted: CI machines are too noisy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import adbc_driver_postgresql.dbapi as pg
import pytest

from benchmarks.scale import SMOKE_USERS, parse_scale_config
from benchmarks.scale_report import DEFAULT_READ, read_label
from tests.support.database import admin_url

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("# montage-vec scale benchmark", "## Targets", "## Results", "## Data loading", "## Database I/O")
TARGETS = ("1. per-user job time, 600 / 300 users", "5. peak RSS of the job, 600 / 300 users",
           "5. peak RSS of the job at 100,000 users")  # fmt: skip


def run_scale_smoke(out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "benchmarks.scale", "--smoke", "--out", str(out), *options]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)


def assert_complete_report(out: Path, result: subprocess.CompletedProcess[str], reads: tuple[str, ...]) -> str:
    assert result.returncode == 0, result.stderr[-4000:]
    report = (out / "scale.md").read_text()
    for heading in SECTIONS:
        assert re.search(rf"^{re.escape(heading)}\s*$", report, re.MULTILINE), f"missing section {heading!r}"
    for target in TARGETS:
        for read in reads:
            assert re.search(rf"^\| {re.escape(target)} \| {re.escape(read)} \|", report, re.MULTILINE), (target, read)
    for users in SMOKE_USERS:  # a results row and an I/O row per size and read
        for read in reads:
            rows = re.findall(rf"^\| {users:,} \| {re.escape(read)} \|", report, re.MULTILINE)
            assert len(rows) == 2, (users, read, rows)
    assert (out / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](scale.png)" in report
    assert not list(out.glob("*.duckdb*")), "the benchmark's DuckDB files were not removed"
    return report


def stage_names(out: Path, pattern: str) -> list[set[str]]:
    """The stages each matching run's summary line reports."""
    found = []
    for log in sorted(out.glob(f"logs/*/{pattern}.jsonl")):
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        completed = [line for line in lines if line.get("message") == "Batch job completed"]
        found.append(set(completed[-1]["stage_seconds"]))
    return found


@pytest.mark.slow
@pytest.mark.postgres
def test_smoke_postgresql_each_read(tmp_path: Path) -> None:
    out = tmp_path / "scale"
    result = run_scale_smoke(out, "--backend", "postgresql", "--full-run-read", "scan,chunks",
                             "--pg-admin-url", admin_url())  # fmt: skip
    report = assert_complete_report(out, result, ("scan", "chunks"))
    assert "| shared_buffers |" in report.split("\n## Database I/O\n", 1)[1]
    # The value reached the job: a scan run reports its scan stage, a chunks run has none.
    scans, chunks = stage_names(out, "full_*_scan_r1"), stage_names(out, "full_*_chunks_r1")
    assert len(scans) == len(chunks) == len(SMOKE_USERS)
    assert all("scan" in stages for stages in scans) and not any("scan" in stages for stages in chunks)
    names = set(re.findall(r"PostgreSQL database (montage_scale_\d+_\d+)", result.stderr))
    assert len(names) == len(SMOKE_USERS)
    with pg.connect(admin_url(), autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'montage_scale_%'")
        assert not names & {row[0] for row in cursor.fetchall()}, "a benchmark database was not dropped"


@pytest.mark.slow
def test_smoke_duckdb_default_read(tmp_path: Path) -> None:
    out = tmp_path / "scale"
    report = assert_complete_report(out, run_scale_smoke(out, "--backend", "duckdb"), (read_label(DEFAULT_READ),))
    assert "| DUCKDB_MEMORY_LIMIT |" in report


def test_reads_default_to_leaving_the_variable_unset() -> None:
    assert parse_scale_config(["--backend", "duckdb"]).reads == (DEFAULT_READ,)
    assert parse_scale_config(["--backend", "duckdb", "--full-run-read", ""]).reads == (DEFAULT_READ,)
    chosen = parse_scale_config(["--backend", "duckdb", "--full-run-read", "scan,chunks,default"]).reads
    assert chosen == ("scan", "chunks", DEFAULT_READ)


def test_unknown_read_is_refused_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_scale_config(["--backend", "duckdb", "--full-run-read", "scna"])
    assert "unknown value(s) ['scna']" in capsys.readouterr().err


def test_sizes_run_smallest_first() -> None:
    config = parse_scale_config(["--backend", "postgresql", "--users", "1000000,100000,300000,100000"])
    assert config.users == (100_000, 300_000, 1_000_000)
    assert parse_scale_config(["--backend", "postgresql", "--smoke"]).users == SMOKE_USERS
