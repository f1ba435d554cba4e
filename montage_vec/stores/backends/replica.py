"""A PostgreSQL read replica (DB_READ_HOST) that has caught up with the primary.

A chunk reads its check-ins from the replica only once the replica has replayed the primary's
WAL up to the primary's position when the extraction began: `pg_current_wal_lsn()`, read on
the primary connection in the extraction's unit, after the run planned. A commit made with
`synchronous_commit` on (the default) is flushed before it becomes visible, so every change the
plan saw (a captured change, an `updated_at` under the watermark) lies below that position, and
a replica whose `pg_last_wal_replay_lsn()` reached it sees them all. The wait polls the replica
(50 ms, doubling, at most 1 s) and fails the extraction as a transient error once
DB_READ_MAX_LAG has passed: the chunk is retried like after a lost connection, never written
from rows older than the plan.

Not covered: a commit made with `synchronous_commit = off` is visible before it is written (for
up to about three `wal_writer_delay`s). The insert position would cover it, but it also holds
WAL that nothing flushes on a quiet server, which a replica could take seconds to reach; an
application that writes check-ins asynchronously should not use DB_READ_HOST.

Which servers qualify, checked on every extraction in the same query:
- a server in recovery with the primary's system identifier: a physical streaming replica of
  the primary's cluster, whose replay position is comparable with the primary's WAL position;
- a server not in recovery with the primary's system identifier and the same postmaster start
  time: the primary server itself (tests point DB_READ_HOST at it), which needs no wait.
Anything else (another primary, a promoted copy, a logical replica, a replica of another
cluster) has WAL positions that say nothing about the primary's, and is refused as a
configuration error (exit 2) before the chunk reads from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from montage_vec.config.durations import format_duration
from montage_vec.config.secrets import redact
from montage_vec.errors import ConfigError, TransientStoreError

# LSNs as bytes since 0/0; a server as its cluster's system identifier (which its physical
# replicas share) and its postmaster's start. Every role may run these functions.
PRIMARY_POSITION = """
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, system_identifier, pg_postmaster_start_time()
FROM pg_control_system()
"""
REPLICA_POSITION = """
SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, system_identifier,
       pg_postmaster_start_time()
FROM pg_control_system()
"""
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 1.0
NOT_A_REPLICA = (
    "DB_READ_HOST must be a physical streaming replica of the primary, or the primary itself "
    "(a logical replica or another server cannot be verified to hold the primary's changes)"
)


def primary_position(primary: Any) -> tuple[int, tuple[Any, Any]]:
    """The primary connection's WAL position and its server's identity (system identifier, start)."""
    with primary.cursor() as cursor:
        cursor.execute(PRIMARY_POSITION)
        position, system, started = cursor.fetchone()
    return int(position), (system, started)


def await_replay(reader: Any, position: int, primary: tuple[Any, Any], max_lag: timedelta, host: str) -> None:
    """Return once `reader` has replayed the primary's WAL up to `position` (module doc).

    ConfigError when the reader is neither a physical replica of the primary nor the primary
    server itself; TransientStoreError when it is still behind after `max_lag`.
    """
    deadline = time.monotonic() + max_lag.total_seconds()
    pause = FIRST_POLL_SECONDS
    while True:
        recovering, replayed, system, started = _reader_position(reader)
        if not recovering:
            if (system, started) != primary:
                raise ConfigError(f"read replica {host} is a server that is not the primary: {NOT_A_REPLICA}")
            return  # the primary server itself
        if system != primary[0]:
            raise ConfigError(f"read replica {host} replicates another cluster than the primary's: {NOT_A_REPLICA}")
        behind = position - (replayed or 0)  # NULL only before a standby replayed anything
        if behind <= 0:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransientStoreError(
                f"read replica {host} is {behind} bytes behind the primary after "
                f"{format_duration(max_lag)} (DB_READ_MAX_LAG)"
            )
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, MAX_POLL_SECONDS)


def _reader_position(reader: Any) -> tuple[Any, ...]:
    """(in recovery, replayed position, system identifier, postmaster start), in a transaction of its own."""
    with reader.cursor() as cursor:
        cursor.execute(REPLICA_POSITION)
        row = tuple(cursor.fetchone())
    reader.commit()  # nothing held open on the replica between polls
    return row


def replica_host(uri: str) -> str:
    """The host (and port) of a libpq URI, for messages: never its credentials."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2] or dict(parse_qsl(parts.query)).get("host", "localhost")
    return redact(host)


class ReplicaReader:
    """The connection to DB_READ_HOST that a PostgreSQL connection reads its check-ins through.

    `reading(primary)` hands it out once it has caught up with `primary`'s position, and ends
    its transaction after the block (nothing stays open on the replica between reads); any
    error closes it, and the next read connects again.
    """

    def __init__(self, uri: str, max_lag: timedelta, connect: Callable[[str], Any]) -> None:
        self._uri = uri
        self._max_lag = max_lag
        self._connect = connect
        self._connection: Any | None = None

    @contextmanager
    def reading(self, primary: Any) -> Iterator[Any]:
        # On the primary, in the reading unit: after planning, so past every commit it saw.
        position, identity = primary_position(primary)
        if self._connection is None:
            self._connection = self._connect(self._uri)
        try:
            await_replay(self._connection, position, identity, self._max_lag, replica_host(self._uri))
            yield self._connection
            self._connection.commit()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def reader_for(uri: str | None, max_lag: timedelta, connect: Callable[[str], Any]) -> ReplicaReader | None:
    """The reader of DB_READ_HOST (`uri`), connected on its first read; None without one."""
    return ReplicaReader(uri, max_lag, connect) if uri is not None else None
