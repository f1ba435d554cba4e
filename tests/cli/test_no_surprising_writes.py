"""No surprising writes: only `migrate` and `demo` create a DuckDB file (or its folder); `show`,
`health` and `once --dry-run` open it read-only, so they work on a read-only file and beside
another process that reads it.

The read-only files are real (chmod 0444 in a 0555 folder), but root ignores permissions, and
the tests may run as root. So each also runs while this process holds the file open with
DuckDB's own read-only lock, which a read-write open cannot get whoever runs it (a real `once`
exits 75 then): the commands that succeed beside it opened the file read-only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from tests.support.cli import CliResult, RunCli, run_once
from tests.support.data import AS_OF, checkin, days, load_checkins, new_id
from tests.support.processes import job_env, run_job

EXIT_NOT_MIGRATED = 3
EXIT_LOCKED = 75


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def assert_says_migrate(result: CliResult, path: Path) -> None:
    text = result.stdout + result.stderr
    assert f"no DuckDB file at {path}" in text and "montage-vec migrate" in text and "montage-vec demo" in text, (
        result.everything()
    )
    assert "Traceback" not in text


# -- a missing file is never created --------------------------------------------------------------------------


def test_no_command_but_migrate_and_demo_creates_a_file_in_an_empty_folder(tmp_path: Path, run_cli: RunCli) -> None:
    """The default database is ./montage.duckdb (the tests run in tmp_path)."""
    default = tmp_path / "montage.duckdb"

    once = run_cli("once")
    dry_run = run_cli("once", "--dry-run")
    shown = run_cli("show", "--user-id", new_id())
    explained = run_cli("explain", "--user-id", new_id())
    scheduler = run_cli("scheduler")  # refuses at start-up instead of failing every scheduled run
    health = run_cli("health")

    for result in (once, dry_run, shown, explained, scheduler):
        assert result.exit_code == EXIT_NOT_MIGRATED, result.everything()
        assert_says_migrate(result, default)
    assert once.log("Batch job failed")["error_type"] == "SchemaNotMigratedError"
    assert health.exit_code == 1, health.everything()
    assert_says_migrate(health, default)
    assert listing(tmp_path) == []


def test_a_mistyped_path_creates_no_folders(tmp_path: Path, run_cli: RunCli) -> None:
    typo = tmp_path / "typo" / "deeper" / "m.duckdb"
    env = {"DATABASE_URL": f"duckdb:///{typo}"}

    for args in (("once",), ("once", "--dry-run"), ("show", "--user-id", new_id()), ("health",)):
        result = run_cli(*args, env=env)
        assert result.exit_code != 0, result.everything()
        assert_says_migrate(result, typo)
    assert listing(tmp_path) == []


def test_migrate_creates_the_file_and_its_folder(tmp_path: Path, run_cli: RunCli) -> None:
    path = tmp_path / "data" / "montage.duckdb"

    result = run_cli("migrate", env={"DATABASE_URL": f"duckdb:///{path}"})

    assert result.exit_code == 0, result.everything()
    assert path.is_file()


# -- read-only commands on a read-only file ----------------------------------------------------------------


@pytest.fixture
def read_only_database(tmp_path: Path, run_cli: RunCli) -> Iterator[tuple[Path, str]]:
    """A DuckDB file with one user's montages, made read-only (file 0444, folder 0555); and that user."""
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "montage.duckdb"
    url = f"duckdb:///{path}"
    user = new_id()
    load_checkins(url, [checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for i in range(3)])
    run_once(run_cli, url)
    path.chmod(0o444)
    folder.chmod(0o555)  # not even a .wal could be created
    try:
        yield path, user
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)


@contextmanager
def held_read_only(path: Path) -> Iterator[None]:
    """This process reads the file: another process can open it read-only, never read-write."""
    with duckdb.connect(str(path), read_only=True):
        yield


def read_only_commands(path: Path, user: str, cwd: Path) -> dict[str, CliResult]:
    env = job_env(DATABASE_URL=f"duckdb:///{path}")
    return {
        "show": run_job("show", "--user-id", user, env=env, cwd=cwd),
        "show --json": run_job("show", "--user-id", user, "--json", env=env, cwd=cwd),
        "explain": run_job("explain", "--user-id", user, "--as-of", AS_OF.isoformat(), env=env, cwd=cwd),
        "health": run_job("health", env=env, cwd=cwd),
        "once --dry-run": run_job("once", "--dry-run", "--as-of", AS_OF.isoformat(), env=env, cwd=cwd),
    }


