"""A full run that reads its check-ins in one scan (MONTAGE_FULL_RUN_READ=scan, job/scan.py) stores
exactly what one that queries each chunk stores, isolates bad users the same way, and leaves
nothing behind in MONTAGE_SCRATCH_DIR however it ends; incremental and named-user runs keep
their queries.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from montage_vec.config import load_settings
from montage_vec.job import chunks as chunks_module
from montage_vec.job import memory, scan
from montage_vec.job.control import RunControl
from montage_vec.job.plan import RunOptions
from montage_vec.job.runner import run_job
from montage_vec.job.spool import CheckinSpool
from montage_vec.stores import open_store
from tests.support.cli import CliResult, RunCli
from tests.support.data import SyntheticDatabase, load_frame, montages_by_user, retry_list, stored_montages, watermark
from tests.support.database import count, execute

SPOOLED = "check-ins read in one scan and spooled"
EXIT_FAILED = 1


@pytest.fixture
def synthetic(database_url: str) -> SyntheticDatabase:
    database = SyntheticDatabase(database_url, users=30)
    load_frame(database_url, database.frame())
    return database


@pytest.fixture
def small_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames of 100 rows and a buffer of 16 KiB (with MONTAGE_MEMORY_BUDGET=1MiB): several flushes."""
    monkeypatch.setattr(scan, "SCAN_BATCH_ROWS", 100)
    monkeypatch.setattr(memory, "MIN_SPOOL_BUFFER_BYTES", 16 * 1024)


def full_run(run_cli: RunCli, database: SyntheticDatabase, read: str, *args: str, **env: str) -> CliResult:
    environment = {"DATABASE_URL": database.url, "MONTAGE_FULL_RUN_READ": read, "MONTAGE_MEMORY_BUDGET": "1MiB"}
    return run_cli("once", "--full", "--as-of", database.as_of.isoformat(), *args, env={**environment, **env})


def stale_montage(url: str, user_id: str, montage_id: str | None = None) -> None:
    """A general montage of `user_id`, who has no check-ins; `montage_id` (SQL) may be another user's montage's id."""
    key = montage_id or f"'{uuid.uuid4()}'::UUID"
    execute(
        url,
        f"""INSERT INTO montages (id, user_id, kind, interest, item_count, generated_at, cache_expires_at, job_id)
        VALUES ({key}, '{user_id}'::UUID, 'general', '', 1,
                TIMESTAMPTZ '2026-01-01 00:00:00+00', TIMESTAMPTZ '2026-01-01 01:00:00+00', 'someone else')""",
    )


@pytest.mark.usefixtures("small_spool")
@pytest.mark.parametrize("batch_size", ["4", "2500"])
def test_a_run_by_scan_stores_what_a_run_by_chunk_queries_stores(
    synthetic: SyntheticDatabase, run_cli: RunCli, tmp_path: Path, batch_size: str
) -> None:
    stranger = str(uuid.uuid4())  # a montage, no check-ins: the write removes it
    stored: dict[str, Any] = {}
    for read in ("chunks", "scan"):
        execute(synthetic.url, "DELETE FROM montage_items", "DELETE FROM montages")
        stale_montage(synthetic.url, stranger)

        result = full_run(run_cli, synthetic, read, "--batch-size", batch_size, MONTAGE_SCRATCH_DIR=str(tmp_path))

        assert result.exit_code == 0, result.everything()
        summary = result.log("Batch job completed")
        assert summary["processed"] == synthetic.users + 1
        assert ("scan" in summary["stage_seconds"]) == (read == "scan")
        assert (SPOOLED in result.messages()) == (read == "scan")
        stored[read] = stored_montages(synthetic.url)
        assert stranger not in montages_by_user(synthetic.url)
    assert result.log(SPOOLED)["flushes"] > 1
    assert stored["scan"] == stored["chunks"] == synthetic.expected()


@pytest.mark.usefixtures("small_spool")
def test_runs_of_few_users_keep_their_queries(synthetic: SyntheticDatabase, run_cli: RunCli) -> None:
    env = {"DATABASE_URL": synthetic.url, "MONTAGE_FULL_RUN_READ": "scan"}
    as_of = synthetic.as_of.isoformat()
    first = run_cli("once", "--as-of", as_of, env=env)  # no watermark yet: a full run
    named = run_cli("once", "--as-of", as_of, "--user-id", synthetic.user_ids()[0], env=env)
    incremental = run_cli("once", "--as-of", as_of, env=env)

    assert first.log("Batch job started")["mode"] == "full"
    assert SPOOLED in first.messages()
    assert incremental.log("Batch job started")["mode"] == "incremental"
    for result in (named, incremental):
        assert result.exit_code == 0, result.everything()
        assert SPOOLED not in result.messages()
    assert stored_montages(synthetic.url) == synthetic.expected()


