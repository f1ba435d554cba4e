"""Helpers for the end-to-end job tests: running `once`, tracking check-ins, reading job state."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import duckdb

from tests.conftest import CliResult
from tests.helpers import checkin, expected_montages, load_checkins, query, stored_montages

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
SHARD = "0/1"

RunCli = Callable[..., CliResult]


def run_once(run_cli: RunCli, url: str, as_of: datetime, *args: str, env: dict[str, str] | None = None) -> CliResult:
    """`montage-vec once --as-of AS_OF ARGS` against `url`; asserts it exited 0."""
    result = run_cli("once", "--as-of", as_of.isoformat(), *args, env={"DATABASE_URL": url, **(env or {})})
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@dataclass
class Checkins:
    """The current version of every check-in, mirrored into the database on each change.

    Every edit stamps `updated_at` from a clock that only moves forward, as the app does.
    """

    url: str
    clock: datetime = AS_OF - timedelta(days=60)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def tick(self, not_before: datetime | None = None) -> datetime:
        """The next instant of the app's clock (30 minutes on, and not before `not_before`)."""
        self.clock = max(self.clock + timedelta(minutes=30), not_before or self.clock)
        return self.clock

    def add(self, user_id: str, created_at: datetime, **fields: Any) -> dict[str, Any]:
        return self.add_many([checkin(user_id, created_at, **fields)])[0]

    def add_many(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert rows, stamping updated_at with the clock's next tick (never before created_at)."""
        stamped = [{**row, "updated_at": self.tick(not_before=row["created_at"])} for row in rows]
        self._write(stamped)
        return stamped

    def edit(self, checkin_id: str, **changes: Any) -> dict[str, Any]:
        """Change fields of one check-in, with a later updated_at."""
        row = {**self.rows[checkin_id], **changes, "updated_at": self.tick()}
        self._write([row])
        return row

    def edit_many(self, changes: dict[str, dict[str, Any]]) -> None:
        """Several edits ({checkin id: {field: value}}) written together, each with its own later updated_at."""
        self._write([{**self.rows[cid], **fields, "updated_at": self.tick()} for cid, fields in changes.items()])

    def put(self, rows: list[dict[str, Any]]) -> None:
        """Write rows exactly as given (no stamping), e.g. a row with a skewed updated_at."""
        self._write(rows)

    def all(self) -> list[dict[str, Any]]:
        return list(self.rows.values())

    def of_user(self, user_id: str) -> list[dict[str, Any]]:
        return [row for row in self.rows.values() if row["user_id"] == user_id]

    def latest_update(self) -> datetime:
        return max(row["updated_at"] for row in self.rows.values())

    def _write(self, rows: list[dict[str, Any]]) -> None:
        load_checkins(self.url, rows)
        for row in rows:
            self.rows[row["id"]] = row


def assert_matches_recompute(url: str, rows: list[dict[str, Any]], as_of: datetime) -> None:
    """The stored montages and items equal a full recompute of `rows` at `as_of`."""
    stored = stored_montages(url)
    expected = expected_montages(rows, as_of)
    assert stored[0] == expected[0], "montages differ from a full recompute"
    assert stored[1] == expected[1], "montage items differ from a full recompute"


def montages_by_user(url: str) -> dict[str, list[tuple[str, str]]]:
    """user_id -> sorted [(kind, interest)] of the stored montages."""
    frame = query(url, "SELECT user_id::VARCHAR AS user_id, kind, interest FROM montages ORDER BY 1, 2, 3")
    found: dict[str, list[tuple[str, str]]] = {}
    for row in frame.iter_rows(named=True):
        found.setdefault(row["user_id"], []).append((row["kind"], row["interest"]))
    return found


def montage_ids(url: str) -> dict[tuple[str, str, str], str]:
    """(user_id, kind, interest) -> montage id as text."""
    frame = query(url, "SELECT user_id::VARCHAR AS user_id, kind, interest, id::VARCHAR AS id FROM montages")
    return {(r["user_id"], r["kind"], r["interest"]): r["id"] for r in frame.iter_rows(named=True)}


def montage_stamps(url: str) -> dict[tuple[str, str, str], tuple[Any, Any, str]]:
    """(user_id, kind, interest) -> (generated_at, cache_expires_at, job_id)."""
    frame = query(
        url,
        "SELECT user_id::VARCHAR AS user_id, kind, interest, generated_at, cache_expires_at, job_id FROM montages",
    )
    return {
        (r["user_id"], r["kind"], r["interest"]): (r["generated_at"], r["cache_expires_at"], r["job_id"])
        for r in frame.iter_rows(named=True)
    }


def item_rows_raw(url: str) -> list[tuple[Any, ...]]:
    """Every stored item with its montage id, to prove nothing was rewritten."""
    frame = query(
        url,
        "SELECT montage_id::VARCHAR AS montage_id, position, checkin_id::VARCHAR AS checkin_id, "
        "widget_type FROM montage_items ORDER BY 1, 2",
    )
    return [tuple(row) for row in frame.iter_rows()]


def content_events(url: str) -> dict[str, int]:
    """Outbox events about montages (not the run's own lifecycle events), counted by type."""
    frame = query(
        url, "SELECT type, count(*) AS n FROM montage_events WHERE type NOT LIKE 'montage.batch_job.%' GROUP BY type"
    )
    return dict(frame.iter_rows())


def watermark(url: str, shard: str = SHARD) -> datetime | None:
    frame = query(url, f"SELECT watermark FROM montage_job_watermarks WHERE shard = '{shard}'")
    return frame["watermark"][0] if frame.height else None


def run_rows(url: str) -> list[dict[str, Any]]:
    """The run log, oldest first."""
    return query(url, "SELECT * FROM montage_job_runs ORDER BY started_at, job_id").to_dicts()


def execute(url: str, *statements: str) -> None:
    """Run statements directly against the database (no job code involved), committed."""
    if url.startswith("duckdb:"):
        with duckdb.connect(url[len("duckdb:///") :]) as connection:
            for sql in statements:
                connection.execute(sql)
        return
    with pg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def count(url: str, table: str) -> int:
    return int(query(url, f"SELECT count(*) AS n FROM {table}")["n"][0])


def same_instant(left: datetime | None, right: datetime | None) -> bool:
    """Equal instants, whatever tzinfo object either side carries."""
    if left is None or right is None:
        return left is right
    return left.astimezone(UTC) == right.astimezone(UTC)
