"""The CLI start-up benchmark (`python -m benchmarks.cli_startup`) runs and reports every command.
Timings are never asserted: CI machines are too noisy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `(?P<command>[^`]+)` \| (?P<median>[\d.]+) s \| (?P<min>[\d.]+) s \| (?P<max>[\d.]+) s \|$")


@pytest.mark.parametrize("script", ["montage-vec", "montage-batch"])
def test_reports_help_version_and_the_floor(script: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "benchmarks.cli_startup", "--repeat", "2"]
    command += ["--script", str(Path(sys.executable).parent / script)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    rows = {found["command"]: found for line in result.stdout.splitlines() if (found := ROW.match(line))}
    assert list(rows) == ["python -c pass (floor)", f"{script} --help", f"{script} --version"], result.stdout
    for row in rows.values():
        assert 0 < float(row["min"]) <= float(row["median"]) <= float(row["max"])
    assert re.search(r"`--help` (meets|misses) the 0.3 s target", result.stdout), result.stdout


def test_refuses_zero_repeats() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "benchmarks.cli_startup", "--repeat", "0"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 2 and "--repeat must be at least 1" in result.stderr
