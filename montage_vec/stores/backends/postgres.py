"""PostgreSQL in production, through the ADBC driver.

Bulk reads run without bound parameters so the driver streams them with binary COPY;
frames are staged into temporary tables with `adbc_ingest` (binary COPY). Each connection
is used by one thread only (the driver does not allow sharing). Run locks are session-level
advisory locks, released by the server when the connection ends, however it ends.
A read replica (DB_READ_HOST) serves extraction only once it has caught up with the primary
(see `replica`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import adbc_driver_postgresql.dbapi as dbapi
import polars as pl
from adbc_driver_postgresql import StatementOptions

from montage_vec.config.database import DEFAULT_READ_MAX_LAG
from montage_vec.stores import chunk_sql, statements
from montage_vec.stores.backends import replica
from montage_vec.stores.backends.base import Dialect
from montage_vec.stores.faults import INSUFFICIENT_PRIVILEGE, Fault, FaultKind, first_line, store_error
from montage_vec.stores.render import Keyword

POSTGRES = Dialect(
    name="postgresql",
    json_type=Keyword("jsonb"),
    json_object=Keyword("jsonb_build_object"),
    extract_from_staged_users=False,
    concurrent_writers=True,
    mark_changed_items=chunk_sql.MARK_CHANGED_ITEMS_BY_PROBE,
    create_chunk_stale=chunk_sql.CREATE_CHUNK_STALE_BY_PROBE,
    delete_replaced_items=chunk_sql.DELETE_REPLACED_ITEMS_BY_ARRAY,
    current_lease=statements.CURRENT_LEASE_SHARED,
    prepare_staged_chunk=chunk_sql.PREPARE_STAGED_CHUNK,
    analyze_chunk_tables=chunk_sql.ANALYZE_CHUNK_TABLES,
    prepare_chunk_write=chunk_sql.PREPARE_CHUNK_WRITE,
)

# Appended to the operator's own options (URL `options`, else PGOPTIONS): a later `-c`
# wins, so the job's timestamps are always UTC whatever else the operator sets.
UTC_OPTION = "-c TimeZone=UTC"
# Put before them, so the operator can turn it back on: JIT compiles a query for seconds when
# the planner expects a big one (2.7 s for one chunk's extraction at 1M users, run in 0.4 s),
# and the job runs many short queries.
JIT_OPTION = "-c jit=off"
APPLICATION_NAME = "montage-vec"

# SQLSTATEs by meaning. Transient: connection exceptions, admin shutdown / crash, cancelled
# statements, serialization failures, deadlocks, too many connections, lock not available.
TRANSIENT_CLASSES = ("08",)
TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "57014", "40001", "40P01", "53300", "55P03"})
# Bad data (22), integrity (23), and errors raised by PL/pgSQL code such as triggers (P0).
DATA_CLASSES = ("22", "23", "P0")
# Insufficient privilege, authentication failures, a read-only transaction or server.
PERMISSION_CLASSES = ("28",)
PERMISSION_STATES = frozenset({"42501", "25006"})
# Undefined table, column, object, function, schema.
SCHEMA_STATES = frozenset({"42P01", "42703", "42704", "42883", "3F000"})
# The server's words for a refused privilege, when the driver passes no SQLSTATE with them.
REFUSALS = re.compile(r"permission denied (for|to) |must be owner of ")
# How the driver's text quotes our statement, ending it, and the server's report in it.
ECHOED_STATEMENT = re.compile(r"Failed to execute query '.*': ", re.DOTALL)
QUERY_WAS = "\nQuery was:"
SERVER_REPORT = re.compile(r"\b(?:ERROR|FATAL|PANIC):\s+(?P<primary>[^\n]+)")

LOCK_NAMESPACE = b"montage-vec/"
TRY_ADVISORY_LOCK = "SELECT pg_try_advisory_lock($1)"
ADVISORY_TRANSACTION_LOCK = "SELECT pg_advisory_xact_lock($1)"
# A bigint advisory key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits).
HOLDS_ADVISORY_LOCK = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
  AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1
"""


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key per lock name."""
    digest = hashlib.blake2b(LOCK_NAMESPACE + name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def session_uri(uri: str, operator_options: str | None = None) -> str:
    """The URI with the operator's options between JIT off and UTC session time, and an application name.

    libpq reads PGOPTIONS only when the URI has no `options`, and the job always sets them,
    so PGOPTIONS comes in as `operator_options`; options in the URI itself win over it.
    """
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    given = query.get("options") or operator_options or ""
    query["options"] = " ".join(part for part in (JIT_OPTION, given.strip(), UTC_OPTION) if part)
    query.setdefault("application_name", APPLICATION_NAME)
    # libpq decodes %20 but not "+" as a space.
    return parts._replace(query=urlencode(query, quote_via=quote)).geturl()


def fault(exc: BaseException) -> Fault | None:
    """What a driver error means, in the server's own words."""
    if not isinstance(exc, dbapi.Error | OSError):
        return None
    message = _server_message(exc)
    state = getattr(exc, "sqlstate", None)
    if state is None and REFUSALS.match(message):
        # The driver's own statements (the CREATE TEMPORARY TABLE before a COPY) lose the
        # SQLSTATE but keep the server's words: a refused privilege, not a lost connection.
        state = INSUFFICIENT_PRIVILEGE
    if state is None:
        # No SQLSTATE: the connection dropped, or an error surfaced mid-stream.
        return Fault(FaultKind.TRANSIENT, f"connection problem: {message}", unclassified=True)
    if state in TRANSIENT_STATES or state.startswith(TRANSIENT_CLASSES):
        kind = FaultKind.TRANSIENT
    elif state.startswith(DATA_CLASSES):
        kind = FaultKind.DATA
    elif state in PERMISSION_STATES or state.startswith(PERMISSION_CLASSES):
        kind = FaultKind.PERMISSION
    elif state in SCHEMA_STATES:
        kind = FaultKind.SCHEMA
    else:
        kind = FaultKind.OTHER
    return Fault(kind, message, state)


