"""Baseline 1: the old design, one user at a time.

For each sampled user, in its own transaction: one parameterized query for its check-ins,
the montages computed in plain Python (the contract's rules, no Polars), then one DELETE per
table and one INSERT per montage and per item. It writes `bl_montages` / `bl_montage_items`
(the product's columns, keys and indexes), so the engine's tables are left alone.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from benchmarks.database import BenchDatabase
from montage_vec.engine import MontageParams

PREFIX = "bl_"
SELECT_USER = """
SELECT "id"::VARCHAR, "created_at", "deleted_at", "privacy", "text_content", "media_url", "media_type",
       "thumbnail_url", "location_name", "tags"
FROM "checkins" WHERE "user_id" = $1::UUID
"""
DELETE_ITEMS = (
    'DELETE FROM "bl_montage_items" WHERE "montage_id" IN (SELECT "id" FROM "bl_montages" WHERE "user_id" = $1::UUID)'
)
DELETE_MONTAGES = 'DELETE FROM "bl_montages" WHERE "user_id" = $1::UUID'
INSERT_MONTAGE = """
INSERT INTO "bl_montages" ("id", "user_id", "kind", "interest", "item_count", "generated_at", "cache_expires_at",
                           "valid_until", "job_id")
VALUES ($1::UUID, $2::UUID, $3, $4, $5, $6, $7, $8, $9)
"""
INSERT_ITEM = """
INSERT INTO "bl_montage_items" ("montage_id", "position", "checkin_id", "checkin_created_at", "widget_type",
                                "widget_metadata")
VALUES ($1::UUID, $2, $3::UUID, $4, $5, $6::{json})
"""


@dataclass(frozen=True)
class Checkin:
    id: str
    created_at: datetime
    deleted_at: datetime | None
    privacy: str | None
    text_content: str | None
    media_url: str | None
    media_type: str | None
    thumbnail_url: str | None
    location_name: str | None
    tags: list[str | None] | None


@dataclass
class LoopResult:
    users: int
    seconds: float
    montages: int
    items: int
    statements: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    matching_montages: int = 0
    engine_montages: int = 0

    @property
    def users_per_second(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else 0.0


def montage_id(user_id: str, kind: str, interest: str) -> str:
    return str(uuid.UUID(hashlib.md5(f"{user_id}/{kind}/{interest}".encode()).hexdigest()))


def normalized_tags(tags: list[str | None] | None) -> list[str]:
    seen: dict[str, None] = {}
    for tag in tags or []:
        if tag is not None and 0 < len(norm := tag.strip().lower()) <= 100:
            seen.setdefault(norm, None)
    return list(seen)


def widget(checkin: Checkin, tags: list[str]) -> tuple[str, str]:
    kind = (
        "media" if checkin.media_url is not None
        else "text" if checkin.text_content is not None
        else "location" if checkin.location_name is not None
        else "activity"
    )  # fmt: skip
    fields: dict[str, Any] = {
        "media_url": checkin.media_url, "media_type": checkin.media_type, "thumbnail_url": checkin.thumbnail_url,
        "text": checkin.text_content, "location": checkin.location_name, "tags": tags, "privacy": checkin.privacy,
    }  # fmt: skip
    shown = {key: value for key, value in fields.items() if value is not None}
    return kind, json.dumps(shown, ensure_ascii=False, separators=(",", ":"))


def compute_user(
    rows: list[Checkin], as_of: datetime, params: MontageParams
) -> list[tuple[str, str, datetime | None, list[Checkin]]]:
    """(kind, interest, valid_until, items) of one user's montages, by the contract's rules 1-5."""
    eligible = [r for r in rows if r.deleted_at is None and r.privacy in params.privacy_included]
    eligible.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    if not eligible:
        return []
    montages: list[tuple[str, str, datetime | None, list[Checkin]]] = [
        ("general", "", None, eligible[: params.max_items])
    ]
    cutoff = as_of - timedelta(days=params.interest_lookback_days)
    tagged: dict[str, list[Checkin]] = defaultdict(list)
    for checkin in eligible:
        for tag in normalized_tags(checkin.tags):
            tagged[tag].append(checkin)
    for tag, checkins in sorted(tagged.items()):
        recent = sorted((c.created_at for c in checkins if c.created_at > cutoff), reverse=True)
        if len(recent) >= params.min_interest_occurrence:
            valid_until = recent[params.min_interest_occurrence - 1] + params.lookback
            montages.append(("interest", tag, valid_until, checkins[: params.max_items]))
    return montages


def run_loop(db: BenchDatabase, users: list[str], as_of: datetime, params: MontageParams) -> LoopResult:
    db.create_montage_tables(PREFIX)
    insert_item = INSERT_ITEM.format(json=db.json_type)
    generated_at = as_of
    expires_at = generated_at + timedelta(hours=1)
    result = LoopResult(users=len(users), seconds=0.0, montages=0, items=0, statements=0)
    spent = dict.fromkeys(("query", "compute", "write"), 0.0)
    started = time.perf_counter()
    for user_id in users:
        t0 = time.perf_counter()
        with db.transaction():
            rows = [Checkin(*row) for row in db.rows(SELECT_USER, [user_id])]
            t1 = time.perf_counter()
            montages = compute_user(rows, as_of, params)
            t2 = time.perf_counter()
            db.execute(DELETE_ITEMS, [user_id])
            db.execute(DELETE_MONTAGES, [user_id])
            result.statements += 3
            for kind, interest, valid_until, items in montages:
                mid = montage_id(user_id, kind, interest)
                db.execute(
                    INSERT_MONTAGE,
                    [mid, user_id, kind, interest, len(items), generated_at, expires_at, valid_until, "baseline_loop"],
                )
                for position, checkin in enumerate(items):
                    widget_type, metadata = widget(checkin, normalized_tags(checkin.tags))
                    db.execute(insert_item, [mid, position, checkin.id, checkin.created_at, widget_type, metadata])
                result.items += len(items)
                result.statements += 1 + len(items)
            result.montages += len(montages)
        t3 = time.perf_counter()
        spent["query"] += t1 - t0
        spent["compute"] += t2 - t1
        spent["write"] += t3 - t2  # includes the commit
    result.seconds = time.perf_counter() - started
    result.stage_seconds = spent
    result.engine_montages, result.matching_montages = _agreement(db)
    return result


def _agreement(db: BenchDatabase) -> tuple[int, int]:
    """(engine montages of the sampled users, how many of them the loop reproduced exactly)."""
    engine, matching = db.rows(
        """SELECT count(*), count(b."id")
           FROM "montages" m
           LEFT JOIN "bl_montages" b
             ON b."id" = m."id" AND b."item_count" = m."item_count"
            AND b."valid_until" IS NOT DISTINCT FROM m."valid_until"
           WHERE m."user_id" IN (SELECT "user_id" FROM "bl_montages")"""
    )[0]
    return int(engine), int(matching)
