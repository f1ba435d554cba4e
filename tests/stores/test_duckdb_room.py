"""The embedded DuckDB database within its memory limit: where it spills, what running out of
room means (no retry, no poison user: the run ends, naming the fix), and opening a database
again after DuckDB gave up on it. Provoked for real with tiny memory limits, no mocks."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from montage_vec.config import load_settings
from montage_vec.errors import DataStoreError, StoreError, TransientStoreError
from montage_vec.stores import open_store
from montage_vec.stores.backends.duckdb import DuckDBBackend, DuckDBConnection
from montage_vec.stores.faults import Fault, FaultKind, store_error
from tests.support.cli import RunCli
from tests.support.database import query
from tests.support.processes import job_env, run_job

# 2,000,000 distinct strings (~100 MB) to hash: more than the limits below, so DuckDB must spill.
BIG_DISTINCT = "SELECT count(*) FROM (SELECT DISTINCT repeat('x', 40) || i::VARCHAR FROM range(2000000) r(i))"
# Random keys into an ART index, which DuckDB holds in memory whole and cannot spill.
GROW_INDEX = "INSERT INTO t SELECT uuid(), repeat('x', 100) FROM range(20000)"


def setting(connection: DuckDBConnection, name: str) -> str:
    [(value,)] = connection.execute("SELECT current_setting($1)", [name])
    return str(value)


def fail_until(connection: DuckDBConnection, sql: str, attempts: int = 400, words: str = "") -> duckdb.Error:
    """Run `sql` until DuckDB refuses it (with an error holding `words`); that error."""
    for _ in range(attempts):
        try:
            connection.execute(sql)
        except duckdb.Error as exc:
            if words in str(exc):
                return exc
    raise AssertionError(f"{sql!r} never failed ({words!r}) in {attempts} attempts")


def test_spills_beside_the_database_file_by_default(tmp_path: Path) -> None:
    target = load_settings(database_url=f"duckdb:///{tmp_path}/m.duckdb").database()
    assert target.duckdb_temp_directory is None
    with open_store(target) as store:
        connection = store._backend.connect()
        try:
            assert setting(connection, "temp_directory") == f"{tmp_path}/m.duckdb.tmp"
            assert setting(connection, "memory_limit") == "61.0 MiB"  # DUCKDB_MEMORY_LIMIT's 64MB
        finally:
            connection.close()


def test_duckdb_temp_directory_is_where_it_spills(tmp_path: Path) -> None:
    """With DUCKDB_TEMP_DIRECTORY set, work larger than the memory limit completes there; with a
    file in its way, the same work fails as a run-ending error that names the setting."""
    spill = tmp_path / "spill"
    settings = load_settings(
        database_url=f"duckdb:///{tmp_path}/m.duckdb", duckdb_temp_directory=str(spill), duckdb_memory_limit="32MB"
    )
    with open_store(settings.database()) as store:
        connection = store._backend.connect()
        try:
            assert setting(connection, "temp_directory") == str(spill)
            assert connection.execute(BIG_DISTINCT) == [(2_000_000,)]
        finally:
            connection.close()

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    settings = settings.model_copy(update={"duckdb_temp_directory": str(blocked)})
    with open_store(settings.database()) as store:
        connection = store._backend.connect()
        try:
            exc = fail_until(connection, BIG_DISTINCT, attempts=1)
            fault = connection.fault(exc)
        finally:
            connection.close()
    assert fault is not None and fault.kind is FaultKind.OTHER, fault
    assert str(blocked) in fault.message and "DUCKDB_TEMP_DIRECTORY" in fault.message, fault.message


def test_running_out_of_memory_ends_the_run_naming_the_fix(tmp_path: Path) -> None:
    """An index that outgrows the limit: neither bad data of a user (no split, no retry list)
    nor transient (a retry does the same), but a run-ending StoreError that says what to raise."""
    backend = DuckDBBackend(str(tmp_path / "m.duckdb"), memory_limit="8MB")
    connection = backend.connect()
    try:
        connection.execute("CREATE TABLE t (id UUID PRIMARY KEY, v VARCHAR)")
        exc = fail_until(connection, GROW_INDEX)
        fault = connection.fault(exc)
    finally:
        connection.close()
        backend.close()

    assert fault is not None and fault.kind is FaultKind.OTHER, (type(exc), exc)
    error = store_error(fault)
    assert not isinstance(error, DataStoreError | TransientStoreError) and isinstance(error, StoreError)
    assert "DUCKDB_MEMORY_LIMIT (now 8MB)" in str(error), error
    assert f"{tmp_path}/m.duckdb.tmp" in str(error), error


def test_an_allocation_failing_at_commit_is_not_a_transaction_conflict() -> None:
    """DuckDB reports it as a TransactionException, which is otherwise a conflict worth a retry."""
    backend = DuckDBBackend(":memory:", memory_limit="64MB")
    connection = backend.connect()
    try:
        out_of_memory = connection.fault(
            duckdb.TransactionException(
                "TransactionContext Error: Failed to commit: could not allocate block of size 256.0 KiB "
                "(30.5 MiB/30.5 MiB used)"
            )
        )
        conflict = connection.fault(duckdb.TransactionException("TransactionContext Error: Conflict on update!"))
    finally:
        connection.close()
        backend.close()
    assert out_of_memory is not None and out_of_memory.kind is FaultKind.OTHER
    assert "DUCKDB_MEMORY_LIMIT (now 64MB)" in out_of_memory.message, out_of_memory.message
    assert conflict == Fault(FaultKind.TRANSIENT, "TransactionContext Error: Conflict on update!")


def test_a_database_duckdb_gave_up_on_is_opened_again(tmp_path: Path) -> None:
    """Allocations failing at commit end in 'database has been invalidated'; the next connection
    opens the file again, so the run can still record how it ended."""
    backend = DuckDBBackend(str(tmp_path / "m.duckdb"), memory_limit="32MB")
    connection = backend.connect()
    try:
        connection.execute("SET checkpoint_threshold = '1MB'")  # commits that checkpoint fail the harder way
        connection.execute("CREATE TABLE runs (status VARCHAR)")
        connection.execute("INSERT INTO runs VALUES ('running')")
        connection.execute("CREATE TABLE t (id UUID PRIMARY KEY, v VARCHAR)")
        exc = fail_until(connection, GROW_INDEX, words="invalidated")
        fault = connection.fault(exc)
        with pytest.raises(duckdb.FatalException):
            connection.execute("SELECT 1")
    finally:
        connection.close()
    assert fault is not None and fault.kind is FaultKind.OTHER
    assert "DUCKDB_MEMORY_LIMIT (now 32MB)" in fault.message, fault.message

    fresh = backend.connect()
    try:
        fresh.execute("UPDATE runs SET status = 'failed'")
        assert fresh.execute("SELECT status FROM runs") == [("failed",)]
    finally:
        fresh.close()
        backend.close()


def test_a_run_out_of_memory_fails_cleanly(tmp_path: Path, run_cli: RunCli) -> None:
    """`once` in a process of its own with a tiny DUCKDB_MEMORY_LIMIT, every montage to rewrite:
    exit 1, the summary line with the fix, no traceback, and the run recorded as failed."""
    url = f"duckdb:///{tmp_path}/montage.duckdb"
    assert run_cli("demo", "--users", "2000", env={"DATABASE_URL": url}).exit_code == 0

    squeezed = job_env(DATABASE_URL=url, DUCKDB_MEMORY_LIMIT="16MB", MONTAGE_MAX_ITEMS="10")
    result = run_job("once", "--full", env=squeezed, timeout=120)

    assert result.exit_code == 1, result.everything()
    assert "Traceback" not in result.everything()
    summary = result.log("Batch job failed")
    assert "DUCKDB_MEMORY_LIMIT (now 16MB)" in summary["error"] and summary["status"] == "failed", summary
    assert "DUCKDB_MEMORY_LIMIT" in result.stderr, result.stderr
    runs = query(url, "SELECT job_id, status FROM montage_job_runs").rows()
    assert (summary["job_id"], "failed") in runs and not [run for run in runs if run[1] == "running"], runs