def _server_message(exc: BaseException) -> str:
    """PG_DIAG_MESSAGE_PRIMARY; else the server's words in the driver's text, never our statement.

    Without the diagnostic fields (a connection the server terminated, the driver's own
    statements) the text is "[libpq] Failed to execute query '<statement>': FATAL:  <cause>",
    and our statements start with a newline: its first line would be the statement's quote.
    """
    details = dict(getattr(exc, "details", None) or [])
    primary = details.get(b"PG_DIAG_MESSAGE_PRIMARY")
    if primary:
        return bytes(primary).decode("utf-8", errors="replace")
    text = ECHOED_STATEMENT.sub("Failed to execute query: ", str(exc).split(QUERY_WAS, 1)[0])
    if report := SERVER_REPORT.search(text):
        return report["primary"].strip()
    lines = text.strip().splitlines()
    return lines[0] if lines else first_line(exc)


# A refused login carries no SQLSTATE through the driver, only the server's FATAL text.
LOGIN_REFUSALS = ("password authentication failed", 'role "', "no pg_hba.conf entry", "permission denied for database")
NO_SUCH_DATABASE = re.compile(r'database ".*" does not exist')


def connect(uri: str, operator_options: str | None = None, *, autocommit: bool = False) -> Any:
    try:
        return dbapi.connect(session_uri(uri, operator_options), autocommit=autocommit)
    except (dbapi.Error, OSError) as exc:
        raise store_error(_connect_fault(exc)) from None


def _connect_fault(exc: BaseException) -> Fault:
    """Refused logins and missing databases are final; a server that does not answer may come back."""
    found = fault(exc)
    assert found is not None
    if found.code is None:
        message = str(exc)
        if any(refusal in message for refusal in LOGIN_REFUSALS):
            return Fault(FaultKind.PERMISSION, found.message)
        if NO_SUCH_DATABASE.search(message):
            return Fault(FaultKind.OTHER, found.message)
    return found


class PostgresBackend:
    dialect = POSTGRES

    def __init__(
        self,
        uri: str,
        read_uri: str | None = None,
        session_options: str | None = None,
        read_max_lag: timedelta = DEFAULT_READ_MAX_LAG,
    ) -> None:
        self._uri = uri
        self._read_uri = read_uri
        self._session_options = session_options
        self._read_max_lag = read_max_lag

    def connect(self) -> PostgresConnection:
        return PostgresConnection(self._uri, self._read_uri, self._session_options, self._read_max_lag)

    def close(self) -> None:
        """Connections are their sessions'; the backend holds none."""


