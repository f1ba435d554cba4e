"""Check-ins for tests and what the job stored, on either backend.

Building: `checkin` rows, `Checkins` (a mirror of the table whose edits stamp `updated_at`
like the app does) and deterministic `synthetic` data sets. Reading back: the stored
montages and items in a comparable form (`stored_montages`, equal to `expected_montages`
when the job did its work right), ids, stamps, the run log, the watermark and the retry list.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import polars as pl

from montage_vec.config import load_settings
from montage_vec.datagen import DEFAULT_AS_OF, SyntheticSpec, generate_checkins
from montage_vec.engine import MontageParams, compute_montages
from montage_vec.engine.schema import UTC_MICROS
from montage_vec.stores import open_store
from tests.support.database import query

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)  # the reference time of hand-written scenarios
SHARD = "0/1"
JOB_TABLES = ("montages", "montage_items", "montage_job_runs", "montage_job_watermarks", "montage_retry_users",
              "montage_events")  # fmt: skip

CHECKIN_FRAME_SCHEMA: dict[str, Any] = {
    "id": pl.String, "user_id": pl.String, "created_at": UTC_MICROS, "updated_at": UTC_MICROS,
    "deleted_at": UTC_MICROS, "privacy": pl.String, "text_content": pl.String, "media_url": pl.String,
    "media_type": pl.String, "thumbnail_url": pl.String, "location_name": pl.String,
    "tags": pl.List(pl.String),
}  # fmt: skip

Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]  # (montage rows, item rows), see stored_montages


def new_id() -> str:
    return str(uuid.uuid4())


def days(count: float) -> timedelta:
    return timedelta(days=count)


# -- building and loading check-ins ------------------------------------------------------------------


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


# -- synthetic data sets -------------------------------------------------------------------------------


@cache
def synthetic(users: int, seed: int = 42, mean_checkins_per_user: float = 20.0) -> pl.DataFrame:
    """The synthetic generator's check-ins (deterministic) for `users` users at DEFAULT_AS_OF."""
    spec = SyntheticSpec(users=users, seed=seed, as_of=DEFAULT_AS_OF, mean_checkins_per_user=mean_checkins_per_user)
    frame = pl.from_arrow(generate_checkins(spec))
    assert isinstance(frame, pl.DataFrame)
    return frame


def sorted_users(frame: pl.DataFrame) -> list[str]:
    """Every user id of `frame` in a run's candidate order (distinct, sorted as text)."""
    return sorted(frame["user_id"].unique().to_list())


@cache
def _expected_synthetic(users: int, seed: int, mean_checkins_per_user: float) -> Rows:
    return expected_from_frame(synthetic(users, seed, mean_checkins_per_user), DEFAULT_AS_OF)


def expected_synthetic(
    users: int, seed: int = 42, mean_checkins_per_user: float = 20.0, only: Iterable[str] | None = None
) -> Rows:
    """A full recompute of `synthetic(...)` at DEFAULT_AS_OF, restricted to the users in `only` if given.

    A user's montages depend only on that user's check-ins, so a subset's recompute is the
    full recompute restricted to the subset."""
    return restricted(_expected_synthetic(users, seed, mean_checkins_per_user), only)


def restricted(rows: Rows, only: Iterable[str] | None) -> Rows:
    """The montage and item rows of the users in `only` (all of them when None)."""
    if only is None:
        return rows
    wanted = set(only)
    return [row for row in rows[0] if row[0] in wanted], [row for row in rows[1] if row[0] in wanted]


# -- what the job stored -------------------------------------------------------------------------------

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


def stored_montages(url: str) -> Rows:
    """(montage rows, item rows) as comparable tuples; metadata parsed as JSON."""
    montages = query(url, MONTAGE_QUERY).drop("montage_id")
    items = query(url, ITEM_QUERY)
    return as_rows(montages, items)


def expected_montages(rows: list[dict[str, Any]], as_of: datetime, params: MontageParams | None = None) -> Rows:
    """What a full recompute at `as_of` gives for these check-ins, in stored_montages' form."""
    return expected_from_frame(checkin_frame(rows), as_of, params)


def expected_from_frame(frame: pl.DataFrame, as_of: datetime, params: MontageParams | None = None) -> Rows:
    """The engine's full recompute of a check-in frame at `as_of`, in stored_montages' form."""
    result = compute_montages(frame.select(list(CHECKIN_FRAME_SCHEMA)), as_of, params)
    return as_rows(result.montages, result.items)


def as_rows(montages: pl.DataFrame, items: pl.DataFrame) -> Rows:
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


def by_user(rows: Rows) -> dict[str, Rows]:
    """stored_montages' rows grouped by user."""
    grouped: dict[str, Rows] = defaultdict(lambda: ([], []))
    for montage in rows[0]:
        grouped[montage[0]][0].append(montage)
    for item in rows[1]:
        grouped[item[0]][1].append(item)
    return dict(grouped)


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


def watermarks(url: str) -> list[dict[str, Any]]:
    return query(url, "SELECT shard, watermark, job_id FROM montage_job_watermarks ORDER BY shard").to_dicts()


def run_rows(url: str) -> list[dict[str, Any]]:
    """The run log, oldest first."""
    return query(url, "SELECT * FROM montage_job_runs ORDER BY started_at, job_id").to_dicts()


def retry_list(url: str) -> list[dict[str, Any]]:
    """The retry list: user_id, attempts and error, by user."""
    sql = "SELECT user_id::VARCHAR AS user_id, attempts, error FROM montage_retry_users ORDER BY 1"
    return query(url, sql).to_dicts()


def same_instant(left: datetime | None, right: datetime | None) -> bool:
    """Equal instants, whatever tzinfo object either side carries."""
    if left is None or right is None:
        return left is right
    return left.astimezone(UTC) == right.astimezone(UTC)


@dataclass(frozen=True)
class SyntheticDatabase:
    """A database holding `synthetic(users, seed, mean_checkins_per_user)`, nothing computed yet."""

    url: str
    users: int
    seed: int = 42
    mean_checkins_per_user: float = 20.0
    as_of: datetime = DEFAULT_AS_OF

    def frame(self) -> pl.DataFrame:
        return synthetic(self.users, self.seed, self.mean_checkins_per_user)

    def user_ids(self) -> list[str]:
        """Every user id, in a run's candidate order."""
        return sorted_users(self.frame())

    def expected(self, only: Iterable[str] | None = None) -> Rows:
        """The full-recompute montages and items of the users in `only` (default: everyone)."""
        return expected_synthetic(self.users, self.seed, self.mean_checkins_per_user, only)
