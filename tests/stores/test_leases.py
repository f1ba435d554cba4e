"""Run leases (fencing tokens) in the store, on DuckDB and PostgreSQL (issue 10, defect 5).

Each run that takes a shard's lock takes the shard's next token (`take_lease`), and every
write of a run checks, in its own transaction, that the token is still its own: a run whose
lock went with a dead connection, and whose shard another run took meanwhile, writes
nothing more. Writes outside any run (a realtime regenerate, lease None) are not fenced.

On PostgreSQL the check share-locks the lease row, so a takeover waits for every chunk
transaction that saw the old token: shown with a real run whose chunk is held mid-write at a
WriteGate while another session takes the lease; the takeover returns only once that chunk
committed, and the run's next chunk fails with LeaseLostError.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from montage_vec.config import load_settings
from montage_vec.datagen import DEFAULT_AS_OF
from montage_vec.engine import compute_montages
from montage_vec.engine.schema import REJECTED_SCHEMA
from montage_vec.errors import LeaseLostError
from montage_vec.stores import ChunkWrite, SqlSession, open_store
from montage_vec.stores.records import Lease
from tests.support.cli import RunCli
from tests.support.data import (
    AS_OF,
    CHECKIN_FRAME_SCHEMA,
    checkin,
    checkin_frame,
    days,
    expected_synthetic,
    load_frame,
    restricted,
    retry_list,
    run_rows,
    sorted_users,
    stored_montages,
    synthetic,
    watermark,
)
from tests.support.database import count, query
from tests.support.interference import HANG_GUARD, WriteGate
from tests.support.processes import wait_until

SHARD = "0/1"
USER = "6f9d6a52-2c1e-4f7b-8d0e-1a2b3c4d5e6f"
WRITTEN_TABLES = ("montages", "montage_items", "montage_events")


@contextmanager
def session_for(url: str) -> Iterator[SqlSession]:
    """A store session, closed afterwards (DuckDB: nothing else may open the file meanwhile)."""
    with open_store(load_settings(database_url=url).database()) as store, store.session() as session:
        yield session


def migrated_with_two_leases(url: str) -> tuple[Lease, Lease]:
    """A migrated database where run `job-old` took shard 0/1 and run `job-new` took it over."""
    with session_for(url) as session:
        session.migrate()
        return session.take_lease(SHARD, "job-old", AS_OF), session.take_lease(SHARD, "job-new", AS_OF)


def chunk_of(lease: Lease | None, job_id: str = "job-1") -> ChunkWrite:
    """One user's computed montages, as a chunk of the run holding `lease`."""
    rows = [checkin(USER, AS_OF - days(i + 1), tags=["coffee"]) for i in range(3)]
    computed = compute_montages(checkin_frame(rows).select(list(CHECKIN_FRAME_SCHEMA)), AS_OF)
    assert computed.montages.height == 2, "a general and an interest montage"
    return ChunkWrite(
        job_id=job_id,
        generated_at=AS_OF,
        cache_ttl=timedelta(hours=1),
        user_ids=pl.Series([USER]),
        montages=computed.montages,
        items=computed.items,
        lease=lease,
    )


def counts(url: str, tables: tuple[str, ...] = WRITTEN_TABLES) -> dict[str, int]:
    return {table: count(url, table) for table in tables}


def failures() -> pl.DataFrame:
    return pl.DataFrame([(USER, "InputDataError: bad row")], schema=REJECTED_SCHEMA, orient="row")


NO_USERS = pl.Series("user_id", [], dtype=pl.String)


# -- tokens ------------------------------------------------------------------------------------


def test_each_take_of_a_shard_raises_its_token(database_url: str) -> None:
    first, second = migrated_with_two_leases(database_url)
    with session_for(database_url) as session:
        other_shard = session.take_lease("1/2", "job-other", AS_OF)
        assert (first.token, second.token, other_shard.token) == (1, 2, 1)
        assert (first.job_id, second.job_id) == ("job-old", "job-new")
        assert not session.holds_lease(first)
        assert session.holds_lease(second)
        assert session.holds_lease(other_shard)

    rows = query(database_url, "SELECT shard, token, job_id FROM montage_job_leases ORDER BY shard").rows()
    assert rows == [("0/1", 2, "job-new"), ("1/2", 1, "job-other")]


# -- fenced writes ---------------------------------------------------------------------------------


def test_a_chunk_with_a_stale_lease_writes_nothing(database_url: str) -> None:
    stale, current = migrated_with_two_leases(database_url)

    with session_for(database_url) as session, pytest.raises(LeaseLostError) as raised:
        session.write_chunk(chunk_of(stale, "job-old"))

    assert "job-old lost shard 0/1 to another run (lease 2, its own 1)" in str(raised.value)
    assert counts(database_url) == dict.fromkeys(WRITTEN_TABLES, 0)

    with session_for(database_url) as session:
        outcome = session.write_chunk(chunk_of(current, "job-new"))
    assert outcome.montages_written == 2
    assert count(database_url, "montages") == 2
    assert query(database_url, "SELECT DISTINCT job_id FROM montages")["job_id"].to_list() == ["job-new"]


