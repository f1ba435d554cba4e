"""Interfering with a running job from outside, at a known point of its run (PostgreSQL).

`WriteGate` holds every chunk's write on a real lock (`LOCK TABLE montages IN SHARE MODE`
in an open transaction): a chunk that reaches its write waits there, mid-transaction, and
`wait_until_blocked` sees that wait in `pg_locks`. So a test can kill connections, send a
signal or take the run lock while a chunk is provably in flight, and let chunks commit one
at a time, whatever the machine's speed; time appears only as hang guards.

`terminate` kills the job's own connections (application_name `montage-vec`, this
database only: other tests may share the server), and waits until they are gone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Literal, TypeVar

import adbc_driver_postgresql.dbapi as pg

from tests.support.database import query
from tests.support.processes import wait_until

T = TypeVar("T")

HANG_GUARD = 60.0  # seconds; every wait here ends long before unless something is broken

JOB_BACKENDS = """
FROM pg_stat_activity a
WHERE a.application_name = 'montage-vec' AND a.pid <> pg_backend_pid() AND a.datname = current_database()
"""
HOLDS_ADVISORY_LOCK = "EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)"
WHICH = {
    # The run's control session holds the shard's advisory lock; chunk workers do not.
    "lock holder": f"AND {HOLDS_ADVISORY_LOCK}",
    "workers": f"AND NOT {HOLDS_ADVISORY_LOCK}",
}
WAITING_JOB_BACKENDS = f"""
SELECT count(*) AS n {JOB_BACKENDS}
  AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted)
"""


def terminate(url: str, which: Literal["lock holder", "workers"]) -> int:
    """Terminate the job's connections to this database (`which` of them); how many went.

    Returns once they are gone (`pg_terminate_backend` with a wait), so that, say, a killed
    lock holder's lock is free when this returns. Kill while the job can notice nothing (its
    chunk held at a WriteGate): a connection that closes on its own meanwhile is not counted."""
    terminated = f"pg_terminate_backend(a.pid, {int(HANG_GUARD * 1000)})"  # false if it outlived the wait
    sql = f"SELECT count(*) FILTER (WHERE {terminated}) AS n {JOB_BACKENDS} {WHICH[which]}"
    return int(query(url, sql)["n"][0])


def job_connections(url: str) -> int:
    return int(query(url, f"SELECT count(*) AS n {JOB_BACKENDS}")["n"][0])


def waiting_job_connections(url: str) -> int:
    """How many of the job's connections wait for a lock."""
    return int(query(url, WAITING_JOB_BACKENDS)["n"][0])


class _LockHolder:
    """One connection that can hold the gate's lock in an open transaction."""

    def __init__(self, url: str, table: str) -> None:
        self._url = url
        self._connection = pg.connect(url, autocommit=True)
        self._cursor = self._connection.cursor()
        self._table = table
        self._cursor.execute("SELECT pg_backend_pid()")
        row = self._cursor.fetchone()
        assert row is not None
        self.pid = int(row[0])

    def lock(self) -> None:
        self._cursor.execute("BEGIN")
        self._cursor.execute(f'LOCK TABLE "{self._table}" IN SHARE MODE')

    def waiting(self) -> bool:
        """Whether this connection's lock request waits (checked on another connection)."""
        sql = f"SELECT count(*) AS n FROM pg_locks WHERE pid = {self.pid} AND NOT granted"
        return bool(query(self._url, sql)["n"][0])

    def release(self) -> None:
        try:
            self._cursor.execute("ROLLBACK")
        finally:
            self._cursor.close()
            self._connection.close()


class WriteGate:
    """Holds every write to `montages` (so every chunk's write) until opened; a context manager
    that closes the gate on entry and always opens it on exit."""

    def __init__(self, url: str, table: str = "montages") -> None:
        self.url = url
        self.table = table
        self._holder: _LockHolder | None = None
        self._run_over = threading.Event()

    def __enter__(self) -> WriteGate:
        self.close()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.open()

    def _new_holder(self) -> _LockHolder:
        return _LockHolder(self.url, self.table)

    def close(self) -> None:
        """From now on, a chunk that reaches its write waits."""
        if self._holder is None:
            holder = self._new_holder()
            holder.lock()
            self._holder = holder

    def open(self) -> None:
        """Let every waiting and later write through (idempotent)."""
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.release()

    def wait_until_blocked(self, timeout: float = HANG_GUARD) -> None:
        """Until one of the job's connections waits for a lock (a chunk at the gate)."""
        assert self._holder is not None, "the gate is open"

        def blocked() -> bool:
            assert not self._run_over.is_set(), "the run ended before a chunk reached the write gate"
            return waiting_job_connections(self.url) > 0

        wait_until(blocked, "a chunk waiting at the write gate", timeout)

    def let_one_through(self, timeout: float = HANG_GUARD) -> None:
        """Let the chunk waiting at the gate write and commit, and close the gate behind it.

        A second holder queues its lock request behind the waiting chunk's (PostgreSQL
        grants conflicting requests in order), then the first holder lets go: the chunk
        writes and commits, the second holder gets the lock, and the next write waits again.
        """
        assert self._holder is not None, "the gate is open"
        self.wait_until_blocked(timeout)
        successor = self._new_holder()
        locking = threading.Thread(target=successor.lock, name="write-gate", daemon=True)
        locking.start()
        try:
            wait_until(
                lambda: successor.waiting() or not locking.is_alive(), "the next gate queued behind the chunk", timeout
            )
            assert locking.is_alive(), "the next gate got the lock at once: no chunk was waiting"
        except BaseException:
            self.open()
            locking.join(timeout)
            successor.release()
            raise
        self._holder.release()
        locking.join(timeout)
        assert not locking.is_alive(), f"the chunk let through did not finish within {timeout}s"
        self._holder = successor

    @contextmanager
    def meanwhile(self, action: Callable[[WriteGate], T]) -> Iterator[Future[T]]:
        """Run `action(gate)` in a background thread while the block runs the job in this process.

        The gate opens when `action` ends, however it ends, so the job can always finish;
        `action`'s result or error comes from the yielded future, after the block."""

        def guarded() -> T:
            try:
                return action(self)
            finally:
                self.open()

        self._run_over.clear()
        with ThreadPoolExecutor(1, thread_name_prefix="interference") as pool:
            future = pool.submit(guarded)
            try:
                yield future
            finally:
                self._run_over.set()  # an action still waiting for a chunk at the gate gives up