def assert_all_succeeded(results: dict[str, CliResult], user: str) -> None:
    for command, result in results.items():
        assert result.exit_code == 0, f"{command}: {result.everything()}"
    assert f"user {user}: 2 montage(s)" in results["show"].stdout
    assert f'"user_id": "{user}"' in results["show --json"].stdout
    assert "Health check passed" in results["health"].stdout
    assert "2 unchanged" in results["explain"].stdout
    assert results["once --dry-run"].log("Batch job completed")["dry_run"] is True


def test_read_only_commands_work_on_a_read_only_file(read_only_database: tuple[Path, str], tmp_path: Path) -> None:
    path, user = read_only_database
    before = (path.read_bytes(), listing(path.parent))

    results = read_only_commands(path, user, tmp_path)

    assert_all_succeeded(results, user)
    assert (path.read_bytes(), listing(path.parent)) == before
    if os.geteuid() != 0:  # root may write anyway: the next test proves the read-only open for it
        refused = run_job("once", "--as-of", AS_OF.isoformat(), env=job_env(DATABASE_URL=f"duckdb:///{path}"))
        assert refused.exit_code != 0, refused.everything()


def test_read_only_commands_open_the_file_read_only(read_only_database: tuple[Path, str], tmp_path: Path) -> None:
    path, user = read_only_database
    env = job_env(DATABASE_URL=f"duckdb:///{path}")

    with held_read_only(path):
        results = read_only_commands(path, user, tmp_path)
        writer = run_job("once", "--as-of", AS_OF.isoformat(), env=env, cwd=tmp_path)

    assert_all_succeeded(results, user)
    assert writer.exit_code == EXIT_LOCKED, writer.everything()  # a read-write open is refused beside a reader


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to become nobody")
def test_as_a_user_who_may_not_write_the_file(read_only_database: tuple[Path, str]) -> None:
    """File permissions for real (root ignores them): as nobody, reads work and a run says why it cannot."""
    path, user = read_only_database
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:  # where nobody may read, unlike tmp_path
        Path(shared).chmod(0o755)
        copy = Path(shared) / "montage.duckdb"
        shutil.copyfile(path, copy)
        copy.chmod(0o444)
        env = job_env(DATABASE_URL=f"duckdb:///{copy}")
        script = str(Path(sys.executable).parent / "montage-vec")

        def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*NOBODY, script, *args], env=env, cwd=shared, capture_output=True, text=True, timeout=60, check=False
            )

        explained = as_nobody("explain", "--user-id", user, "--as-of", AS_OF.isoformat())
        dry = as_nobody("once", "--dry-run", "--as-of", AS_OF.isoformat())
        refused = as_nobody("once", "--as-of", AS_OF.isoformat())
    assert explained.returncode == 0, explained.stderr
    assert dry.returncode == 0, dry.stderr
    assert refused.returncode == 77, refused.stdout + refused.stderr
    assert "permission denied" in refused.stderr and "--dry-run" in refused.stderr, refused.stderr


def test_a_folder_or_a_file_that_is_no_database_is_named_as_such(tmp_path: Path, run_cli: RunCli) -> None:
    folder = run_cli("once", env={"DATABASE_URL": f"duckdb:///{tmp_path}"})
    migrate_folder = run_cli("migrate", env={"DATABASE_URL": f"duckdb:///{tmp_path}"})
    for result in (folder, migrate_folder):
        assert result.exit_code == 2, result.everything()
        assert "is a folder" in result.stderr, result.everything()
    garbage = tmp_path / "notes.duckdb"
    garbage.write_text("not a database")
    shown = run_cli("show", "--user-id", new_id(), env={"DATABASE_URL": f"duckdb:///{garbage}"})
    assert shown.exit_code == 3, shown.everything()
    assert "is not a DuckDB database file" in shown.stderr
    assert garbage.read_text() == "not a database"
