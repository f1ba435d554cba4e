"""DB_READ_HOST against real servers: a physical streaming replica of a cluster of the tests' own,
another server that is no replica, and the primary itself; no mocks.

Covers:
- a full run's scan through a paused replica fails like a chunk's read, writing nothing;
- a replica whose replay is paused while a change is made on the primary: the run fails the
  chunk as a transient error naming the replica's lag and DB_READ_MAX_LAG (exit 1), writes
  nothing, and neither consumes the captured change nor moves the watermark; once replay
  resumes, the next run writes exactly what a run on the primary alone gives;
- DB_READ_HOST naming another primary is refused (exit 2) before a chunk reads from it; the
  primary itself still serves;
- the host shown in messages, never a password.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from montage_vec.stores.backends.replica import replica_host
from tests.support.cli import RunCli
from tests.support.cluster import TemporaryCluster, temporary_cluster, temporary_replica
from tests.support.data import AS_OF, Checkins, checkin, days, expected_montages, new_id, stored_montages, watermark
from tests.support.database import execute, query

HANG_GUARD_SECONDS = 60
# Trust authentication ignores it; the job must still never print it.
PASSWORD = "Rep1ica-Secret-Pw"
EXIT_FAILED = 1
EXIT_CONFIG = 2
# Fail at the first transient error: the replica's lag, not the retry budget, is under test.
NO_RETRIES = {"CHUNK_RETRY_ATTEMPTS": "0", "DB_RECONNECT_TIMEOUT": "0"}


@pytest.fixture(scope="module")
def primary() -> Iterator[TemporaryCluster]:
    with temporary_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def replica(primary: TemporaryCluster) -> Iterator[TemporaryCluster]:
    with temporary_replica(primary) as cluster:
        yield cluster


@contextmanager
def database_on(*clusters: TemporaryCluster) -> Iterator[str]:
    """A new database of one name on each cluster, dropped afterwards; yields its name."""
    name = f"montage_replica_{uuid.uuid4().hex[:12]}"
    for cluster in clusters:
        execute(cluster.url, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        for cluster in clusters:
            execute(cluster.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url_with_password(cluster: TemporaryCluster, database: str) -> str:
    return f"postgresql://root:{PASSWORD}@127.0.0.1:{cluster.port}/{database}"


def host_of(cluster: TemporaryCluster) -> str:
    return f"127.0.0.1:{cluster.port}"


def wait_until(condition: str, url: str, what: str) -> None:
    """Poll `condition` (an SQL boolean) on `url` until it holds; a hang guard, not a timing."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not query(url, f"SELECT ({condition}) AS ok")["ok"][0]:
        assert time.monotonic() < deadline, f"{what} did not happen within {HANG_GUARD_SECONDS}s"
        time.sleep(0.05)


def caught_up(primary: TemporaryCluster, replica: TemporaryCluster) -> None:
    [lsn] = query(primary.url, "SELECT pg_current_wal_lsn()::TEXT AS lsn")["lsn"]
    wait_until(f"pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn", replica.url, "the replica's replay")


@contextmanager
def replay_paused(replica: TemporaryCluster) -> Iterator[None]:
    execute(replica.url, "SELECT pg_wal_replay_pause()")
    try:
        wait_until("pg_get_wal_replay_pause_state() = 'paused'", replica.url, "the replica's pause")
        yield
    finally:
        execute(replica.url, "SELECT pg_wal_replay_resume()")


def captured_users(url: str) -> set[str]:
    return set(query(url, "SELECT user_id::TEXT AS user_id FROM montage_changes")["user_id"].to_list())


