"""Shared fixtures: an isolated environment, real databases (a DuckDB file, a fresh
PostgreSQL database per test) and an in-process CLI runner that parses JSON log lines.

Helpers live in `tests.support`; only fixtures are defined here. The PostgreSQL server, one
for the whole session, is the plugin tests.support.session_cluster's."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from montage_vec.config import Settings, secrets
from tests.support.cli import CliResult, RunCli, parse_logs
from tests.support.database import postgres_database

pytest_plugins = ("tests.support.session_cluster",)

# Variables the job reads (one per setting); cleared for every test so the machine's
# environment never leaks in.
JOB_VARIABLES = tuple(name.upper() for name in Settings.model_fields)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def default_log_sink() -> Iterator[None]:
    """Each test starts with loguru's own stderr sink: a sink the CLI pointed at an earlier
    test's captured stdout would be closed by now, and the library logs too."""
    logger.remove()
    logger.add(sys.stderr)
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture(autouse=True)
def own_secret_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets a test registers are masked for that test only: registration is process-wide, and a
    short test secret (an API key "key") would mask that word in every later test's messages."""
    monkeypatch.setattr(secrets, "_registry", secrets._Registry())


@pytest.fixture
def duckdb_url(tmp_path: Path) -> str:
    return f"duckdb:///{tmp_path}/montage.duckdb"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["duckdb", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once per backend, on a fresh database."""
    fixture = "duckdb_url" if request.param == "duckdb" else "postgres_url"
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgres)
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> RunCli:
    """Run `montage-vec ARGS` in this process with extra environment variables."""
    from montage_vec.cli import main

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            main(list(args))
            exit_code = 0
        except SystemExit as exc:
            exit_code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return CliResult(exit_code, out, err, parse_logs(out))

    return run