def test_a_write_outside_any_run_is_not_fenced(database_url: str) -> None:
    """A realtime regenerate (lease None) writes whatever the shard's lease, as before leases."""
    with session_for(database_url) as session:
        session.migrate()
        assert session.write_chunk(chunk_of(None, "realtime-1")).montages_written == 2
    migrated_with_two_leases(database_url)  # runs took the shard meanwhile

    with session_for(database_url) as session:
        session.write_chunk(chunk_of(None, "realtime-2"))
        session.record_failures(failures(), "realtime-2", AS_OF)
        session.save_progress(SHARD, AS_OF, "realtime-2", None, NO_USERS)

    assert query(database_url, "SELECT DISTINCT job_id FROM montages")["job_id"].to_list() == ["realtime-2"]
    assert [row["user_id"] for row in retry_list(database_url)] == [USER]
    assert watermark(database_url) is not None


def test_failures_and_progress_with_a_stale_lease_change_nothing(database_url: str) -> None:
    stale, current = migrated_with_two_leases(database_url)

    with session_for(database_url) as session:
        with pytest.raises(LeaseLostError):
            session.record_failures(failures(), "job-old", AS_OF, stale)
        with pytest.raises(LeaseLostError):
            session.save_progress(SHARD, AS_OF, "job-old", None, NO_USERS, stale)

    assert retry_list(database_url) == []
    assert watermark(database_url) is None

    with session_for(database_url) as session:
        session.record_failures(failures(), "job-new", AS_OF, current)
        session.save_progress(SHARD, AS_OF, "job-new", None, NO_USERS, current)

    [retry] = retry_list(database_url)
    assert (retry["user_id"], retry["attempts"]) == (USER, 1)
    assert watermark(database_url) == AS_OF
    assert query(database_url, "SELECT job_id FROM montage_job_watermarks")["job_id"].to_list() == ["job-new"]


# -- PostgreSQL: a takeover waits for the chunk that checked the lease ------------------------------

USERS = 300
BATCH = 100
RIVAL = "rival-run"  # the application_name of the session taking the shard over

RIVAL_WAITS = f"""
SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
WHERE a.application_name = '{RIVAL}' AND a.datname = current_database() AND NOT l.granted
"""
# A chunk of the job waiting at the WriteGate: its write to `montages` waits for the gate's lock.
CHUNK_AT_GATE = """
SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
WHERE a.application_name = 'montage-vec' AND a.datname = current_database() AND NOT l.granted
  AND l.locktype = 'relation' AND l.relation = 'montages'::regclass
"""


def waiting(url: str, sql: str) -> bool:
    return bool(query(url, sql)["n"][0])


@pytest.mark.postgres
def test_a_takeover_waits_for_the_chunk_that_checked_the_lease_and_fences_the_next(
    postgres_url: str, run_cli: RunCli
) -> None:
    frame = synthetic(USERS)
    load_frame(postgres_url, frame)
    candidates = sorted_users(frame)
    rival_url = f"{postgres_url}?application_name={RIVAL}"

    def take_over_mid_chunk(gate: WriteGate) -> tuple[Lease, int]:
        """Take the shard's lease while chunk 1 waits mid-write; (the lease, chunks let through)."""
        gate.wait_until_blocked()  # chunk 1 checked the lease (token 1) and waits at its write
        with session_for(rival_url) as rival, ThreadPoolExecutor(1, thread_name_prefix="rival") as pool:
            taking = pool.submit(rival.take_lease, SHARD, RIVAL, datetime.now(UTC))
            wait_until(lambda: taking.done() or waiting(postgres_url, RIVAL_WAITS), "the takeover waiting", HANG_GUARD)
            assert not taking.done(), "the lease was taken while a chunk that had checked it was uncommitted"
            let_through = 0
            while not taking.done():
                # The chunk commits, then the takeover; the gate closes behind the chunk. A chunk
                # that checked the lease before the takeover got it would be let through too.
                gate.let_one_through()
                let_through += 1
                wait_until(
                    lambda: taking.done() or waiting(postgres_url, CHUNK_AT_GATE), "the takeover or a chunk", HANG_GUARD
                )
            return taking.result(), let_through

    args = ("--as-of", DEFAULT_AS_OF.isoformat(), "--batch-size", str(BATCH), "--concurrency", "1")
    with WriteGate(postgres_url) as gate, gate.meanwhile(take_over_mid_chunk) as taking_over:
        result = run_cli("once", *args, env={"DATABASE_URL": postgres_url})
    lease, let_through = taking_over.result()

    assert (lease.token, lease.job_id) == (2, RIVAL), "the run's own lease was token 1"
    assert result.exit_code == 1, result.everything()
    assert "lost shard 0/1 to another run (lease 2, its own 1)" in result.stderr, result.everything()
    failed = result.logs[-1]
    assert (failed["message"], failed["error_type"]) == ("Batch job failed", "LeaseLostError"), failed
    # The chunks that checked the lease before the takeover committed (chunk 1; more only if
    # one overtook the takeover to its check); none committed after it.
    committed = [entry["chunk"] for entry in result.logs if entry["message"] == "chunk committed"]
    assert committed == list(range(1, let_through + 1)), (committed, let_through)
    assert let_through < USERS // BATCH, "a later chunk was fenced"
    done = candidates[: BATCH * let_through]
    assert stored_montages(postgres_url) == restricted(expected_synthetic(USERS), done)
    assert watermark(postgres_url) is None
    assert [run["status"] for run in run_rows(postgres_url)] == ["failed"]
    leases = query(postgres_url, "SELECT shard, token, job_id FROM montage_job_leases").rows()
    assert leases == [(SHARD, 2, RIVAL)]
