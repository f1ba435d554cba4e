"""Shared fixtures: an isolated environment, real databases (a DuckDB file, a fresh
PostgreSQL database per test) and an in-process CLI runner that parses JSON log lines."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import pytest

from montage_vec.config import Settings
from tests.helpers import CliResult

PG_ADMIN_URL = os.environ.get("MONTAGE_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")

# Variables the job reads (one per setting); cleared for every test so the machine's
# environment never leaks in.
JOB_VARIABLES = tuple(name.upper() for name in Settings.model_fields)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def duckdb_url(tmp_path: Any) -> str:
    return f"duckdb:///{tmp_path}/montage.duckdb"


def _admin_execute(sql: str) -> None:
    with pg.connect(PG_ADMIN_URL, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(sql)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"montage_test_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["duckdb", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once per backend, on a fresh database."""
    fixture = "duckdb_url" if request.param == "duckdb" else "postgres_url"
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgres)
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
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
        logs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return CliResult(exit_code, out, err, logs)

    return run