@pytest.mark.postgres
@pytest.mark.slow
def test_a_lagging_replica_fails_the_chunk_and_the_change_waits_for_the_next_run(
    primary: TemporaryCluster, replica: TemporaryCluster, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with database_on(primary) as name:
        url = url_with_password(primary, name)
        caught_up(primary, replica)  # the new database exists on the replica too
        env = {"DATABASE_URL": url, "DB_READ_HOST": host_of(replica), "DB_READ_MAX_LAG": "1s", **NO_RETRIES}
        migrated = run_cli("migrate", env=env)
        assert migrated.exit_code == 0, migrated.everything()
        data = Checkins(url)
        user, other = new_id(), new_id()
        data.add_many([checkin(user, AS_OF - days(i + 1), tags=["tea"]) for i in range(2)])
        data.add_many([checkin(other, AS_OF - days(i + 1), tags=["coffee"]) for i in range(3)])
        first = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)
        assert first.exit_code == 0, first.everything()
        before = stored_montages(url)
        assert before == expected_montages(data.all(), AS_OF)
        watermark_before = watermark(url)

        with replay_paused(replica):
            data.add(user, AS_OF - days(3), tags=["tea"])  # the third: a "tea" interest montage
            changed = expected_montages(data.all(), AS_OF)
            assert changed != before
            lagging = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)

            assert lagging.exit_code == EXIT_FAILED, lagging.everything()
            assert f"read replica {host_of(replica)} is " in lagging.stderr
            assert " bytes behind the primary after 1s (DB_READ_MAX_LAG)" in lagging.stderr
            assert PASSWORD not in lagging.stdout + lagging.stderr
            assert stored_montages(url) == before  # nothing written from the stale replica
            assert user in captured_users(url)  # the change was not consumed
            assert watermark(url) == watermark_before

        caught = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)
        assert caught.exit_code == 0, caught.everything()
        assert caught.log("Batch job started")["candidates"] == 1  # the change the failed run left
        assert stored_montages(url) == changed

        # The same as a run that never read from a replica.
        monkeypatch.delenv("DB_READ_HOST")
        on_primary = run_cli("once", "--full", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": url})
        assert on_primary.exit_code == 0, on_primary.everything()
        assert stored_montages(url) == changed


@pytest.mark.postgres
@pytest.mark.slow
def test_a_full_runs_scan_waits_for_the_replica_like_a_chunk_does(
    primary: TemporaryCluster, replica: TemporaryCluster, run_cli: RunCli
) -> None:
    """MONTAGE_FULL_RUN_READ=scan reads the whole source from DB_READ_HOST in one scan: only once the
    replica has replayed what the plan saw, else the run fails as a chunk would, writing nothing."""
    with database_on(primary) as name:
        url = url_with_password(primary, name)
        caught_up(primary, replica)
        env = {
            "DATABASE_URL": url,
            "DB_READ_HOST": host_of(replica),
            "DB_READ_MAX_LAG": "1s",
            "MONTAGE_FULL_RUN_READ": "scan",
            **NO_RETRIES,
        }
        data = Checkins(url)
        data.add_many([checkin(new_id(), AS_OF - days(i + 1), tags=["tea"]) for i in range(3)])

        with replay_paused(replica):
            data.add(new_id(), AS_OF - days(1))
            lagging = run_cli("once", "--full", "--as-of", AS_OF.isoformat(), env=env)

            assert lagging.exit_code == EXIT_FAILED, lagging.everything()
            assert "reading the check-ins failed 1 time(s)" in lagging.stderr
            assert f"read replica {host_of(replica)} is " in lagging.stderr
            assert PASSWORD not in lagging.stdout + lagging.stderr
            assert stored_montages(url) == ([], [])

        caught = run_cli("once", "--full", "--as-of", AS_OF.isoformat(), env=env)
        assert caught.exit_code == 0, caught.everything()
        assert "check-ins read in one scan and spooled" in caught.messages()
        assert stored_montages(url) == expected_montages(data.all(), AS_OF)


@pytest.mark.postgres
@pytest.mark.slow
def test_another_primary_as_read_host_is_refused_and_the_primary_itself_serves(
    primary: TemporaryCluster, run_cli: RunCli
) -> None:
    with temporary_cluster() as stranger, database_on(primary, stranger) as name:
        url = url_with_password(primary, name)
        env = {"DATABASE_URL": url, **NO_RETRIES}
        data = Checkins(url)
        data.add_many([checkin(new_id(), AS_OF - days(i + 1), tags=["tea"]) for i in range(3)])

        refused = run_cli("once", "--as-of", AS_OF.isoformat(), env={**env, "DB_READ_HOST": host_of(stranger)})
        assert refused.exit_code == EXIT_CONFIG, refused.everything()
        assert f"read replica {host_of(stranger)} is a server that is not the primary" in refused.stderr
        assert "DB_READ_HOST must be a physical streaming replica of the primary" in refused.stderr
        assert PASSWORD not in refused.stdout + refused.stderr
        assert stored_montages(url) == ([], [])

        itself = run_cli("once", "--as-of", AS_OF.isoformat(), env={**env, "DB_READ_HOST": host_of(primary)})
        assert itself.exit_code == 0, itself.everything()
        assert stored_montages(url) == expected_montages(data.all(), AS_OF)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"postgresql://app:{PASSWORD}@replica.internal:6543/db?sslmode=require", "replica.internal:6543"),
        ("postgresql://replica.internal/db", "replica.internal"),
        ("postgresql:///db?host=/var/run/postgresql", "/var/run/postgresql"),
    ],
)
def test_messages_show_the_replicas_host_and_never_its_credentials(uri: str, shown: str) -> None:
    assert replica_host(uri) == shown
    assert PASSWORD not in replica_host(uri)
