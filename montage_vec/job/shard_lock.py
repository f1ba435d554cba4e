"""The run's hold on its shard: the control session, the shard's lock on it, and the lease.

The lock is a session-level advisory lock (a file lock on DuckDB), so it lives exactly as
long as the control session's connection. When that connection dies (a database restart,
a network cut), `ensure` reconnects with backoff and takes the lock again, then checks that
the shard's lease (its fencing token) is still this run's: if another run took the shard
meanwhile, this one stops. Each chunk checks the same lease in its own transaction, so the
chunks that write while the control session is down cannot outlive a takeover either.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from itertools import chain
from typing import TypeVar

from loguru import logger

from montage_vec.config.secrets import redact
from montage_vec.errors import LeaseLostError, MontageVecError, RunFailed
from montage_vec.job.backoff import RetryPolicy
from montage_vec.job.control import RunControl
from montage_vec.job.sessions import close_quietly
from montage_vec.stores import SqlSession, Store
from montage_vec.stores.records import Lease

T = TypeVar("T")


class ShardLock:
    """Use as a context manager; `acquire` first, then `session` is the run's control session."""

    def __init__(self, store: Store, shard: str, job_id: str, policy: RetryPolicy, control: RunControl) -> None:
        self._store = store
        self._shard = shard
        self._job_id = job_id
        self._policy = policy
        self._control = control
        self._session: SqlSession | None = None
        self.lease: Lease | None = None
        self._log = logger.bind(job_id=job_id)

    def __enter__(self) -> ShardLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._session is not None:
            close_quietly(self._session)
            self._session = None

    @property
    def session(self) -> SqlSession:
        if self._session is None:
            raise RunFailed(f"run {self._job_id} has no connection holding the lock of shard {self._shard}")
        return self._session

    def acquire(self) -> bool:
        """Open the control session and try the shard's lock; False when another run holds it."""
        self._session = self._store.session()
        return self._session.try_lock_run(self._shard)

    def take_lease(self, now: datetime) -> None:
        """Take the shard's next fencing token, and close the runs a dead process left `running`."""
        self.lease = self.session.take_lease(self._shard, self._job_id, now)
        for run in self.session.abandon_runs(self._shard, self._job_id, now):
            self._log.warning("an earlier run of this shard died without an outcome; marked abandoned", run=run.job_id)

    def ensure(self) -> None:
        """Return once the control session holds the lock again; LeaseLostError if the shard changed hands."""
        if self._session is not None and self._session.holds_run_lock(self._shard):
            return
        self._log.warning("the connection holding the shard's lock is gone; reconnecting", shard=self._shard)
        waits = self._policy.waits()
        for wait in chain([0.0], waits):
            if wait and self._control.wait(wait):
                raise RunFailed(f"run {self._job_id} stopped while reconnecting to take its shard's lock again")
            if self._session is not None:
                close_quietly(self._session)
                self._session = None
            try:
                self._retake()
            except MontageVecError as exc:
                if not exc.transient:
                    raise
                self._log.warning("reconnecting failed; trying again", error=redact(str(exc)))
                continue
            self._log.info("reconnected; this run holds its shard's lock again", shard=self._shard)
            return
        raise RunFailed(f"could not reconnect to take shard {self._shard}'s lock again within DB_RECONNECT_TIMEOUT")

    def call(self, work: Callable[[SqlSession], T]) -> T:
        """`work` on the control session holding the lock, again after a reconnect if it fails transiently."""
        waits = self._policy.waits()
        while True:
            self.ensure()
            try:
                return work(self.session)
            except MontageVecError as exc:
                wait = next(waits, None) if exc.transient else None
                if wait is None or self._control.wait(wait):
                    raise
                self._log.warning("control session failed; retrying on a new connection", error=redact(str(exc)))

    def _retake(self) -> None:
        session = self._store.session()
        self._session = session
        if not session.try_lock_run(self._shard):
            raise LeaseLostError(f"another run took shard {self._shard}'s lock while this run's connection was down")
        if self.lease is not None and not session.holds_lease(self.lease):
            raise LeaseLostError(f"another run took shard {self._shard} over while this run's connection was down")
