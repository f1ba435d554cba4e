"""The console scripts as a shell sees them: each shows its own name (`montage-batch` is an
alias), `--version`, shell completion, the commands registered at import, and what importing the
CLI and printing its help load (nothing heavy: `--help` must start fast; its time is measured by
benchmarks/cli_startup.py, never asserted here). Real processes, since a process's imports and
its argv[0] are what these are about."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from montage_vec.cli.common import program_name
from tests.support.processes import SCRIPTS, job_env, run_job

SCRIPT_NAMES = ("montage-vec", "montage-batch")
# What `--help` and completion never need (README, "Commands"; the commands import them when they run).
HEAVY = ("polars", "pyarrow", "numpy", "duckdb", "adbc_driver_manager", "pydantic", "pydantic_settings", "httpx",
         "prometheus_client", "croniter")  # fmt: skip


def python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -c CODE` with the project's interpreter, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-c", code], env=job_env(**env), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def imported_modules(importtime_report: str) -> set[str]:
    """The top-level packages named in a `-X importtime` report (stderr)."""
    names = set()
    for line in importtime_report.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


# -- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_each_script_shows_its_own_name(script: str, tmp_path: Path) -> None:
    helped = run_job("--help", env=job_env(), cwd=tmp_path, script=script)
    versioned = run_job("--version", env=job_env(), cwd=tmp_path, script=script)
    misused = run_job("once", "--batch-size", "0", env=job_env(), cwd=tmp_path, script=script)

    assert helped.exit_code == 0, helped.everything()
    assert helped.stdout.startswith(f"Usage: {script} [OPTIONS] [COMMAND]"), helped.stdout
    assert versioned.exit_code == 0, versioned.everything()
    assert versioned.stdout.strip() == f"{script} {version('montage-vec')}"
    assert misused.exit_code == 2, misused.everything()
    assert misused.stderr.startswith(f"Usage: {script} once [OPTIONS]"), misused.stderr


def test_python_dash_m_is_montage_vec(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "montage_vec", "--help"], env=job_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("Usage: montage-vec [OPTIONS]"), completed.stdout


@pytest.mark.parametrize(
    ("argv0", "name"),
    [
        ("/venv/bin/montage-vec", "montage-vec"),
        ("/venv/bin/montage-batch", "montage-batch"),
        ("montage-batch", "montage-batch"),
        ("/repo/montage_vec/__main__.py", "montage-vec"),  # python -m montage_vec
        ("-c", "montage-vec"),
        ("", "montage-vec"),
    ],
)
def test_program_name(argv0: str, name: str) -> None:
    assert program_name(argv0) == name


# -- shell completion --------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_bash_completion_script_and_completions(script: str, tmp_path: Path) -> None:
    variable = f"_{script.replace('-', '_').upper()}_COMPLETE"
    source = subprocess.run(
        [str(SCRIPTS / script)], env=job_env(**{variable: "bash_source"}), capture_output=True, text=True, timeout=60
    )
    assert source.returncode == 0, source.stderr
    function = f"_{script.replace('-', '_')}_completion"
    assert f"complete -o nosort -F {function} {script}" in source.stdout, source.stdout
    assert f"{variable}=bash_complete" in source.stdout

    def complete(*words: str) -> list[str]:
        env = job_env(**{variable: "bash_complete", "COMP_WORDS": " ".join([script, *words]),
                         "COMP_CWORD": str(len(words))})  # fmt: skip
        completed = subprocess.run([str(SCRIPTS / script)], env=env, capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, completed.stderr
        return completed.stdout.splitlines()

    assert complete("d") == ["plain,demo"]  # registered at import, not by main()
    assert complete("once", "--b") == ["plain,--batch-size"]
    assert "plain,--json" in complete("show", "--")


# -- what importing the CLI loads ----------------------------------------------------------------------------


def test_importing_the_cli_registers_every_command_and_loads_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import json, sys; from montage_vec.cli import cli; "
        "print(json.dumps({'commands': sorted(cli.commands), 'modules': sorted(sys.modules)}))"
    )
    completed = python(code, tmp_path)
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout)
    assert outcome["commands"] == ["demo", "explain", "health", "migrate", "once", "scheduler", "show"]
    loaded = {module.split(".")[0] for module in outcome["modules"]}
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("once", "--help")], ids=" ".join)
def test_help_and_version_load_nothing_heavy(args: tuple[str, ...], tmp_path: Path) -> None:
    result = run_job(*args, env=job_env(PYTHONPROFILEIMPORTTIME="1"), cwd=tmp_path)
    assert result.exit_code == 0, result.everything()
    loaded = imported_modules(result.stderr)
    assert {"click", "montage_vec"} <= loaded, "the import report is empty: PYTHONPROFILEIMPORTTIME had no effect"
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_settings_still_load_on_first_use(tmp_path: Path) -> None:
    """config's lazy names are the real ones, for code that imports them from the package."""
    code = (
        "import montage_vec.config as c; from montage_vec.config.settings import Settings; "
        "assert c.Settings is Settings; print(c.load_settings().montage_batch_size)"
    )
    completed = python(code, tmp_path, MONTAGE_BATCH_SIZE="77")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "77"