@pytest.mark.usefixtures("small_spool")
def test_a_poison_user_is_isolated_and_every_other_user_written(synthetic: SyntheticDatabase, run_cli: RunCli) -> None:
    """A stranger's montage occupies the id of one user's general montage: writing that user breaks
    the primary key, the chunk is split down to it (each part read from the spool), and it alone
    goes on the retry list. The stranger sorts last, into a chunk of its own committed later."""
    users = synthetic.user_ids()
    blocked = users[11]
    stale_montage(synthetic.url, "ffffffff-ffff-4fff-bfff-ffffffffffff", f"md5('{blocked}' || '/general/')::UUID")

    result = full_run(run_cli, synthetic, "scan", "--batch-size", str(len(users)), "--concurrency", "1")

    assert result.exit_code == 0, result.everything()
    summary = result.log("Batch job completed")
    assert (summary["processed"], summary["successful"], summary["errors"]) == (len(users) + 1, len(users), 1)
    assert "chunk failed on its data; splitting it" in result.messages()
    assert [row["user_id"] for row in retry_list(synthetic.url)] == [blocked]
    others = [user for user in users if user != blocked]
    assert stored_montages(synthetic.url) == synthetic.expected(only=others)


def test_the_scratch_folder_is_gone_after_a_run_that_completed_or_failed(
    synthetic: SyntheticDatabase, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    completed = full_run(run_cli, synthetic, "scan", MONTAGE_SCRATCH_DIR=str(scratch))
    assert completed.exit_code == 0, completed.everything()
    assert Path(completed.log(SPOOLED)["folder"]).parent == scratch
    assert list(scratch.iterdir()) == []

    seen_during_the_run: list[list[Path]] = []

    def broken_engine(*_args: object, **_kwargs: object) -> None:
        seen_during_the_run.append(list(scratch.iterdir()))
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(chunks_module, "compute_montages", broken_engine)
    failed = full_run(run_cli, synthetic, "scan", MONTAGE_SCRATCH_DIR=str(scratch))

    assert failed.exit_code == EXIT_FAILED, failed.everything()
    assert failed.log("Batch job failed")["error_type"] == "RuntimeError"
    assert seen_during_the_run and all(len(listed) == 1 for listed in seen_during_the_run)  # the spool existed
    assert list(scratch.iterdir()) == []


def test_the_scratch_folder_is_gone_after_an_interrupt(
    synthetic: SyntheticDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(chunks_module, "compute_montages", interrupted)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    settings = load_settings(database_url=synthetic.url, montage_scratch_dir=str(scratch), montage_full_run_read="scan")
    with open_store(settings.database()) as store, pytest.raises(KeyboardInterrupt):
        run_job(store, settings, RunOptions(full=True, as_of=synthetic.as_of))
    assert list(scratch.iterdir()) == []


def test_a_stop_during_the_scan_starts_no_chunk(
    synthetic: SyntheticDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = RunControl()
    add = CheckinSpool.add

    def stop_after_the_first_frame(spool: CheckinSpool, frame: Any) -> None:
        add(spool, frame)
        control.request_stop("interrupted", 143)

    monkeypatch.setattr(CheckinSpool, "add", stop_after_the_first_frame)
    monkeypatch.setattr(scan, "SCAN_BATCH_ROWS", 100)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    settings = load_settings(database_url=synthetic.url, montage_scratch_dir=str(scratch), montage_full_run_read="scan")
    with open_store(settings.database()) as store:
        summary = run_job(store, settings, RunOptions(full=True, as_of=synthetic.as_of), control=control)

    assert (summary.status, summary.chunks, summary.totals.users) == ("interrupted", 0, 0)
    assert count(synthetic.url, "montages") == 0
    assert watermark(synthetic.url) is None
    assert list(scratch.iterdir()) == []


def test_an_unwritable_scratch_folder_fails_the_run_naming_it(
    synthetic: SyntheticDatabase, run_cli: RunCli, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    scratch = a_file / "scratch"

    result = full_run(run_cli, synthetic, "scan", MONTAGE_SCRATCH_DIR=str(scratch))

    assert result.exit_code == EXIT_FAILED, result.everything()
    failed = result.log("Batch job failed")
    assert (failed["status"], failed["error_type"]) == ("failed", "ScratchSpaceError")
    assert f"cannot create a folder in {scratch}" in failed["error"]
    assert "MONTAGE_SCRATCH_DIR" in failed["error"]
    assert f"cannot create a folder in {scratch}" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert count(synthetic.url, "montages") == 0
    assert watermark(synthetic.url) is None
