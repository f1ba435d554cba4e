"""The benchmark's shard sweep (`--shards`) at smoke scale on PostgreSQL: every shard count ran as
that many processes, each its own shard, and they agree on users and montages. Timings are
never asserted: CI machines are too noisy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.config import parse_config
from benchmarks.shard_sweep import server_cpu_seconds
from tests.support.database import postgres_url_of

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (\d+) \|")


@pytest.mark.slow
@pytest.mark.postgres
def test_the_sweep_runs_each_count_as_that_many_shards(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "benchmarks", "--backend", "postgresql", "--smoke", "--shards", "4,2"]
    command += ["--out", str(out), "--pg-admin-url", postgres_url_of("postgres")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-4000:]

    section = (out / "results.md").read_text().split("\n## Shard sweep\n", 1)[1]
    counts = [found.group(1) for line in section.splitlines() if (found := ROW.match(line))]
    assert counts == ["1", "2", "4"]
    assert "Users and montages are the same at every shard count: yes." in section
    for count in (1, 2, 4):
        logs = sorted(out.glob(f"logs/*/shards_*of{count}.jsonl"))
        shards = {json.loads(line).get("shard") for log in logs for line in log.read_text().splitlines()} - {None}
        assert shards == {f"{index}/{count}" for index in range(count)}, count


def test_shards_need_postgresql() -> None:
    with pytest.raises(SystemExit) as refused:
        parse_config(["--backend", "duckdb", "--shards", "2"])
    assert "--shards needs --backend postgresql" in str(refused.value)


def test_the_sweep_always_has_one_shard_to_compare_with() -> None:
    assert parse_config(["--backend", "postgresql", "--shards", "4,2,2"]).shards == (1, 2, 4)
    assert parse_config(["--backend", "postgresql"]).shards == ()


def test_server_cpu_is_none_without_a_process_to_read() -> None:
    assert server_cpu_seconds(None) is None
    assert server_cpu_seconds(2**22 + 1) is None  # beyond Linux's largest pid
    assert (server_cpu_seconds(os.getpid()) or 0) > 0  # this process, read like a postmaster
