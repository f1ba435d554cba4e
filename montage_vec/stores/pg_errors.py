"""Connecting to PostgreSQL and sorting its errors into transient, data and other failures."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import adbc_driver_postgresql.dbapi as dbapi

from montage_vec.config.secrets import redact
from montage_vec.errors import DataStoreError, StoreError, TransientStoreError

# Connection exceptions, admin shutdown / crash, cancelled statements, serialization
# failures and deadlocks: the same work can succeed on a new connection.
TRANSIENT_CLASSES = ("08",)
TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "57014", "40001", "40P01", "53300"})
# Bad data (22), integrity (23), and errors raised by PL/pgSQL code such as triggers (P0).
DATA_CLASSES = ("22", "23", "P0")

SESSION_OPTIONS = {"options": "-c TimeZone=UTC", "application_name": "montage-vec"}


def session_uri(uri: str) -> str:
    """The URI with UTC session time and an application name, unless the operator set them."""
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in SESSION_OPTIONS.items():
        query.setdefault(key, value)
    # libpq decodes %20 but not "+" as a space.
    return parts._replace(query=urlencode(query, quote_via=quote)).geturl()


def connect(uri: str) -> Any:
    try:
        return dbapi.connect(session_uri(uri))
    except (dbapi.Error, OSError) as exc:
        raise classify(exc) from None


def server_message(exc: BaseException) -> str:
    """The server's own words (PG_DIAG_MESSAGE_PRIMARY), else the driver's first line.

    The driver's text starts with the statement, which for our multi-line SQL says nothing
    about what went wrong.
    """
    details = dict(getattr(exc, "details", None) or [])
    primary = details.get(b"PG_DIAG_MESSAGE_PRIMARY")
    if primary:
        return bytes(primary).decode("utf-8", errors="replace")
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def classify(exc: BaseException) -> StoreError:
    """A StoreError subclass for a driver error, with secrets masked."""
    message = redact(server_message(exc))
    state = getattr(exc, "sqlstate", None)
    if state is None:
        # No SQLSTATE: the connection dropped, or an error surfaced mid-stream.
        return TransientStoreError(f"database connection problem: {message}")
    if state in TRANSIENT_STATES or state.startswith(TRANSIENT_CLASSES):
        return TransientStoreError(f"transient database error {state}: {message}")
    if state.startswith(DATA_CLASSES):
        return DataStoreError(f"database rejected the data ({state}): {message}")
    return StoreError(f"database error {state}: {message}")
