"""Building check-ins and reading back what the job stored, for tests on either backend."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import duckdb
import polars as pl

from montage_vec.config import load_settings
from montage_vec.engine import MontageParams, compute_montages
from montage_vec.engine.schema import UTC_MICROS
from montage_vec.stores import open_store

CHECKIN_FRAME_SCHEMA: dict[str, Any] = {
    "id": pl.String, "user_id": pl.String, "created_at": UTC_MICROS, "updated_at": UTC_MICROS,
    "deleted_at": UTC_MICROS, "privacy": pl.String, "text_content": pl.String, "media_url": pl.String,
    "media_type": pl.String, "thumbnail_url": pl.String, "location_name": pl.String,
    "tags": pl.List(pl.String),
}  # fmt: skip


def new_id() -> str:
    return str(uuid.uuid4())


def checkin(user_id: str, created_at: datetime, **fields: Any) -> dict[str, Any]:
    """One check-in row; `updated_at` defaults to `created_at`, tags to []."""
    row: dict[str, Any] = dict.fromkeys(CHECKIN_FRAME_SCHEMA)
    row.update(id=new_id(), user_id=user_id, created_at=created_at, privacy="public", tags=[])
    row.update(fields)
    row["updated_at"] = fields.get("updated_at", created_at)
    return row


def checkin_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CHECKIN_FRAME_SCHEMA)


def load_checkins(url: str, rows: list[dict[str, Any]]) -> None:
    """Migrate if needed and upsert the rows (by id) into the database at `url`."""
    load_frame(url, checkin_frame(rows))


def load_frame(url: str, frame: pl.DataFrame) -> None:
    """Migrate if needed and bulk-upsert check-ins through the store's own load path."""
    with open_store(load_settings(database_url=url).database()) as store:
        session = store.session()
        try:
            session.migrate()
            session.load_checkins(frame)
        finally:
            session.close()


@dataclass
class CliResult:
    """How a `montage-vec` invocation ended, with its stdout parsed as JSON log lines."""

    exit_code: int
    stdout: str
    stderr: str
    logs: list[dict[str, Any]] = field(default_factory=list)

    def log(self, message: str) -> dict[str, Any]:
        """The last log line with this message."""
        matching = [entry for entry in self.logs if entry.get("message") == message]
        assert matching, f"no log line {message!r} in:\n{self.stdout}\n{self.stderr}"
        return matching[-1]


MONTAGE_QUERY = """
SELECT m.user_id::VARCHAR AS user_id, m.kind, m.interest, m.item_count, m.valid_until,
       m.id::VARCHAR AS montage_id
FROM montages m ORDER BY 1, 2, 3
"""
ITEM_QUERY = """
SELECT m.user_id::VARCHAR AS user_id, m.kind, m.interest, i.position, i.checkin_id::VARCHAR AS checkin_id,
       i.checkin_created_at, i.widget_type, i.widget_metadata::VARCHAR AS widget_metadata
FROM montage_items i JOIN montages m ON m.id = i.montage_id ORDER BY 1, 2, 3, 4
"""


def query(url: str, sql: str) -> pl.DataFrame:
    """Run a read query directly against the database (no job code involved)."""
    if url.startswith("duckdb:"):
        with duckdb.connect(url[len("duckdb:///") :], read_only=True) as connection:
            connection.execute("SET TimeZone = 'UTC'")
            return connection.sql(sql).pl()
    with pg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        frame = pl.from_arrow(cursor.fetch_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def stored_montages(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(montage rows, item rows) as comparable tuples; metadata parsed as JSON."""
    montages = query(url, MONTAGE_QUERY).drop("montage_id")
    items = query(url, ITEM_QUERY)
    return _as_rows(montages, items)


def expected_montages(
    rows: list[dict[str, Any]], as_of: datetime, params: MontageParams | None = None
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What a full recompute at `as_of` gives for these check-ins, in stored_montages' form."""
    result = compute_montages(checkin_frame(rows), as_of, params)
    return _as_rows(result.montages, result.items)


def _as_rows(montages: pl.DataFrame, items: pl.DataFrame) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    montage_rows = sorted(
        (r["user_id"], r["kind"], r["interest"], int(r["item_count"]), r["valid_until"])
        for r in montages.iter_rows(named=True)
    )
    item_rows = sorted(_item_row(r) for r in items.iter_rows(named=True))
    return montage_rows, item_rows


def _item_row(r: dict[str, Any]) -> tuple[Any, ...]:
    metadata = json.dumps(json.loads(r["widget_metadata"]), sort_keys=True)
    return (r["user_id"], r["kind"], r["interest"], int(r["position"]), r["checkin_id"], r["checkin_created_at"],
            r["widget_type"], metadata)  # fmt: skip


def days(count: float) -> timedelta:
    return timedelta(days=count)