class PostgresConnection:
    dialect = POSTGRES

    def __init__(
        self,
        uri: str,
        read_uri: str | None,
        session_options: str | None = None,
        read_max_lag: timedelta = DEFAULT_READ_MAX_LAG,
    ) -> None:
        self._connection = connect(uri, session_options)
        self._uri = uri
        self._session_options = session_options
        self._replica = replica.reader_for(read_uri, read_max_lag, lambda uri: connect(uri, session_options))

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection.cursor() as cursor:
            cursor.execute(sql, list(parameters) if parameters else None)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def fetch_frame(self, sql: str, *, replica: bool = False) -> pl.DataFrame:
        with self._reading(replica) as connection, connection.cursor() as cursor:
            cursor.execute(sql)
            return _frame(cursor.fetch_arrow_table())

    def stream_frames(self, sql: str, batch_rows: int, *, replica: bool = False) -> Iterator[pl.DataFrame]:
        """The driver's COPY stream, batch by batch: one statement, so one snapshot for the whole
        read, and only the ACCESS SHARE lock any SELECT takes (no writer waits for it)."""
        with self._reading(replica) as connection:
            yield from _stream(connection, sql, batch_rows)

    def _reading(self, replica: bool) -> AbstractContextManager[Any]:
        """DB_READ_HOST once it has caught up, for reads that allow a replica; else this connection."""
        if replica and self._replica is not None:
            return self._replica.reading(self._connection)
        return nullcontext(self._connection)

    def stage(self, name: str, frame: pl.DataFrame) -> None:
        with self._connection.cursor() as cursor:
            cursor.adbc_ingest(name, frame.to_arrow(), mode="replace", temporary=True)

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[None]:
        # The driver opens a transaction with the first statement after each commit.
        try:
            yield
        except BaseException:
            # If the connection is gone, the server has rolled the transaction back itself.
            with suppress(dbapi.Error, OSError):
                self._connection.rollback()
            raise
        self._connection.commit()

    def execute_autocommit(self, sql: str) -> None:
        """Run one statement outside any transaction (CREATE INDEX CONCURRENTLY needs that).

        The driver keeps its connections inside a transaction, so this opens its own.
        """
        autocommitted = connect(self._uri, self._session_options, autocommit=True)
        try:
            with autocommitted.cursor() as cursor:
                cursor.execute(sql)
        finally:
            autocommitted.close()

    def fault(self, exc: BaseException) -> Fault | None:
        return fault(exc)

    def try_lock(self, name: str) -> bool:
        [(locked,)] = self.execute(TRY_ADVISORY_LOCK, [lock_key(name)])
        return bool(locked)

    def holds_lock(self, name: str) -> bool:
        unsigned = lock_key(name) & 0xFFFF_FFFF_FFFF_FFFF
        [(held,)] = self.execute(HOLDS_ADVISORY_LOCK, [unsigned >> 32, unsigned & 0xFFFF_FFFF])
        return bool(held)

    def lock_transaction(self, name: str) -> None:
        self.execute(ADVISORY_TRANSACTION_LOCK, [lock_key(name)])

    def close(self) -> None:
        if self._replica is not None:
            self._replica.close()
        self._connection.close()


# The driver sizes its batches in bytes; a check-in row takes about 260 bytes as Arrow (100,000
# users' 2 M rows measured 520 MB), so this asks for batches of about `batch_rows` rows.
ROW_BYTES = 260


def _stream(connection: Any, sql: str, batch_rows: int) -> Iterator[pl.DataFrame]:
    with connection.cursor() as cursor:
        cursor.adbc_statement.set_options(**{StatementOptions.BATCH_SIZE_HINT_BYTES.value: str(batch_rows * ROW_BYTES)})
        cursor.execute(sql)
        reader = cursor.fetch_record_batch()
        yield _frame(reader.schema.empty_table())  # the columns, even for a table without rows
        yield from map(_frame, reader)


def _frame(table: Any) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
